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


def preview(image: torch.Tensor) -> torch.Tensor:
    """An RGB picture ``[3, H, W]`` of any image ``[C, *size]`` in ``[0, 1]``: a volume by its maximum-intensity
    projection along depth, one channel as grey, N channels as a composite of evenly spaced hues (additive,
    clipped), RGB as it is."""
    image = image.detach().float()
    if image.dim() == 4:
        image = image.amax(1)
    channels = image.shape[0]
    if channels == 3:
        return image
    if channels == 1:
        return image.expand(3, -1, -1)
    hues = torch.arange(channels, dtype=torch.float32) / channels
    colours = (torch.stack([hues, hues + 2 / 3, hues + 1 / 3], 1) * 2 * np.pi).cos().mul(0.5).add(0.5)  # [C, 3]
    return torch.einsum("ck,chw->khw", colours.to(image.device) * (3 / channels), image).clamp(0, 1)


def is_rgb_image(image: torch.Tensor) -> bool:
    """Whether a ``[C, *size]`` image is a plain RGB picture (else it is shown through :func:`preview`)."""
    return image.dim() == 3 and image.shape[0] == 3


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``[C, *size]`` float in ``[0, 1]`` to ``H x W x 3`` uint8 (through :func:`preview` unless RGB)."""
    return (preview(image).clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def write_stack(path: str | os.PathLike, image: torch.Tensor) -> Path:
    """Write an image's full data (``[C, *size]`` float32: every channel, every slice) as a TIFF stack,
    atomically: what microscopy and medical tools read, beside the PNG preview."""
    array = image.detach().float().cpu().numpy()
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, array, extension=".tif"))


def read_stack(path: str | os.PathLike, channels: int, dims: int) -> torch.Tensor:
    """Read a TIFF stack (or any image imageio reads) as ``[channels, *size]`` float in ``[0, 1]`` (uint8 and
    uint16 scaled by their range, floats as they are): ``[*size]`` for one channel, channels first or last."""
    try:
        array = np.asarray(iio.imread(path))
    except FileNotFoundError:
        raise StudioError(f"Image {str(path)!r} does not exist.") from None
    except Exception as error:  # imageio raises many types for undecodable files
        raise StudioError(f"Cannot read {str(path)!r} ({type(error).__name__}); give a TIFF stack or an image file.") from None
    if dims == 3 and Path(path).suffix.lower() not in (".tif", ".tiff"):
        raise StudioError(f"{str(path)!r} is no TIFF stack; volumes are read from multi-page TIFF files.")
    data = _as_unit_floats(array)
    if data.dim() == dims and channels == 1:
        data = data[None]
    elif data.dim() == dims + 1 and data.shape[0] != channels and data.shape[-1] == channels:
        data = data.movedim(-1, 0)
    if data.dim() != dims + 1 or data.shape[0] != channels:
        raise StudioError(f"{str(path)!r} holds an array of shape {list(array.shape)}; the model takes {channels} "
                          f"channel(s) of a {dims}D image.")
    return data.contiguous()


def _as_unit_floats(array: np.ndarray) -> torch.Tensor:
    """Pixel values as float32 in ``[0, 1]``: uint8 and uint16 scaled by their range, floats as they are."""
    scale = 255.0 if array.dtype == np.uint8 else (65535.0 if array.dtype == np.uint16 else 1.0)
    return torch.from_numpy(array.astype(np.float32) / scale)


def from_uint8(array: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 (or grey, grey+alpha or RGBA) to ``[3, H, W]`` float in ``[0, 1]``; a stack or a
    volume is refused in one sentence (an RGB model takes photos)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (1, 2):  # grey, grey + alpha
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise StudioError(f"An array of shape {list(array.shape)} is no photo; an RGB model takes H x W x 3 "
                          "images (for stacks and volumes, load the model with its --input).")
    return _as_unit_floats(array[..., :3]).permute(2, 0, 1).contiguous()


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read a photo as ``[3, H, W]`` float in ``[0, 1]``; an unreadable file is a one-sentence error."""
    try:
        array = iio.imread(path)
    except FileNotFoundError:
        raise StudioError(f"Image {str(path)!r} does not exist.") from None
    except Exception as error:  # imageio raises many types for undecodable files
        raise StudioError(f"Cannot read image {str(path)!r} ({type(error).__name__}); give a PNG, JPEG or TIFF file.") from None
    try:
        return from_uint8(array)
    except StudioError as error:
        raise StudioError(f"{str(path)!r}: {str(error)[0].lower()}{str(error)[1:]}") from None


def read_input(path: str | os.PathLike, channels: int = 3, dims: int = 2) -> torch.Tensor:
    """An image file as a model of ``channels`` and ``dims`` takes it: a photo as ``[3, H, W]`` for RGB models,
    else a TIFF stack (or image) as ``[channels, *size]`` (:func:`read_stack`)."""
    return read_image(path) if (channels, dims) == (3, 2) else read_stack(path, channels, dims)


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
    """Write an image (``[C, *size]`` float tensor, shown through :func:`preview`, or a uint8 array) atomically;
    format from the suffix."""
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
