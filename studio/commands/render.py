"""``studio render MODEL TARGET ...``: render feature visualisations to PNG files."""

from __future__ import annotations

import re
from pathlib import Path

from studio.commands.common import add_model_arguments, model_from_args
from studio.engine import PRECISIONS, render
from studio.io import image_grid, write_image
from studio.param import PARAM_KINDS


def register(subparsers) -> None:
    parser = subparsers.add_parser("render", help="render feature visualisations of one or more targets")
    add_model_arguments(parser)
    parser.add_argument("targets", nargs="+", metavar="TARGET", help='blocks.4:12, blocks.4:12@7,7, logits:"Egyptian cat"')
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--size", type=int, default=128, help="parameterisation size in pixels")
    parser.add_argument("--param", choices=PARAM_KINDS, default="fourier", help="fourier (default), pixel, maco, cppn (use --lr 0.005)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--transforms", choices=["standard", "none"], default="standard")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="bfloat16: faster model forward on GPUs")
    parser.add_argument("--out", default="renders", help="output folder (or a .png path with --sheet)")
    parser.add_argument("--sheet", action="store_true", help="write one sheet with all targets instead of one PNG each")
    parser.set_defaults(run=run)


def file_stem(target: str) -> str:
    """A file-name-safe version of a target string."""
    return re.sub(r"[^A-Za-z0-9._@,-]+", "_", target).strip("_") or "target"


def run(args) -> int:
    model = model_from_args(args)
    result = render(model, args.targets, steps=args.steps, size=args.size, param=args.param, lr=args.lr,
                    seed=args.seed, transforms=args.transforms, precision=args.precision, progress=True)
    out = Path(args.out)
    if args.sheet:
        sheet_path = out if out.suffix == ".png" else out / "sheet.png"
        written = [write_image(sheet_path, image_grid(result.images))]
    else:
        written = [write_image(out / f"{file_stem(t)}.png", img) for t, img in zip(args.targets, result.images)]
    print(f"{'target':32s} clean activation")
    for target, value in zip(args.targets, result.clean_activations.tolist()):
        print(f"{target:32s} {value:10.3f}")
    print(f"wrote {', '.join(map(str, written))} in {result.seconds:.1f} s on {result.settings['device']}")
    return 0
