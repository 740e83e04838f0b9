"""Does the path check (``studio.exemplars.scores``) tell robust renders from adversarial-looking ones?

Builds a folder of natural crops from the photos scikit-image ships (random positions and scales), indexes one
layer of EfficientNet-Lite0, renders the same channels twice -- robust (Fourier, decorrelated colour, Lucid's
transforms) and adversarial-looking (pixels, no decorrelation, no transforms) -- and prints each render's
multiple of its dataset maximum, its path score, the top examples' natural range, and the flag rate.

    python benchmarks/path_check.py --channels 12 --steps 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


import studio
from studio.exemplars import build_index
from studio.exemplars.scores import compare_with_dataset, path_check

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
from skimage_photos import PHOTOS, natural_crops  # noqa: E402  (the README's photo folder, cropped here)

CONFIGS = {"robust": {"param": "fourier", "decorrelate": True, "transforms": "standard"},
           "adversarial": {"param": "pixel", "decorrelate": False, "transforms": "none"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layer", default="blocks.5")
    parser.add_argument("--channels", type=int, default=12)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--per-photo", type=int, default=16)
    args = parser.parse_args()
    model = studio.load_model(device="cpu")
    with tempfile.TemporaryDirectory() as work:
        folder, index = Path(work) / "crops", Path(work) / "index.sqlite"
        folder.mkdir()
        images = natural_crops(folder, args.per_photo)
        start = time.perf_counter()
        build_index(model, folder, args.layer, index, workers=0, progress=False)
        print(f"indexed {images} natural crops ({len(PHOTOS)} photos) at {args.layer} in "
              f"{time.perf_counter() - start:.0f} s")
        targets = [f"{args.layer}:{c}" for c in range(args.channels)]
        for name, config in CONFIGS.items():
            result = studio.render(model, targets, steps=args.steps, size=args.size, **config)
            scores, flags, multiples = [], 0, []
            for target, value, image in zip(result.targets, result.clean_values.tolist(), result.images):
                comparison = compare_with_dataset(index, target, value, model)
                check = path_check(model, index, target, image)
                scores.append(check.score)
                flags += check.flagged
                multiples.append(comparison.multiple or float("nan"))
                print(f"  {name:11s} {target.name:12s} {comparison.describe():32s} {check.describe()}")
            print(f"{name}: path score median {statistics.median(scores):+.3f}, flagged {flags}/{len(scores)}, "
                  f"median multiple of dataset max {statistics.median(multiples):.2f}")


if __name__ == "__main__":
    main()
