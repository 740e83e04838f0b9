"""``studio attribute MODEL IMAGE ...``: attribution heat maps of photos, as raw ``.npy`` maps or ``.png`` overlays.

``--out maps.npy`` writes the raw float32 maps at each photo's resolution: ``H x W`` for one photo,
``N x H x W`` (in argument order) for several photos of one size. Photos of different sizes cannot share
one array, so each gets its own file, ``maps-0.npy``, ``maps-1.npy``, ... numbered by argument position;
``.png`` overlays are numbered the same way whenever there is more than one photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from studio.attribution import DEFAULT_STEPS, METHODS, SIGNED_METHODS, explain, num_classes, overlay, top_classes
from studio.commands.common import add_model_arguments, model_from_args
from studio.errors import StudioError
from studio.io import atomic_write, read_image, write_image


def register(subparsers) -> None:
    parser = subparsers.add_parser("attribute", help="heat maps of where a class or unit looks in photos")
    add_model_arguments(parser)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="photos (PNG, JPEG, TIFF)")
    parser.add_argument("--method", choices=METHODS, default="gradcam")
    parser.add_argument("--target", default=None,
                        help='class index or label, or a unit such as blocks.5:17 (default: each photo\'s top-1 class)')
    parser.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last convolutional block)")
    parser.add_argument("--out", default=None, help="maps.npy (raw maps) or overlay.png (heat map over the photo)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="Integrated Gradients steps")
    parser.add_argument("--baseline", default="black", help="Integrated Gradients baseline: black, blurred, a grey "
                                                            "level in [0, 1] or an image file")
    parser.add_argument("--samples", type=int, default=25, help="SmoothGrad samples")
    parser.add_argument("--noise", type=float, default=0.15, help="SmoothGrad noise, as a fraction of the value range")
    parser.add_argument("--batch-size", type=int, default=16, help="forward passes per chunk (memory)")
    parser.add_argument("--colormap", default="viridis", help="overlay colormap (kornia names: viridis, plasma, ...)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    parser.set_defaults(run=run)


def _baseline(text: str):
    if text in ("black", "blurred"):
        return text
    try:
        return float(text)
    except ValueError:
        return read_image(text)


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
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".npy", ".png"):
        raise StudioError(f"Output {args.out!r} must end in .npy (raw maps) or .png (overlays).")
    images = [read_image(path) for path in args.images]
    baseline = _baseline(args.baseline)
    model = model_from_args(args)
    options = dict(steps=args.steps, baseline=baseline, samples=args.samples, noise=args.noise,
                   batch_size=args.batch_size)
    results = []
    slow = args.method in ("integrated_gradients", "smoothgrad")
    for path, image in tqdm(list(zip(args.images, images)), desc=args.method, unit="image",
                            disable=len(images) < 2 and not slow):
        result = explain(model, image.to(model.device), args.target, args.method, args.layer, **options)
        results.append(result)
        lines = [f"{path}: {result.method} of {result.targets[0]}" + (f" at {result.layer}" if result.layer else "")]
        if num_classes(model) is not None:
            lines += [f"  {rank}. {label} ({index}) {prob:.3f}"
                      for rank, (index, label, prob) in enumerate(top_classes(model, image.to(model.device))[0], 1)]
        if result.completeness_error is not None:
            lines.append(f"  completeness error {100 * result.completeness_error.item():.2f} % "
                         f"(f(x) - f(baseline) = {(result.scores - result.baseline_scores).item():.4f})")
        tqdm.write("\n".join(lines))
    if out is None:
        return 0
    maps = [r.maps[0].cpu() for r in results]
    paths = output_paths(out, [tuple(m.shape) for m in maps])
    if out.suffix.lower() == ".npy":
        arrays = [np.stack([m.numpy() for m in maps])] if len(paths) == 1 and len(maps) > 1 else [m.numpy() for m in maps]
        for path, array in zip(paths, arrays):
            atomic_write(path, lambda tmp, a=array: _save_npy(tmp, a))
    else:
        signed = args.method in SIGNED_METHODS
        for path, image, heat in zip(paths, images, maps):
            write_image(path, overlay(image, heat, signed=signed, colormap=args.colormap, alpha=args.alpha))
    print(f"wrote {', '.join(map(str, paths))}")
    return 0
