"""``studio attribute [MODEL] IMAGE ...``: attribution heat maps of photos, as raw ``.npy`` maps or ``.png`` overlays.

``--out maps.npy`` writes the raw float32 maps at each photo's resolution: ``H x W`` for one photo,
``N x H x W`` (in argument order) for several photos of one size. Photos of different sizes cannot share
one array, so each gets its own file, ``maps-0.npy``, ``maps-1.npy``, ... numbered by argument position;
``.png`` overlays are numbered the same way whenever there is more than one photo. Each method's options
(``--steps``, ``--samples``, ...) come from its signature; one that the method does not take is an error.
"""

from __future__ import annotations

import typing
from pathlib import Path

import numpy as np
from tqdm import tqdm

from studio.attribution import (IG_RULES, METHOD_FUNCTIONS, METHODS, SIGNED_METHODS, deletion_insertion, explain,
                                method_options, top_classes)
from studio.attribution.faithfulness import QUICK_STEPS, auc_summary
from studio.commands.common import add_weight_arguments, maybe_a_model, model_from_args, split_model
from studio.checks import check_number, output_file
from studio.display import colour_map, overlay
from studio.errors import StudioError
from studio.io import atomic_write, preview, read_input, write_image
from studio.models import MODEL_HELP, StudioModel
from studio.targets import class_count

#: Help of each method option; the options, their types and defaults come from the methods' signatures.
OPTION_HELP = {
    "steps": "Integrated Gradients steps",
    "rule": "Integrated Gradients rule: gausslegendre or riemann_middle",
    "baseline": "what replaces the image (Integrated Gradients' start, the perturbation methods' removed parts): "
                "black, blurred, a grey level in [0, 1] or an image file",
    "blur_sigma": "Gaussian blur of the blurred baseline, in pixels at the model's input size",
    "samples": "noisy copies (SmoothGrad), masks (RISE) or coalitions (LIME, KernelSHAP)",
    "noise": "SmoothGrad noise, as a fraction of the value range",
    "seed": "seed of the random noise, masks or coalitions",
    "window": "occlusion window side in pixels at the model's input size",
    "stride": "occlusion window stride in pixels",
    "cells": "RISE mask grid cells per side",
    "keep": "RISE probability that a cell shows the image",
    "segments": "SLIC superpixels wanted (LIME, KernelSHAP)",
    "kernel_width": "LIME kernel width on the cosine distance to the whole image",
    "ridge": "LIME ridge penalty",
    "layer": "Grad-CAM layer (default: the unit's own map, else the last convolutional block), or the attention "
             "layer (default: the last)",
    "head": "attention head (default: the mean over heads)",
    "query": "attention query token: cls, tokenN or a patch position row,column",
    "batch_size": "forward passes per chunk (memory)",
}


#: Options whose values are one of a few names.
OPTION_CHOICES = {"rule": IG_RULES}


def option_types() -> dict[str, type]:
    """Every option any method takes, with the type the command line parses it as: text when its annotation
    admits text (a baseline is a name, a number or a file, sorted out by ``_baseline``), else the number type."""
    types: dict[str, type] = {}
    for method in METHODS:
        hints = typing.get_type_hints(METHOD_FUNCTIONS[method])
        for name in method_options(method):
            members = typing.get_args(hints[name]) or (hints[name],)
            types[name] = next(kind for kind in (str, int, float) if kind in members)
    return types


def add_method_options(parser) -> None:
    """One flag per method option (``--samples``, ``--window``, ...), each naming the methods that take it."""
    group = parser.add_argument_group("method options (each applies only to the methods that take it)")
    for name, kind in option_types().items():
        users = [m for m in METHODS if name in method_options(m)]
        defaults = {method_options(m)[name] for m in users}
        default = f"; default {defaults.pop()}" if len(defaults) == 1 else ""
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None,
                           choices=OPTION_CHOICES.get(name), help=f"{OPTION_HELP[name]} ({', '.join(users)}{default})")


def given_options(args, methods: list[str]) -> dict[str, object]:
    """The method options given on the command line; one that none of ``methods`` takes is an error."""
    options = {name: getattr(args, name) for name in option_types() if getattr(args, name) is not None}
    taken = dict.fromkeys(name for method in methods for name in method_options(method))
    wrong = [f"--{name.replace('_', '-')}" for name in options if name not in taken]
    if wrong:
        raise StudioError(f"{', '.join(wrong)} does not apply to {', '.join(methods)}; the options there are "
                          f"{', '.join('--' + n.replace('_', '-') for n in taken)}.")
    return options


def options_per_method(options: dict[str, object], model: StudioModel, methods: list[str]) -> dict[str, dict]:
    """Each method's share of the given options, a baseline read as the model takes it."""
    if "baseline" in options:
        options = {**options, "baseline": _baseline(options["baseline"], model)}
    return {method: {n: v for n, v in options.items() if n in method_options(method)} for method in methods}


def register(subparsers) -> None:
    parser = subparsers.add_parser("attribute", help="heat maps of where a class or unit looks in photos",
                                   description="Attribute each photo. MODEL may be left out: " + MODEL_HELP)
    parser.add_argument("positionals", nargs="+", metavar="[MODEL] IMAGE",
                        help="photos (PNG, JPEG, TIFF), or TIFF stacks for N-channel and volume models")
    add_weight_arguments(parser)
    parser.add_argument("--method", choices=METHODS, default="gradcam")
    parser.add_argument("--target", default=None,
                        help='class index or label, or a unit such as blocks.5:17 (default: each photo\'s top-1 class)')
    parser.add_argument("--out", default=None, help="maps.npy (raw maps) or overlay.png (heat map over the photo)")
    add_method_options(parser)
    parser.add_argument("--no-faithfulness", dest="faithfulness", action="store_false",
                        help="skip each map's deletion and insertion AUC (34 extra forward passes a photo)")
    parser.add_argument("--colormap", default="viridis", help="overlay colormap (kornia names: viridis, plasma, ...)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    parser.set_defaults(run=run)


def _baseline(text: str, model: StudioModel):
    """A baseline named on the command line: black, blurred, a grey level, or an image file the model takes."""
    if text in ("black", "blurred"):
        return text
    try:
        return float(text)  # nan and inf are refused with the other options' limits
    except ValueError:
        return read_input(text, model.spec.channels, model.spec.dims)


def _save_npy(path: str, array: np.ndarray) -> None:
    """Save through a handle: ``np.save`` on a path appends ``.npy`` unless it already ends in it."""
    with open(path, "wb") as handle:
        np.save(handle, array.astype(np.float32))


def output_paths(out: Path, shapes: list[tuple[int, int]]) -> list[Path]:
    """Where each photo's map goes: ``[out]`` when one file holds them all, else ``out-<i>`` per photo."""
    if len(shapes) == 1 or (out.suffix.lower() == ".npy" and len(set(shapes)) == 1):
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(len(shapes))]


def run(args) -> int:
    args.model, paths = split_model(args.positionals)
    if not paths:
        raise StudioError(f"Name at least one photo after the model {args.model!r}.")
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".npy", ".png"):
        raise StudioError(f"Output {args.out!r} must end in .npy (raw maps) or .png (overlays).")
    if out is not None:
        output_file(out)
    check_number("--alpha", args.alpha, minimum=0, maximum=1)
    colour_map(args.colormap)
    options = given_options(args, [args.method])
    model = model_from_args(args)
    options = options_per_method(options, model, [args.method])[args.method]
    spec = model.spec
    try:
        first = read_input(paths[0], spec.channels, spec.dims)
    except StudioError as error:  # with more arguments after it, the first may have been meant as the model
        raise (maybe_a_model(error, paths[0], args.model) if len(paths) > 1 else error) from None
    images = [first, *(read_input(path, spec.channels, spec.dims) for path in paths[1:])]
    results = []
    for path, image in tqdm(list(zip(paths, images)), desc=args.method, unit="image"):
        result = explain(model, image.to(model.device), args.target, args.method, **options)
        results.append(result)
        lines = [f"{path}: {result.method} of {result.targets[0].description}" + (f" at {result.layer}" if result.layer else "")]
        if class_count(model) is not None:
            lines += [f"  {rank}. {label} ({index}) {prob:.3f}"
                      for rank, (index, label, prob) in enumerate(top_classes(model, image)[0], 1)]
        if args.faithfulness:
            scored = deletion_insertion(model, image.to(model.device), result.maps, result.targets, steps=QUICK_STEPS)
            lines.append("  " + auc_summary(scored.deletion_auc.item(), scored.insertion_auc.item()))
        if result.completeness_error is not None:
            lines.append(f"  completeness error {100 * result.completeness_error.item():.2f} % "
                         f"(f(x) - f(baseline) = {(result.scores - result.baseline_scores).item():.4f})")
        tqdm.write("\n".join(lines))
    if out is None:
        return 0
    maps = [r.maps[0].cpu() for r in results]
    written = output_paths(out, [tuple(m.shape) for m in maps])
    if out.suffix.lower() == ".npy":
        arrays = [np.stack([m.numpy() for m in maps])] if len(written) == 1 and len(maps) > 1 else [m.numpy() for m in maps]
        for path, array in zip(written, arrays):
            atomic_write(path, lambda tmp, a=array: _save_npy(tmp, a))
    else:
        signed = args.method in SIGNED_METHODS
        for path, image, heat in zip(written, images, maps):
            flat_heat = heat.amax(0) if heat.dim() == 3 else heat  # a volume's map by its projection, like the image
            write_image(path, overlay(preview(image), flat_heat, signed=signed, colormap=args.colormap, alpha=args.alpha))
    print(f"wrote {', '.join(map(str, written))}")
    return 0
