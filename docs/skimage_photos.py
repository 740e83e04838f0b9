"""Write the photos scikit-image ships (no download) into a folder as PNGs: a small natural-image folder for
`studio index` and `studio concepts`, as the README shows; or random crops of them, for a larger one.

    python docs/skimage_photos.py out/photos
    python docs/skimage_photos.py out/crops --crops 16      # 16 random crops of each photo (288 images)
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

#: Photos that ship inside scikit-image (colour, and grey ones written as RGB).
PHOTOS = ("astronaut", "chelsea", "coffee", "colorwheel", "hubble_deep_field", "immunohistochemistry", "rocket",
          "retina", "brick", "camera", "cell", "clock", "coins", "grass", "gravel", "moon", "page", "text")


def _photos():
    """``(name, RGB uint8 array)`` of each photo (grey ones as three equal channels)."""
    import skimage.data

    for name in PHOTOS:
        photo = np.asarray(getattr(skimage.data, name)())
        yield name, np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]


def write_photos(folder: Path) -> list[Path]:
    """Each photo as ``folder/<name>.png`` (RGB uint8)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, photo in _photos():
        iio.imwrite(folder / f"{name}.png", photo)
        written.append(folder / f"{name}.png")
    return written


def natural_crops(folder: Path, per_photo: int, side: int = 160, seed: int = 0) -> int:
    """``per_photo`` random square crops (a third of the shorter side up to all of it) of each photo, as PNGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    count = 0
    for name, photo in _photos():
        h, w = photo.shape[:2]
        for i in range(per_photo):
            crop = int(rng.uniform(0.33, 1.0) * min(h, w))
            top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
            tile = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side), Image.BICUBIC)
            iio.imwrite(folder / f"{name}_{i:02d}.png", np.asarray(tile))
            count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[2] == "--crops":
        print(f"wrote {natural_crops(Path(sys.argv[1]), int(sys.argv[3]), side=224)} crops to {sys.argv[1]}")
    elif len(sys.argv) == 2:
        print(f"wrote {len(write_photos(Path(sys.argv[1])))} photos to {sys.argv[1]}")
    else:
        sys.exit("usage: python docs/skimage_photos.py FOLDER [--crops PER_PHOTO]")
