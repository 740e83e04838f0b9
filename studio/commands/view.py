"""``studio view [MODEL]``: the napari studio, docked and filled in; ``--screenshot`` makes a figure and exits."""

from __future__ import annotations

from pathlib import Path

from studio.commands.common import add_model_arguments, add_render_arguments, model_from_args, render_settings_from_args
from studio.errors import StudioError
from studio.io import read_input
from studio.targets import parse_target
from studio.viewer.streaming import DEFAULT_LAYER, METHODS, VIEWER_FIELDS

INSTALL_HINT = "studio view needs napari and Qt: install the viewer extra with pip install 'feature-studio[viewer]'."


def register(subparsers) -> None:
    parser = subparsers.add_parser("view", help="open the napari studio (needs the viewer extra)",
                                   description="Open napari with the Feature Studio widget docked and filled in. "
                                               "With --screenshot, render, attribute each --image, save the "
                                               "window as PNG (in napari's 3D view for a volume model) and exit.")
    add_model_arguments(parser, optional=True)
    parser.add_argument("--target", default=None,
                        help='unit to fill in: blocks.4:12, blocks.4:12@7,7, logits:"tabby" '
                             f"(default: channel 0 of {DEFAULT_LAYER}, or of the middle layer without one)")
    parser.add_argument("--image", nargs="+", action="extend", default=[], metavar="PATH",
                        help="photos to open as layers (and attribute, with --screenshot); TIFF stacks for "
                             "volume and N-channel models")
    add_render_arguments(parser)
    viewer = parser.add_argument_group("viewer fields")
    for spec in VIEWER_FIELDS:
        viewer.add_argument(f"--{spec.name}", type=spec.kind, default=spec.default, metavar=spec.name.upper(),
                            help=f"{spec.help} (default: {spec.default})")
    parser.add_argument("--method", default=METHODS[0], choices=METHODS,
                        help=f"attribution method (default: {METHODS[0]})")
    parser.add_argument("--screenshot", metavar="OUT.png", default=None,
                        help="render, attribute, save the whole window here (and OUT.json) and exit")
    parser.add_argument("--window-size", default="1600x1000", metavar="WxH", help="window size (default: 1600x1000)")
    parser.set_defaults(run=run)


def run(args) -> int:
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
    except ImportError:
        raise StudioError(INSTALL_HINT) from None

    if args.screenshot is not None and not args.screenshot.lower().endswith(".png"):
        raise StudioError(f"--screenshot writes a PNG; give a path ending in .png, not {args.screenshot!r}.")
    try:
        width, height = (int(v) for v in args.window_size.lower().split("x"))
    except ValueError:
        raise StudioError(f"--window-size takes WIDTHxHEIGHT such as 1600x1000, not {args.window_size!r}.") from None
    settings = render_settings_from_args(args)  # bad values fail here, before the model loads or a window opens
    fields = {spec.name: spec.check(getattr(args, spec.name)) for spec in VIEWER_FIELDS}
    model = model_from_args(args)
    if args.target is not None:
        parse_target(args.target, model)  # a bad target fails here, before any window opens
    spec = model.spec
    images = [(Path(path).stem, read_input(path, spec.channels, spec.dims))
              for path in args.image]
    from studio.viewer.app import open_studio

    return open_studio(model, target=args.target, images=images, settings=settings, fields=fields,
                       screenshot=args.screenshot, method=args.method, window_size=(width, height))
