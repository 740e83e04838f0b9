"""``studio view [MODEL]``: the napari studio, docked and filled in; ``--screenshot`` makes a figure and exits."""

from __future__ import annotations

from pathlib import Path

from studio.attribution import METHODS
from studio.commands.common import add_model_arguments, model_from_args
from studio.errors import StudioError

INSTALL_HINT = "studio view needs napari and Qt: install the viewer extra with pip install 'feature-studio[viewer]'."


def register(subparsers) -> None:
    parser = subparsers.add_parser("view", help="open the napari studio (needs the viewer extra)",
                                   description="Open napari with the Feature Studio widget docked and filled in. "
                                               "With --screenshot, render, attribute each --image, save the "
                                               "window as PNG and exit.")
    add_model_arguments(parser, optional=True)
    parser.add_argument("--target", default=None, help='unit to fill in: blocks.4:12, blocks.4:12@7,7, logits:"tabby"')
    parser.add_argument("--image", nargs="+", action="extend", default=[], metavar="PATH",
                        help="photos to open as layers (and attribute, with --screenshot)")
    parser.add_argument("--steps", type=int, default=None, help="optimisation steps (widget default 256)")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (widget default 128)")
    parser.add_argument("--count", type=int, default=None, help="channels at once, rendered as a stack")
    parser.add_argument("--param", choices=["fourier", "pixel"], default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--method", default="gradcam", choices=METHODS, help="attribution method (default gradcam)")
    parser.add_argument("--screenshot", metavar="OUT.png", default=None,
                        help="render, attribute, save the whole window here (and OUT.json) and exit")
    parser.add_argument("--window-size", default="1600x1000", metavar="WxH", help="window size for --screenshot")
    parser.set_defaults(run=run)


def run(args) -> int:
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
    except ImportError:
        raise StudioError(INSTALL_HINT) from None
    from studio.io import read_image
    from studio.targets import parse_target

    if args.screenshot is not None and not args.screenshot.lower().endswith(".png"):
        raise StudioError(f"--screenshot writes a PNG; give a path ending in .png, not {args.screenshot!r}.")
    try:
        width, height = (int(v) for v in args.window_size.lower().split("x"))
    except ValueError:
        raise StudioError(f"--window-size takes WIDTHxHEIGHT such as 1600x1000, not {args.window_size!r}.") from None
    images = [(Path(path).stem, read_image(path)) for path in args.image]
    model = model_from_args(args)
    if args.target is not None:
        parse_target(args.target, model)  # a bad target fails here, before any window opens
    fields = {"steps": args.steps, "size": args.size, "count": args.count, "param": args.param, "seed": args.seed}
    from studio.viewer.streaming import FIELD_RANGES

    for name, (low, high) in FIELD_RANGES.items():
        if fields[name] is not None and not low <= fields[name] <= high:
            raise StudioError(f"--{name} must be between {low} and {high}, not {fields[name]}.")
    from studio.viewer.app import open_studio

    return open_studio(model, target=args.target, images=images, fields=fields, screenshot=args.screenshot,
                       method=args.method, window_size=(width, height))
