"""Images at the edges: reading photos, converting tensors, writing files atomically with imageio."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from studio.errors import StudioError

_UMASK = os.umask(0)
os.umask(_UMASK)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` float in ``[0, 1]`` to ``H x W x 3`` uint8."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 (or grey / RGBA) to ``[3, H, W]`` float in ``[0, 1]``."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    array = array[..., :3]
    scale = 255.0 if array.dtype == np.uint8 else (65535.0 if array.dtype == np.uint16 else 1.0)
    return torch.from_numpy(array.astype(np.float32) / scale).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read a photo as ``[3, H, W]`` float in ``[0, 1]``; an unreadable file is a one-sentence error."""
    try:
        return from_uint8(iio.imread(path))
    except FileNotFoundError:
        raise StudioError(f"Image {str(path)!r} does not exist.") from None
    except Exception as error:  # imageio raises many types for undecodable files
        raise StudioError(f"Cannot read image {str(path)!r} ({type(error).__name__}); give a PNG, JPEG or TIFF file.") from None


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the result the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray) -> Path:
    """Write an image (``[3, H, W]`` float tensor or uint8 array) atomically; format from the suffix."""
    array = to_uint8(image) if isinstance(image, torch.Tensor) else image
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, array, extension=Path(path).suffix))


def write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON atomically."""
    def write(tmp):
        Path(tmp).write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return atomic_write(path, write)


def image_grid(images: torch.Tensor, columns: int | None = None, gap: int = 2) -> torch.Tensor:
    """Tile ``[B, 3, H, W]`` images into one ``[3, H', W']`` sheet with white gaps."""
    b, c, h, w = images.shape
    columns = columns or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / columns))
    sheet = torch.ones(c, rows * (h + gap) - gap, columns * (w + gap) - gap)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        sheet[:, r * (h + gap):r * (h + gap) + h, col * (w + gap):col * (w + gap) + w] = img.cpu()
    return sheet
