"""The pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop"): does a map's peak
fall on the object? A hit when every maximal pixel lies within ``tolerance`` pixels of the object's box (15 in
the paper, which absorbs the few pixels a peak's position is uncertain by); every pixel of a flat map is a peak,
so it hits only a box that, with the tolerance, covers the map. Beside it the energy-based variant (Wang et al. 2020, Score-CAM): the share of the map's
positive mass inside the box, which also rewards a map for what it leaves out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from studio.checks import check_number
from studio.errors import StudioError

#: The paper's tolerance in pixels.
TOLERANCE = 15


@dataclass
class Pointing:
    """Per map: ``hits`` (bool) and ``energy`` (the positive mass inside the box, 0 to 1)."""

    hits: torch.Tensor
    energy: torch.Tensor


def box_slices(box: Sequence[float], shape: Sequence[int]) -> tuple[slice, ...]:
    """The index slices (in ``shape``'s axis order, D H W) of a box written as ``(x0, y0, x1, y1)`` in 2D or
    ``(x0, y0, z0, x1, y1, z1)`` in 3D, in pixels, ends exclusive; a box that is empty or leaves the map is an
    error naming it."""
    dims = len(shape)
    if len(box) != 2 * dims:
        corners = "x0, y0, x1, y1" if dims == 2 else "x0, y0, z0, x1, y1, z1"
        raise StudioError(f"A box on a {dims}D map has {2 * dims} numbers ({corners}), not {list(box)}.")
    low, high = [float(v) for v in box[:dims]][::-1], [float(v) for v in box[dims:]][::-1]  # to D H W order
    if any(not (0 <= lo < hi <= size) for lo, hi, size in zip(low, high, shape)):
        raise StudioError(f"Box {list(box)} must lie inside the {'x'.join(map(str, shape[::-1]))} map with each "
                          "start before its end.")
    return tuple(slice(int(lo), max(int(lo) + 1, round(hi))) for lo, hi in zip(low, high))


def pointing_game(maps: torch.Tensor, boxes: Sequence[Sequence[float]], tolerance: float = TOLERANCE) -> Pointing:
    """The pointing game of ``maps`` (``[B, *size]``, e.g. from :func:`studio.attribute`, at the images'
    resolution) against one box per map (:func:`box_slices` writes them)."""
    check_number("tolerance", tolerance, float, minimum=0, maximum=1e6)
    if maps.dim() not in (3, 4) or len(boxes) != len(maps):
        raise StudioError(f"Give one box per map ({len(maps)} maps of shape {list(maps.shape[1:])}), "
                          f"not {len(boxes)} boxes.")
    hits, energy = [], []
    for heat, box in zip(maps.detach().float().cpu(), boxes):
        where = box_slices(box, heat.shape)
        inside = torch.zeros(heat.shape, dtype=torch.bool)
        inside[where] = True
        peaks = torch.nonzero(heat == heat.max()).float()                     # [P, dims]
        low = torch.tensor([s.start for s in where], dtype=torch.float32)
        high = torch.tensor([s.stop - 1 for s in where], dtype=torch.float32)
        gap = (low - peaks).clamp(min=0) + (peaks - high).clamp(min=0)         # per axis, 0 inside the box
        hits.append(bool((gap.norm(dim=1) <= tolerance).all()))
        positive = heat.clamp(min=0)
        total = positive.sum()
        energy.append(float(positive[inside].sum() / total) if total > 0 else 0.0)
    return Pointing(torch.tensor(hits), torch.tensor(energy))
