"""Make docs/canvas.png: one EfficientNet-Lite0 unit rendered as the usual 128 px image and as a 1280 px canvas
optimised through 6 random crops a step, the same steps, each shown at 640 px; and the canvas's top-left
quarter at full resolution, where its detail is.

    .venv/bin/python docs/make_canvas_figure.py --steps 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import studio
from studio.io import to_uint8

OUT = Path(__file__).resolve().parent / "canvas.png"
PANEL = 640


def labelled(picture: np.ndarray, text: str) -> Image.Image:
    """A panel of ``PANEL`` px with its caption under it."""
    image = Image.fromarray(picture)
    image = image.resize((PANEL, PANEL), Image.Resampling.NEAREST if image.width < PANEL else Image.Resampling.LANCZOS)
    framed = Image.new("RGB", (PANEL, PANEL + 40), "white")
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((PANEL // 2, PANEL + 20), text, fill="black", anchor="mm",
                                font=ImageFont.load_default(size=22))
    return framed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="blocks.4:3")
    parser.add_argument("--steps", type=int, default=256)
    args = parser.parse_args()
    model = studio.load_model(device="cpu")
    small = studio.render(model, args.target, steps=args.steps, progress=True)
    large = studio.render(model, args.target, steps=args.steps, canvas=1280, crops=6, progress=True)
    canvas = to_uint8(large.images[0])
    panels = [labelled(to_uint8(small.images[0]), f"128 px image ({args.steps} steps)"),
              labelled(canvas, f"1280 px canvas, 6 crops a step ({args.steps} steps)"),
              labelled(canvas[:PANEL, :PANEL], "the canvas's top-left 640 px, full resolution")]
    figure = Image.new("RGB", (3 * PANEL + 4 * 12, PANEL + 40 + 24), "white")
    for index, panel in enumerate(panels):
        figure.paste(panel, (12 + index * (PANEL + 12), 12))
    figure.save(OUT)
    print(f"{OUT}: {args.target}, clean value {small.clean_values[0]:.3g} (128 px) and "
          f"{large.clean_values[0]:.3g} (canvas, mean over its grid of boxes)")


if __name__ == "__main__":
    main()
