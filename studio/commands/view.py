"""``studio view [MODEL]``: the napari studio, docked and filled in; ``--screenshot`` makes a figure and exits."""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from studio.checks import output_file
from studio.commands.common import add_model_arguments, add_render_arguments, model_from_args, render_settings_from_args
from studio.errors import StudioError
from studio.io import read_input
from studio.targets import parse_target
from studio.exemplars import check_index
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
    parser.add_argument("--examples", default=None, metavar="INDEX.sqlite",
                        help="a dataset-example index (studio index): the rendered unit's top images beside the "
                             "render, and the render's value as a multiple of the dataset maximum with a path check")
    parser.add_argument("--screenshot", metavar="OUT.png", default=None,
                        help="render, attribute, save the whole window here (and OUT.json) and exit")
    parser.add_argument("--window-size", default="1600x1000", metavar="WxH", help="window size (default: 1600x1000)")
    parser.set_defaults(run=run)


def display_problem(environ: Mapping[str, str] | None = None, platform: str = sys.platform) -> str | None:
    """Why Qt could not open a window here (it would abort the process), or None: on Linux it needs a
    Wayland or X display, and a local X display needs its server's socket."""
    environ = os.environ if environ is None else environ
    headless = environ.get("QT_QPA_PLATFORM", "").split(":")[0] not in ("", "xcb", "wayland")
    if not platform.startswith("linux") or environ.get("WAYLAND_DISPLAY") or headless:
        return None  # Qt's own platform (offscreen, eglfs, vnc) needs no display server
    display = environ.get("DISPLAY", "")
    if not display:
        return "no display is set (DISPLAY is empty)"
    local = re.fullmatch(r"(?:unix)?:(\d+)(?:\.\d+)?", display)
    if local and not _x_server_answers(int(local.group(1))):
        return f"no X server answers on DISPLAY={display}"
    return None


def _x_server_answers(number: int) -> bool:
    """Whether a local X server listens for display ``number``: its socket file, or Linux's abstract socket
    (containers and private /tmp folders have only that)."""
    if Path(f"/tmp/.X11-unix/X{number}").exists():
        return True
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            probe.connect(f"\0/tmp/.X11-unix/X{number}")
        return True
    except OSError:
        return False


def run(args) -> int:
    # Cheapest first: the arguments, the display, the viewer's packages, then the model; no window before all.
    if args.screenshot is not None:
        if not args.screenshot.lower().endswith(".png"):
            raise StudioError(f"--screenshot writes a PNG; give a path ending in .png, not {args.screenshot!r}.")
        output_file(args.screenshot, "--screenshot")
    try:
        width, height = (int(v) for v in args.window_size.lower().split("x"))
    except ValueError:
        width = height = 0
    if min(width, height) < 200:
        raise StudioError(f"--window-size takes WIDTHxHEIGHT of at least 200x200 such as 1600x1000, not "
                          f"{args.window_size!r}.")
    settings = render_settings_from_args(args)
    fields = {spec.name: spec.check(getattr(args, spec.name)) for spec in VIEWER_FIELDS}
    if args.examples is not None:
        check_index(args.examples, None)  # not an index: one sentence before any model or window
    problem = display_problem()
    if problem is not None:
        raise StudioError(f"studio view opens a window, but {problem}; run it on a desktop, over ssh -X, or headless "
                          "under xvfb-run -a (with --screenshot OUT.png for a figure), or use studio render.")
    try:
        import napari  # noqa: F401
        import qtpy  # noqa: F401
    except ImportError:
        raise StudioError(INSTALL_HINT) from None
    model = model_from_args(args)
    if args.target is not None:
        parse_target(args.target, model)  # a bad target fails here, before any window opens
    if args.examples is not None:
        check_index(args.examples, model)  # an index of another model, too
    spec = model.spec
    images = [(Path(path).stem, read_input(path, spec.channels, spec.dims))
              for path in args.image]
    from studio.viewer.app import open_studio

    return open_studio(model, target=args.target, images=images, settings=settings, fields=fields,
                       screenshot=args.screenshot, method=args.method, examples=args.examples,
                       window_size=(width, height))
