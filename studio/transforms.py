"""Random, differentiable augmentations drawn independently for every image of the batch, on its device.

The standard robust set (Lucid's ``standard_transforms``: pad 12 with grey, jitter 8, scale 0.9-1.1,
rotate -10..10 degrees, jitter 4) and the resize to the model's input size are composed into one affine
map per image and applied in a single ``kornia`` warp: one resampling instead of five, and all random
draws are made on the device in one call per step, so the loop never waits on the host. A large canvas is
seen through random boxes, each composed with the same transforms into the same one warp.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from kornia.geometry.transform import warp_affine

from studio.errors import StudioError


@dataclass(frozen=True)
class TransformSettings:
    """Ranges of the random transforms; ``TransformSettings.preset("none")`` only resizes."""

    pad: int = 12
    pad_value: float = 0.5
    jitter: tuple[int, ...] = (8, 4)
    scale: tuple[float, float] = (0.9, 1.1)
    degrees: float = 10.0

    @classmethod
    def preset(cls, name: str) -> TransformSettings:
        """One of :data:`TRANSFORM_PRESETS`: ``standard`` (Lucid's robust set) or ``none`` (resize only)."""
        if name not in _PRESETS:
            raise StudioError(f"Unknown transforms preset {name!r}: choose one of {', '.join(_PRESETS)}.")
        return _PRESETS[name]

    def as_dict(self) -> dict:
        return asdict(self)


_PRESETS = {"standard": TransformSettings(), "none": TransformSettings(pad=0, jitter=(), scale=(1.0, 1.0), degrees=0.0)}
#: Names of the transform presets (:meth:`TransformSettings.preset`).
TRANSFORM_PRESETS = tuple(_PRESETS)


_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' low-bias xorshift-multiply) on int64 tensors holding values below 2**32.

    The multipliers are below 2**31, so no product overflows int64 and CPU and CUDA agree bit for bit; the
    golden-ratio offset keeps 0 from being a fixed point.
    """
    x = (x + 0x9E3779B9) & _MASK32
    x = ((x ^ (x >> 16)) * 0x21F0AAAD) & _MASK32
    x = ((x ^ (x >> 15)) * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def counter_uniform(seeds: torch.Tensor, step: int, count: int) -> torch.Tensor:
    """``[B, count]`` uniform numbers in ``[0, 1)`` that depend only on each image's seed and the step.

    A counter-based generator: image ``i`` gets the same draws whatever else is in its batch, and all
    draws for a step are made on the seeds' device in one vectorised call.
    """
    folded = (seeds ^ (seeds >> 32)) & _MASK32
    counters = torch.arange(count, device=seeds.device) + step * count
    x = _mix32(_mix32(folded)[:, None] ^ (counters[None, :] & _MASK32))
    return x.to(torch.float64).div(2.0 ** 32).to(torch.float32)


def draw_count(dims: int) -> int:
    """Uniform draws per image (or crop) and step: shifts along each axis, a scale, and the rotation angles
    (one in 2D, one about each axis in 3D)."""
    return 4 if dims == 2 else 7


def random_affine(images: torch.Tensor, out_size: tuple[int, ...], settings: TransformSettings,
                  draws: torch.Tensor | None = None, origins: torch.Tensor | None = None,
                  side: int | None = None, view: int | None = None) -> torch.Tensor:
    """Pad, jitter, scale, rotate and jitter each image (or volume) independently, then resize to ``out_size``,
    in one ``kornia`` warp per image (the pad's grey is the value outside the image; not padded, the edge).

    ``draws`` (``[B, draw_count(dims)]`` uniform in ``[0, 1)``: shifts, scale, angles) come from
    :func:`counter_uniform` in the engine; by default they are drawn from torch's global generator.

    Crops of a large canvas: ``origins`` ``[B, K, dims]`` (pixels, ``x`` first) place ``K`` boxes of ``side``
    pixels on each image, and each box is transformed as if it were an image of ``view`` pixels (the robust
    transforms keep their pixel scale), with ``draws`` ``[B, K, draw_count]``. The result is crop-major,
    ``[K * B, C, *out_size]``: rows ``k * B .. (k + 1) * B`` are crop ``k`` of every image.
    """
    b, dims = images.shape[0], len(out_size)
    device = images.device
    count = draw_count(dims)
    if origins is None:
        origins = torch.zeros(b, 1, dims, device=device)
        side = view = None
    crops = origins.shape[1]
    if draws is None:
        draws = torch.rand(b, crops, count, device=device)
    draws = draws.reshape(b, crops, count)
    source = torch.tensor(images.shape[2:][::-1], dtype=torch.float32, device=device)  # (x, y[, z]) sizes
    virtual = source if view is None else torch.full((dims,), float(view), device=device)
    zoom = 1.0 if side is None else (view - 1) / (side - 1)  # canvas pixels to the box's virtual pixels
    matrix = _robust_matrix(virtual, torch.tensor(out_size[::-1], dtype=torch.float32, device=device), settings,
                            draws.reshape(b * crops, count))
    a = matrix[:, :, :dims] * zoom
    offset = matrix[:, :, dims] - torch.einsum("nij,nj->ni", a, origins.reshape(b * crops, dims).float())
    matrices = torch.cat([a, offset[..., None]], 2).reshape(b, crops, dims, dims + 1).to(images.dtype)
    # with a pad, outside the image is the pad's grey (zeros around the image less that grey); without, its edge
    fill, padding = (settings.pad_value, "zeros") if settings.pad else (0.0, "border")
    warp = _warp_2d if dims == 2 else _warp_3d
    out = torch.cat([warp(images - fill, matrices[:, k], out_size, padding) for k in range(crops)])
    return out + fill


def _warp_2d(images: torch.Tensor, matrix: torch.Tensor, out_size: tuple[int, ...], padding: str) -> torch.Tensor:
    return warp_affine(images, matrix, dsize=tuple(out_size), mode="bilinear", padding_mode=padding,
                       align_corners=True)


def _warp_3d(volumes: torch.Tensor, matrix: torch.Tensor, out_size: tuple[int, ...], padding: str) -> torch.Tensor:
    from kornia.geometry.transform import warp_affine3d

    return warp_affine3d(volumes, matrix, dsize=tuple(out_size), flags="bilinear", padding_mode=padding,
                         align_corners=True)


def _robust_matrix(source: torch.Tensor, out: torch.Tensor, settings: TransformSettings,
                   draws: torch.Tensor) -> torch.Tensor:
    """``[N, dims, dims + 1]`` affine maps from an image of ``source`` pixels (``x`` first) onto the output grid of
    ``out`` pixels: pad, jitter (shifts), scale and rotate about the centre, jitter, resize, composed.

    dst = A (src + pad - centre_src - shift) + centre_dst, with A = zoom * scale * rotation and the zoom
    mapping the window that the jitter crops leave of the padded image onto the output."""
    dims = len(out)
    crop = float(sum(d - 1 for d in settings.jitter))  # each jitter of d pixels is a crop offset in [0, d)
    shift = (draws[:, :dims] - 0.5) * crop
    if settings.jitter:
        shift = shift.round()
    low, high = settings.scale
    scale = low + (high - low) * draws[:, dims]
    angles = (2 * draws[:, dims + 1:] - 1) * math.radians(settings.degrees)
    padded = source + 2 * settings.pad
    rotation = _rotation_2d(angles[:, 0]) if dims == 2 else _rotation(angles)
    a = (out / (padded - crop)).view(1, dims, 1) * scale.view(-1, 1, 1) * rotation
    centre_src = (padded - 1) / 2 + shift - settings.pad
    offset = (out - 1) / 2 - torch.einsum("nij,nj->ni", a, centre_src)
    return torch.cat([a, offset[..., None]], dim=2)


def _rotation_2d(angle: torch.Tensor) -> torch.Tensor:
    """``[N, 2, 2]`` rotations by ``angle`` ``[N]`` (radians)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` rotations ``Rz Ry Rx`` about the x, y and z axes by ``angles`` ``[B, 3]`` (radians)."""
    cos, sin = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(cos[:, 0]), torch.zeros_like(cos[:, 0])

    def matrix(rows):
        return torch.stack([torch.stack(row, -1) for row in rows], 1)
    rx = matrix([(one, zero, zero), (zero, cos[:, 0], -sin[:, 0]), (zero, sin[:, 0], cos[:, 0])])
    ry = matrix([(cos[:, 1], zero, sin[:, 1]), (zero, one, zero), (-sin[:, 1], zero, cos[:, 1])])
    rz = matrix([(cos[:, 2], -sin[:, 2], zero), (sin[:, 2], cos[:, 2], zero), (zero, zero, one)])
    return rz @ ry @ rx
