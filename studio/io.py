"""Images at the edges: reading photos, converting tensors, writing files atomically with imageio."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image

from studio.errors import StudioError, StudioNote
from studio.models import resample

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


def read_stack(path: str | os.PathLike, channels: int, dims: int, data: bytes | None = None) -> torch.Tensor:
    """Read a TIFF stack (or any image imageio reads) as ``[channels, *size]`` float in ``[0, 1]``
    (:func:`_as_unit_floats`): ``[*size]`` for one channel, channels first or last. ``data``: the file's bytes,
    already read (the file is then only named)."""
    array = _read_array(path, "a TIFF stack or an image file", data)
    if dims == 3 and Path(path).suffix.lower() not in (".tif", ".tiff"):
        raise StudioError(f"{str(path)!r} is no TIFF stack; volumes are read from multi-page TIFF files.")
    values = _as_unit_floats(array, repr(str(path)))
    if values.dim() == dims and channels == 1:
        values = values[None]
    elif values.dim() == dims + 1 and values.shape[0] != channels and values.shape[-1] == channels:
        values = values.movedim(-1, 0)
    if values.dim() != dims + 1 or values.shape[0] != channels:
        raise StudioError(f"{str(path)!r} holds an array of shape {list(array.shape)}; the model takes {channels} "
                          f"channel(s) of a {dims}D image.")
    return values.contiguous()


def _as_unit_floats(array: np.ndarray, name: str = "The image") -> torch.Tensor:
    """Pixel values as float32 in ``[0, 1]``: uint8 and uint16 by their range and floats in ``[0, 1]`` as they
    are; anything else is read by the first rule that fits, said in a note: integers of 0 and 1 as they are,
    floats up to 2 clipped (an overshoot), values in 0-255 or (integers) 0-65535 by that range, else from their
    own minimum and maximum. Empty, NaN or infinite data is refused."""
    data = array.astype(np.float32)
    if data.size == 0:
        raise StudioError(f"{name} holds no pixels (shape {list(array.shape)}).")
    if not np.isfinite(data).all():
        raise StudioError(f"{name} holds NaN or infinite values; give finite pixel values.")
    if array.dtype in (np.uint8, np.uint16):
        return torch.from_numpy(data / np.iinfo(array.dtype).max)
    low, high = float(data.min()), float(data.max())
    integers = array.dtype.kind in "iu"
    if low >= 0 and high <= 1 and not integers:
        return torch.from_numpy(data)
    if low >= 0 and high <= 1:
        read, result = "as they are", data
    elif low >= 0 and high <= 2 and not integers:
        read, result = "clipped to [0, 1]", np.clip(data, 0, 1)
    elif low >= 0 and high <= 255:
        read, result = "as 0-255", data / 255
    elif low >= 0 and high <= 65535 and integers:
        read, result = "as 0-65535", data / 65535
    elif high > low:
        read, result = "scaled from their own range", (data - low) / (high - low)
    else:
        raise StudioError(f"{name} is one constant value ({low:g}) outside [0, 1]; give pixel values in [0, 1], "
                          "0-255 or 0-65535.")
    warnings.warn(f"{name} holds {array.dtype} values in [{low:g}, {high:g}]; read them {read}.", StudioNote,
                  stacklevel=3)
    return torch.from_numpy(result)


def from_uint8(array: np.ndarray, name: str = "The image") -> torch.Tensor:
    """``H x W x 3`` uint8 (or grey, grey+alpha or RGBA) to ``[3, H, W]`` float in ``[0, 1]``; a stack or a
    volume is refused in one sentence (an RGB model takes photos)."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] in (1, 2):  # grey, grey + alpha
        array = array[..., 0]
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise StudioError(f"{name} is an array of shape {list(array.shape)}, no photo; an RGB model takes "
                          "H x W x 3 images (for stacks and volumes, load the model with its --input).")
    return _as_unit_floats(array[..., :3], name).permute(2, 0, 1).contiguous()


def _read_array(path: str | os.PathLike, what: str, data: bytes | None = None) -> np.ndarray:
    """A file's pixels through imageio (CMYK and other non-RGB colour modes converted to RGB), from the file or
    from its bytes ``data``; a missing, undecodable or oversized file is a one-sentence error."""
    suffix = Path(path).suffix.lower()
    source, hint = (path, {}) if data is None else (data, {"extension": suffix})
    try:
        if suffix in _CONVERTED_SUFFIXES and _colour_mode(path if data is None else io.BytesIO(data)) in _CONVERTED_MODES:
            return np.asarray(iio.imread(source, plugin="pillow", mode="RGB", **hint))
        return np.asarray(iio.imread(source, **hint))
    except FileNotFoundError:
        raise StudioError(f"Image {str(path)!r} does not exist.") from None
    except IsADirectoryError:
        raise StudioError(f"{str(path)!r} is a folder, not an image file.") from None
    except Image.DecompressionBombError:
        raise StudioError(f"{str(path)!r} has more than {Image.MAX_IMAGE_PIXELS * 2} pixels, more than is safe to "
                          "decode (a decompression bomb, or a scan to tile first); give a smaller image.") from None
    except Exception as error:  # imageio raises many types for undecodable files
        empty = not data if data is not None else Path(path).is_file() and Path(path).stat().st_size == 0
        raise StudioError(f"Cannot read {str(path)!r} ({'an empty file' if empty else type(error).__name__}); "
                          f"give {what}.") from None


def _colour_mode(file: str | os.PathLike | io.BytesIO) -> str | None:
    """PIL's colour mode of a file or its bytes (``CMYK``, ``RGB``, ...), None when PIL cannot open it."""
    try:
        with Image.open(file) as image:
            return image.mode
    except Exception:  # not a PIL image (a TIFF stack PIL does not read): imageio reads it as it is
        return None


#: Colour modes read as RGB (PIL converts CMYK correctly, including Adobe's inverted CMYK JPEGs).
_CONVERTED_MODES = ("CMYK", "YCbCr", "LAB", "HSV")
_CONVERTED_SUFFIXES = (".jpg", ".jpeg", ".tif", ".tiff")


def read_image(path: str | os.PathLike, data: bytes | None = None) -> torch.Tensor:
    """Read a photo (or decode its bytes ``data``) as ``[3, H, W]`` float in ``[0, 1]``; an unreadable file is a
    one-sentence error."""
    return from_uint8(_read_array(path, "a PNG, JPEG or TIFF file", data), repr(str(path)))


def read_input(path: str | os.PathLike, channels: int = 3, dims: int = 2, data: bytes | None = None) -> torch.Tensor:
    """An image file (or its bytes ``data``, named ``path``) as a model of ``channels`` and ``dims`` takes it: a
    photo as ``[3, H, W]`` for RGB models, else a TIFF stack (or image) as ``[channels, *size]``
    (:func:`read_stack`)."""
    return read_image(path, data) if (channels, dims) == (3, 2) else read_stack(path, channels, dims, data)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``: a reader
    never sees half a file, and a failure (a full disk, no permission) leaves the old file as it was and is
    one sentence."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the result the usual permissions
        os.replace(tmp, path)
    except OSError as error:
        _remove(tmp)
        if error.errno not in _WRITE_ERRORS:
            raise
        raise StudioError(f"Cannot write {str(path)!r}: {_WRITE_ERRORS[error.errno]}; nothing there was changed, so "
                          "fix that and run again.") from None
    except BaseException:
        _remove(tmp)
        raise
    return path


#: Write failures that are the machine's state, not a bug, with what to do about them.
_WRITE_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                 errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
                 errno.EROFS: "the file system is read-only", errno.ENOTDIR: "a part of the path is a file",
                 errno.EEXIST: "a part of the path is a file", errno.EISDIR: "a folder has that name"}


def _remove(tmp: str | None) -> None:
    """Delete a failed write's temporary file, if it was made."""
    if tmp is not None:
        Path(tmp).unlink(missing_ok=True)


def write_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray, alpha: torch.Tensor | None = None) -> Path:
    """Write an image (``[C, *size]`` float tensor, shown through :func:`preview`, or a uint8 array) atomically;
    format from the suffix. ``alpha`` (``[*size]`` in ``[0, 1]``; a volume's by its maximum along depth, like
    the preview) becomes the picture's alpha channel, in formats that have one (PNG, WebP)."""
    array = to_uint8(image) if isinstance(image, torch.Tensor) else image
    if alpha is not None:
        suffix = Path(path).suffix.lower()
        if suffix not in (".png", ".webp"):
            raise StudioError(f"{str(path)!r}: a transparency map needs a format with an alpha channel (.png or "
                              f".webp), not {suffix or 'no suffix'}.")
        flat = alpha.detach().float().cpu()
        flat = flat.amax(0) if flat.dim() == 3 else flat
        array = np.dstack([array, (flat.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)])
    return atomic_write(path, lambda tmp: iio.imwrite(tmp, array, extension=Path(path).suffix))


def write_figure(path: str | os.PathLike, figure) -> Path:
    """Write a matplotlib ``Figure`` atomically as PNG, through the Agg canvas (no GUI backend is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if Path(path).suffix.lower() != ".png":
        raise StudioError(f"{str(path)!r}: figures are written as PNG; give a path ending in .png.")
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


def write_panels(path: str | os.PathLike, rows: list[list[tuple[torch.Tensor, str]]], side: float = 2.6) -> Path:
    """Write a figure of pictures (``[C, H, W]`` in ``[0, 1]``, through :func:`preview`), each with its title, in
    ``rows``; ``side`` inches a panel."""
    from matplotlib.figure import Figure

    columns = max(len(row) for row in rows)
    figure = Figure(figsize=(side * columns, (side + 0.4) * len(rows)), layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, row_axes in zip(rows, axes):
        for axis in row_axes:
            axis.set_axis_off()
        for axis, (picture, title) in zip(row_axes, row):
            axis.imshow(preview(picture.cpu()).permute(1, 2, 0).clamp(0, 1).numpy())
            axis.set_title(title, fontsize=8)
    return write_figure(path, figure)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically: a reader sees the old file or the whole new one."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data) -> Path:
    """Write JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def fit(image: torch.Tensor, size: tuple[int, int], cover: bool = True) -> torch.Tensor:
    """``[C, H, W]`` in ``[0, 1]`` resized to ``size`` with its aspect kept: scaled to fill and centre-cropped
    (``cover``: photos to explain), or scaled to fit inside and centred on white (dataset-example tiles)."""
    h, w = image.shape[-2:]
    scale = (max if cover else min)(size[0] / h, size[1] / w)
    shape = [max(1, round(side * scale)) for side in (h, w)]
    shape = [(max if cover else min)(target, side) for target, side in zip(size, shape)]
    resized = resample(image[None].float(), shape, antialias=True)[0].clamp(0, 1)
    if cover:
        top, left = (shape[0] - size[0]) // 2, (shape[1] - size[1]) // 2
        return resized[:, top:top + size[0], left:left + size[1]]
    canvas = torch.ones(image.shape[0], *size, dtype=resized.dtype, device=resized.device)
    top, left = (size[0] - shape[0]) // 2, (size[1] - shape[1]) // 2
    canvas[:, top:top + shape[0], left:left + shape[1]] = resized
    return canvas


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
