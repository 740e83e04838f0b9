"""Random, differentiable augmentations drawn independently for every image of the batch, on its device.

The standard robust set (Lucid's ``standard_transforms``: pad 12 with grey, jitter 8, scale 0.9-1.1,
rotate -10..10 degrees, jitter 4) and the resize to the model's input size are composed into one affine
map per image and applied in a single ``kornia`` warp: one resampling instead of five, and all random
draws are made on the device in one call per step, so the loop never waits on the host.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
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
    """Uniform draws per image and step: shifts along each axis, a scale, and the rotation angles (one in 2D,
    one about each axis in 3D)."""
    return 4 if dims == 2 else 7


def random_affine(images: torch.Tensor, out_size: tuple[int, ...], settings: TransformSettings,
                  draws: torch.Tensor | None = None) -> torch.Tensor:
    """Pad, jitter, scale, rotate and jitter each image (or volume) independently, then resize to ``out_size``.

    ``draws`` (``[B, draw_count(dims)]`` uniform in ``[0, 1)``: shifts, scale, angles) come from
    :func:`counter_uniform` in the engine; by default they are drawn from torch's global generator.
    """
    if len(out_size) == 3:
        return _random_affine_volume(images, out_size, settings, draws)
    b, _, h, w = images.shape
    device = images.device
    if settings.pad:
        images = F.pad(images, (settings.pad,) * 4, value=settings.pad_value)
    ph, pw = images.shape[-2:]
    if draws is None:
        draws = torch.rand(b, 4, device=device)
    # Each jitter of d pixels is a random crop offset in [0, d); centred, the offsets add up.
    shift_range = torch.tensor(float(sum(d - 1 for d in settings.jitter)), device=device)
    shift = (draws[:, :2] - 0.5) * shift_range
    if settings.jitter:
        shift = shift.round()
    low, high = settings.scale
    scale = low + (high - low) * draws[:, 2]
    angle = (2 * draws[:, 3] - 1) * math.radians(settings.degrees)
    # Window of the padded image that the jitter crops leave, mapped onto the output grid.
    window_h = ph - sum(d - 1 for d in settings.jitter)
    window_w = pw - sum(d - 1 for d in settings.jitter)
    zoom_y, zoom_x = out_size[0] / window_h * scale, out_size[1] / window_w * scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    # dst = A (src - centre_src - shift) + centre_dst, with A = zoom * rotation.
    a = torch.stack([torch.stack([zoom_x * cos, -zoom_x * sin], -1), torch.stack([zoom_y * sin, zoom_y * cos], -1)], 1)
    centre_src = torch.tensor([(pw - 1) / 2, (ph - 1) / 2], device=device) + shift
    centre_dst = torch.tensor([(out_size[1] - 1) / 2, (out_size[0] - 1) / 2], device=device)
    offset = centre_dst - torch.einsum("bij,bj->bi", a, centre_src)
    matrix = torch.cat([a, offset[..., None]], dim=2).to(images.dtype)
    return warp_affine(images, matrix, dsize=out_size, mode="bilinear", padding_mode="border", align_corners=True)


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


def _random_affine_volume(volumes: torch.Tensor, out_size: tuple[int, int, int], settings: TransformSettings,
                          draws: torch.Tensor | None) -> torch.Tensor:
    """The 3D counterpart of :func:`random_affine`: pad, jitter along every axis, scale, rotate about every
    axis, resize to ``out_size``, in one ``kornia`` 3D warp (draws: 3 shifts, scale, 3 angles)."""
    from kornia.geometry.transform import warp_affine3d

    b = volumes.shape[0]
    device = volumes.device
    if settings.pad:
        volumes = F.pad(volumes, (settings.pad,) * 6, value=settings.pad_value)
    sizes_xyz = torch.tensor(volumes.shape[2:][::-1], dtype=torch.float32, device=device)  # (W, H, D)
    if draws is None:
        draws = torch.rand(b, draw_count(3), device=device)
    crop = float(sum(d - 1 for d in settings.jitter))
    shift = (draws[:, :3] - 0.5) * crop
    if settings.jitter:
        shift = shift.round()
    low, high = settings.scale
    scale = low + (high - low) * draws[:, 3]
    angles = (2 * draws[:, 4:7] - 1) * math.radians(settings.degrees)
    out_xyz = torch.tensor(out_size[::-1], dtype=torch.float32, device=device)
    zoom = out_xyz / (sizes_xyz - crop)                                                   # per axis (x, y, z)
    a = zoom.view(1, 3, 1) * scale.view(b, 1, 1) * _rotation(angles)
    centre_src = (sizes_xyz - 1) / 2 + shift
    centre_dst = (out_xyz - 1) / 2
    offset = centre_dst - torch.einsum("bij,bj->bi", a, centre_src)
    matrix = torch.cat([a, offset[..., None]], dim=2).to(volumes.dtype)
    return warp_affine3d(volumes, matrix, dsize=tuple(out_size), flags="bilinear", padding_mode="border",
                         align_corners=True)
