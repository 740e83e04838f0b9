"""Heat maps for the eye: a raw attribution map scaled to ``[0, 1]`` by a high percentile, and blended over
its photo in a perceptual colormap. The maths of the maps lives in :mod:`studio.attribution`."""

from __future__ import annotations

import torch
from kornia.color import ColorMap, apply_colormap

from studio.checks import check_number
from studio.errors import StudioError


def display_map(heat: torch.Tensor, signed: bool = False, percentile: float = 99.0,
                scale: float | None = None) -> torch.Tensor:
    """Scale one ``[H, W]`` map to ``[0, 1]`` for display: ``|map|`` for signed methods, divided by its
    ``percentile`` (so a few extreme pixels do not wash out the rest), or by a fixed ``scale`` (a unit's
    dataset maximum, so that maps compare), clipped."""
    values = heat.detach().float()
    values = values.abs() if signed else values.clamp_min(0)
    if scale is not None:
        return (values / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(values)
    flat = values.flatten()
    rank = max(1, min(flat.numel(), int(round(percentile / 100 * flat.numel()))))
    scale = flat.kthvalue(rank).values
    if scale <= 0:
        scale = flat.max()
    return (values / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(values)


def colour_map(name: str, device: torch.device | str = "cpu") -> ColorMap:
    """kornia's colormap of that name (256 colours); an unknown name is one sentence."""
    try:
        return ColorMap(name, num_colors=256, device=device, dtype=torch.float32)
    except (ValueError, AttributeError, KeyError, TypeError):
        raise StudioError(f"Unknown colormap {name!r}: use viridis, plasma, cividis, turbo or another kornia "
                          "colormap.") from None


def overlay(image: torch.Tensor, heat: torch.Tensor, signed: bool = False, colormap: str = "viridis",
            alpha: float = 0.5, percentile: float = 99.0, scale: float | None = None) -> torch.Tensor:
    """The heat map in a perceptual colormap (kornia's viridis by default) blended over ``image``
    (``[3, H, W]`` in ``[0, 1]``), scaled as :func:`display_map` says; returns ``[3, H, W]`` in ``[0, 1]``."""
    alpha = check_number("alpha", alpha, minimum=0, maximum=1)
    check_number("percentile", percentile, minimum=0, maximum=100)
    palette = colour_map(colormap, image.device)
    level = display_map(heat.to(image.device), signed, percentile, scale)
    coloured = apply_colormap(level[None, None], palette)[0]
    return ((1 - alpha) * image.float() + alpha * coloured).clamp(0, 1)
