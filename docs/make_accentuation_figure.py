"""Make docs/accentuation.png: chelsea, EfficientNet-Lite0's blocks.4:3 accentuated in it (the render starts
from the photo and stays close to it in blocks.1's features), and a free render of the same unit, with the
unit's value and the distances to the photo under each.

    .venv/bin/python docs/make_accentuation_figure.py --steps 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import skimage.data

import studio
from studio.accentuation import feature_distance
from studio.io import fit, from_uint8, write_panels
from studio.models import resize_to_input
from studio.objectives import IMAGE

OUT = Path(__file__).resolve().parent / "accentuation.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="blocks.4:3")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    model = studio.load_model(device="cpu")
    photo = from_uint8(skimage.data.chelsea())
    found = studio.accentuate(model, photo, args.target, steps=args.steps, size=args.size, progress=True)
    free = studio.render(model, args.target, steps=args.steps, size=args.size, progress=True)
    start = fit(photo, (args.size, args.size))
    penalty = feature_distance(model, found.layer, resize_to_input(start[None], model.spec))
    free_pixels = (free.images[0] - start).pow(2).mean().sqrt().item()
    free_features = penalty({IMAGE: free.images}).item()
    panels = ((start, f"photo: {args.target} = {found.photo_value:.2f}"),
              (found.result.images[0], f"accentuated: {found.value:.1f} ({found.gain:.0f}x)\n"
                                       f"{found.pixel_distance:.3f} px RMS, {found.feature_distance:.2f} in {found.layer}"),
              (free.images[0], f"free render: {free.clean_values[0]:.1f}\n"
                               f"{free_pixels:.3f} px RMS, {free_features:.2f} in {found.layer}"))
    write_panels(OUT, [list(panels)], side=2.6)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
