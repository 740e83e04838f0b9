"""``studio render [MODEL] TARGET ...``: render feature visualisations to PNG files."""

from __future__ import annotations

from pathlib import Path

import torch

from studio.checks import check_seed, output_file, output_folder
from studio.commands.common import (add_render_arguments, add_weight_arguments, maybe_a_model, model_from_args,
                                    render_settings_from_args, split_model)
from studio.engine import render
from studio.exemplars import check_index, index_info
from studio.exemplars.scores import compare_with_dataset, path_check
from studio.errors import StudioError
from studio.io import image_grid, is_rgb_image, preview, write_image, write_stack
from studio.models import MODEL_HELP
from studio.targets import layer_info, parse_targets, safe_name


def register(subparsers) -> None:
    parser = subparsers.add_parser("render", help="render feature visualisations of one or more targets",
                                   description="Render each target to a PNG. MODEL may be left out: " + MODEL_HELP)
    parser.add_argument("positionals", nargs="+", metavar="[MODEL] TARGET",
                        help='targets: blocks.4:12, blocks.4:0-7, blocks.4:12@7,7, logits:"Egyptian cat"')
    add_weight_arguments(parser)
    add_render_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first image (image i gets seed + i)")
    parser.add_argument("--out", default="renders",
                        help="output folder, or an image path (.png, .jpg, .jpeg, .webp) for one target or the --sheet")
    parser.add_argument("--sheet", action="store_true", help="write one sheet with all targets instead of one PNG each")
    parser.add_argument("--transparency", action="store_true",
                        help="write each render's transparency map (MACO: where the objective's gradient "
                             "accumulated) as the PNG's alpha channel")
    parser.add_argument("--examples", default=None, metavar="INDEX.sqlite",
                        help="a dataset-example index (studio index): report each render as a multiple of its "
                             "unit's dataset maximum, and check its path through the layers below")
    parser.set_defaults(run=run)


#: Suffixes that make ``--out`` one file (a single target's image, or the --sheet); anything else is a folder,
#: except the file types below, which would be a folder with a file's name.
FILE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
NOT_FOLDERS = (".tif", ".tiff", ".gif", ".bmp", ".npy", ".json", ".html")


def run(args) -> int:
    args.model, targets = split_model(args.positionals)
    if not targets:
        raise StudioError(f"Name at least one target after the model {args.model!r}, e.g. blocks.4:12.")
    settings = render_settings_from_args(args)
    out = Path(args.out)
    one_file = out.suffix.lower() in FILE_SUFFIXES
    if out.suffix.lower() in NOT_FOLDERS:
        raise StudioError(f"--out {args.out!r}: renders are written as {', '.join(FILE_SUFFIXES)} files (TIFF stacks "
                          "of non-RGB images go beside them); give one of those, or a folder.")
    output_file(out) if one_file else output_folder(out)
    check_seed(args.seed, "--seed")
    if args.examples is not None:
        index_info(args.examples)  # not an index: one sentence before any work
    model = model_from_args(args)
    if args.examples is not None:
        check_index(args.examples, model)  # an index of another model or input, before any work
    parsed = []
    for index, text in enumerate(targets):
        try:
            parsed += parse_targets(text, model)
        except StudioError as error:  # only the first positional may have been meant as a model
            raise (maybe_a_model(error, text, args.model) if index == 0 else error) from None
    if args.transparency and (args.sheet or out.suffix.lower() in (".jpg", ".jpeg")):
        raise StudioError("--transparency writes one PNG (or WebP) per render with its alpha channel; leave out "
                          "--sheet and give a folder or a .png path.")
    if one_file and not args.sheet and len(parsed) > 1:
        raise StudioError(f"--out {args.out!r} is one file but there are {len(parsed)} targets; give a "
                          "folder, or add --sheet for one sheet.")
    names = [f"{safe_name(t.layer_name)}_{t.file_stem(layer_info(model, t.layer_key).channels)}" for t in parsed]
    repeated = {name for name in names if names.count(name) > 1}
    # A unit named twice renders twice (image i has seed + i): each copy keeps its own file.
    names = [f"{name}_seed{args.seed + i}" if name in repeated else name for i, name in enumerate(names)]
    result = render(model, parsed, settings, seed=args.seed, progress=True)
    if args.sheet:
        previews = torch.stack([preview(image) for image in result.images])
        written = [write_image(out if one_file else out / "sheet.png", image_grid(previews))]
    else:
        alphas = result.alpha if args.transparency else [None] * len(result.images)
        paths = [out] if one_file else [out / f"{name}.png" for name in names]
        written = [write_image(path, image, alpha) for path, image, alpha in zip(paths, result.images, alphas)]
    if not args.sheet and not is_rgb_image(result.images[0]):  # the PNGs are previews: keep every channel and slice
        written += [write_stack(path.with_suffix(".tif"), image) for path, image in zip(written, result.images)]
    print(f"{'target':32s} clean activation" + ("   dataset / path check" if args.examples else ""))
    for target, value, image in zip(result.targets, result.clean_values.tolist(), result.images):
        print(f"{target.description:32s} {value:16.3f}" + (f"   {_honest(model, args.examples, target, value, image)}"
                                                           if args.examples else ""))
    print(f"wrote {', '.join(map(str, written))} in {result.seconds:.1f} s on {result.settings['device']}")
    return 0


def _honest(model, index: str, target, value: float, image) -> str:
    """The render beside its unit's dataset: a multiple of the dataset maximum, and the path check."""
    try:
        comparison = compare_with_dataset(index, target, value, model)
        return f"{comparison.describe()}, {path_check(model, index, target, image).describe()}"
    except StudioError as error:  # a unit the index does not hold: say so in its row, keep the others
        return f"({error})"
