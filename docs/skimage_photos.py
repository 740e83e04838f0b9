"""Write the photos scikit-image ships (no download) into a folder as PNGs: a small natural-image folder for
`studio index`, as the README shows.

    python docs/skimage_photos.py out/photos
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

#: Photos that ship inside scikit-image (colour, and grey ones written as RGB).
PHOTOS = ("astronaut", "chelsea", "coffee", "colorwheel", "hubble_deep_field", "immunohistochemistry", "rocket",
          "retina", "brick", "camera", "cell", "clock", "coins", "grass", "gravel", "moon", "page", "text")


def write_photos(folder: Path) -> list[Path]:
    """Each photo as ``folder/<name>.png`` (RGB uint8)."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in PHOTOS:
        photo = np.asarray(getattr(skimage.data, name)())
        photo = np.stack([photo] * 3, -1) if photo.ndim == 2 else photo[..., :3]
        iio.imwrite(folder / f"{name}.png", photo)
        written.append(folder / f"{name}.png")
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/skimage_photos.py FOLDER")
    print(f"wrote {len(write_photos(Path(sys.argv[1])))} photos to {sys.argv[1]}")
