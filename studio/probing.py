"""Probe a photo at a point: the neuron of a layer under a spot (its channel the one most active there, unless
named), and the activation grid (Olah et al. 2018): that neuron for every cell of the layer's grid, rendered
in one batch, so the grid of renders lies over the photo cell by cell.

A photo pixel maps to the layer's grid cell that covers it after the photo is resized to the model's input
(the grid spans the input evenly, as convolutional and patch grids do).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from studio.attribution.machinery import as_batch, attribution_mode
from studio.checks import check_number
from studio.engine import RenderResult, render
from studio.errors import StudioError
from studio.models import StudioModel, resize_to_input
from studio.settings import RenderSettings
from studio.targets import Target, activations, layer_info, layer_key, parse_target, position_text


@dataclass
class Probe:
    """The neuron under a point: its target (``blocks.4:17@3,5``), the grid cell, and the activation of every
    channel there on the photo ``[C]`` (the chosen channel is the largest unless one was named)."""

    target: Target
    cell: tuple[int, ...]
    channel_values: torch.Tensor


@dataclass
class ActivationGrid:
    """The activation grid of a photo at a layer: the cells rendered (``[N, dims]``, row-major, every
    ``stride``-th), each one's target, and the renders ``[N, C, size, size]`` in the same order; ``shape`` is the
    layer's grid."""

    shape: tuple[int, ...]
    cells: torch.Tensor
    targets: list[Target]
    result: RenderResult
    stride: int = 1


def _photo_activation(model: StudioModel, photo, layer: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The photo as the model takes it ``[1, C, *size]``, its channels-first activation at ``layer`` ``[C, *grid]``
    and the layer's key; a layer without a grid is one sentence."""
    images, _ = as_batch(photo, model)
    if len(images) != 1:
        raise StudioError(f"Probe one photo at a time, not a batch of {len(images)}.")
    key = layer_key(model, layer)
    info = layer_info(model, key)
    if not info.spatial:
        raise StudioError(f"Layer {info.name!r} has no spatial grid (shape [{info.channels}]) to probe; pick a "
                          "convolutional or token layer.")
    with attribution_mode(model.module), torch.no_grad():
        inputs = resize_to_input(images, model.spec)
        activation = activations(model, model.spec.normalise(inputs), [key])[key][0].float()
    return images, activation, key


def grid_cell(point: Sequence[float], image_size: Sequence[int], grid: Sequence[int]) -> tuple[int, ...]:
    """The grid cell covering ``point`` (row, column; depth first in a volume), in pixels of an image of
    ``image_size``; a point off the image is one sentence."""
    if len(point) != len(image_size):
        raise StudioError(f"A point on a {len(image_size)}D photo has {len(image_size)} coordinates, not {list(point)}.")
    if not all(0 <= p < n for p, n in zip(point, image_size)):
        extent = ", ".join(f"{n} {name}" for n, name in zip(image_size, ("slices", "rows", "columns")[-len(image_size):]))
        raise StudioError(f"Point {list(point)} is off the photo ({extent}); give row, column in its pixels.")
    return tuple(min(n - 1, int(p / size * n)) for p, size, n in zip(point, image_size, grid))


def _neuron(model: StudioModel, key: str, activation: torch.Tensor, cell: tuple[int, ...],
            channel: int | None) -> Target:
    """The neuron of layer ``key`` at ``cell``: channel ``channel``, or the one most active there in
    ``activation`` ``[C, *grid]``."""
    chosen = int(activation[(slice(None), *cell)].argmax()) if channel is None else channel
    return parse_target(f"{layer_info(model, key).name}:{chosen}{position_text(cell)}", model)


def probe(model: StudioModel, photo: torch.Tensor | str | os.PathLike, layer: str, point: Sequence[float],
          channel: int | None = None) -> Probe:
    """The neuron of ``layer`` under ``point`` (row, column in the photo's pixels) of ``photo``: at the grid
    cell covering it, channel ``channel``, or the channel most active there on the photo."""
    images, activation, key = _photo_activation(model, photo, layer)
    cell = grid_cell(point, images.shape[2:], activation.shape[1:])
    return Probe(_neuron(model, key, activation, cell, channel), cell, activation[(slice(None), *cell)].cpu())


def activation_grid(model: StudioModel, photo: torch.Tensor | str | os.PathLike, layer: str, *,
                    channel: int | None = None, stride: int = 1, settings: RenderSettings | None = None,
                    **options) -> ActivationGrid:
    """Render, for every ``stride``-th cell of ``layer``'s grid on ``photo``, the neuron there (channel
    ``channel``, or the one most active in that cell), in one batch (:func:`studio.render`'s ``settings`` and
    ``options``)."""
    check_number("stride", stride, int, minimum=1, maximum=4096)
    _, activation, key = _photo_activation(model, photo, layer)
    grid = tuple(activation.shape[1:])
    axes = [torch.arange(0, n, stride) for n in grid]
    cells = torch.cartesian_prod(*axes).view(-1, len(grid))
    targets = [_neuron(model, key, activation, tuple(cell), channel) for cell in cells.tolist()]
    return ActivationGrid(grid, cells, targets, render(model, targets, settings, **options), stride)


def grid_mosaic(grid: ActivationGrid) -> torch.Tensor:
    """The grid's renders as one picture: each render (``side`` pixels) at its cell's place among the rendered
    cells (row-major, as :func:`activation_grid` orders them), standing for ``stride`` cells a side, the
    picture cut where the layer's grid ends (``ceil(cells * side / stride)`` pixels a side)."""
    images = grid.result.images
    if len(grid.shape) != 2:
        raise StudioError("The activation-grid mosaic lays out 2D renders; a volume's grid has no flat layout.")
    side = images.shape[-1]
    rows = sorted(set(grid.cells[:, 0].tolist()))
    columns = sorted(set(grid.cells[:, 1].tolist()))
    mosaic = torch.zeros(images.shape[1], len(rows) * side, len(columns) * side)
    for image, (y, x) in zip(images, grid.cells.tolist()):
        top, left = rows.index(y) * side, columns.index(x) * side
        mosaic[:, top:top + side, left:left + side] = image
    # the last row and column of renders stand for the cells left (fewer than stride): cut at the grid's edge
    height, width = (math.ceil(cells * side / grid.stride) for cells in grid.shape)
    return mosaic[:, :height, :width]


def mosaic_scale(grid: ActivationGrid, photo_size: Sequence[int]) -> tuple[float, float]:
    """Photo pixels per mosaic pixel along rows and columns, so that each render covers the cells it stands for
    (``stride`` of them a side) over a photo of ``photo_size``: the mosaic lies on the photo cell by cell."""
    side = grid.result.images.shape[-1]
    return tuple(grid.stride * size / (cells * side) for size, cells in zip(photo_size, grid.shape))
