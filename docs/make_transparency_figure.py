"""Make docs/transparency.png: EfficientNet-Lite0 renders of a neuron and of a whole channel, each beside its
MACO transparency map (the objective's gradient magnitude per pixel, accumulated over the steps) and the
render with that map as its alpha, over a checkerboard.

    .venv/bin/python docs/make_transparency_figure.py --steps 256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import studio
from studio.io import preview, write_panels

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
    rows = []
    for target in targets:
        result = studio.render(model, target, steps=args.steps, progress=True)
        image, alpha = preview(result.images[0]), result.alpha[0]
        behind = checkerboard(image.shape[-1])
        rows.append([(image, target), (alpha.expand(3, -1, -1), "alpha"),
                     (alpha * image + (1 - alpha) * behind, "render with its alpha")])
    write_panels(OUT, rows)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
