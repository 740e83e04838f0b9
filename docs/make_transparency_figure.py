"""Make docs/transparency.png: EfficientNet-Lite0 renders of a neuron and of a whole channel, each beside its
MACO transparency map (the objective's gradient magnitude per pixel, accumulated over the steps) and the
render with that map as its alpha, over a checkerboard.

    .venv/bin/python docs/make_transparency_figure.py --steps 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.figure import Figure

import studio
from studio.io import preview, write_figure

OUT = Path(__file__).resolve().parent / "transparency.png"


def checkerboard(size: int, cell: int = 8) -> torch.Tensor:
    """A light grey checkerboard ``[3, size, size]``, what image editors show behind transparent pixels."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (0.8 + 0.15 * (((y // cell) + (x // cell)) % 2)).float().expand(3, -1, -1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="blocks.4:3@3,3;blocks.3:10", help="targets separated by ;")
    parser.add_argument("--steps", type=int, default=256)
    args = parser.parse_args()
    model = studio.load_model(device="cpu")
    targets = args.targets.split(";")
    figure = Figure(figsize=(7.5, 2.6 * len(targets)), layout="constrained")
    panels = figure.subplots(len(targets), 3, squeeze=False)
    for row, target in zip(panels, targets):
        result = studio.render(model, target, steps=args.steps, progress=True)
        image, alpha = preview(result.images[0]), result.alpha[0]
        behind = checkerboard(image.shape[-1])
        for axis, picture, title in ((row[0], image, f"{target}"), (row[1], alpha.expand(3, -1, -1), "alpha"),
                                     (row[2], alpha * image + (1 - alpha) * behind, "render with its alpha")):
            axis.imshow(picture.permute(1, 2, 0).clamp(0, 1).numpy())
            axis.set_title(title, fontsize=9)
            axis.set_axis_off()
    write_figure(OUT, figure)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
