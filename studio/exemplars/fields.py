"""Receptive fields, measured: the input pixels whose gradient reaches a neuron, for every position of a layer's
grid, and the crop box of a neuron in an image file's own pixels.

Measured rather than derived from kernel sizes, so any stride, padding (``same`` padding included), pooling or
attention is accounted for; per axis (exact for networks whose receptive fields are boxes, as convolutions and
pooling give; a global operation gives the whole input).
"""

from __future__ import annotations

import torch

from studio.attribution.machinery import attribution_mode
from studio.models import StudioModel
from studio.targets import LayerInfo, activations

#: Noise images per backward pass (bounds memory at large layers).
CHUNK = 16
#: Standard deviations of the noise, in the model's input space: several, so that a unit dead or saturated at one
#: scale (a ReLU behind a negative bias, a ReLU6) still passes gradient at another.
SCALES = (0.5, 2.0, 8.0)


def receptive_fields(model: StudioModel, info: LayerInfo, seed: int = 0) -> list[list[tuple[int, int]]]:
    """For each spatial axis of the layer, for each index along it, the ``(start, stop)`` input pixels whose
    gradient reaches the neurons there (summed over channels, on the union of noise images at several scales
    drawn from ``seed``). Neuron ``k`` of the diagonal (``(k, k)``, each coordinate capped at its axis) gives
    index ``k`` of every axis at once. A layer without a grid (a vector such as the logits) has no axes: its
    field is the whole input."""
    spec, grid, draws = model.spec, info.spatial, len(SCALES)
    generator = torch.Generator().manual_seed(seed)
    scales = torch.tensor(SCALES).repeat(CHUNK).view(-1, *[1] * (spec.dims + 1))
    fields: list[list[tuple[int, int]]] = [[] for _ in grid]
    with attribution_mode(model.module):
        for start in range(0, max(grid, default=0), CHUNK // draws):
            diagonal = range(start, min(max(grid), start + CHUNK // draws))
            noise = torch.randn(len(diagonal) * draws, spec.channels, *spec.size, generator=generator)
            inputs = (noise * scales[:len(noise)]).to(model.device).requires_grad_(True)
            acts = activations(model, inputs, [info.path])[info.path]
            neurons = [acts[(i, slice(None), *(min(diagonal[i // draws], side - 1) for side in grid))].sum()
                       for i in range(len(inputs))]
            (gradient,) = torch.autograd.grad(torch.stack(neurons).sum(), inputs)
            reached = gradient.abs().amax(1) > 0  # [n * draws, *input size]
            for axis, side in enumerate(grid):
                others = [d for d in range(1, reached.dim()) if d != axis + 1]
                profile = reached.amax(others).view(len(diagonal), draws, -1).any(1).cpu()  # [n, input side]
                fields[axis] += [_extent(row, spec.size[axis]) for k, row in zip(diagonal, profile) if k < side]
    return fields


def _extent(reached: torch.Tensor, side: int) -> tuple[int, int]:
    """First and one-past-last reached pixel; the whole side when none is (a dead neuron on this noise)."""
    (hits,) = torch.nonzero(reached, as_tuple=True)
    return (int(hits[0]), int(hits[-1]) + 1) if len(hits) else (0, side)


def crop_boxes(fields: list[list[tuple[int, int]]], positions: torch.Tensor, sizes: torch.Tensor,
               input_size: tuple[int, ...]) -> torch.Tensor:
    """The receptive-field boxes ``[..., dims, 2]`` (start, stop per axis) of neurons at ``positions``
    (``[..., axes]`` on the layer's grid) in the pixels of images of ``sizes`` (``[..., dims]``, broadcast
    against the positions): the field at the model's input size, scaled to each file's size and clipped."""
    shape = torch.broadcast_shapes(positions.shape[:-1], sizes.shape[:-1])
    inputs = torch.tensor(input_size, dtype=torch.long)
    if fields:
        tables = [torch.tensor(axis, dtype=torch.long) for axis in fields]  # [index, 2] per axis
        boxes = torch.stack([table[positions[..., a]] for a, table in enumerate(tables)], -2)
    else:
        boxes = torch.stack([torch.zeros_like(inputs), inputs], -1)
    boxes, sizes = boxes.expand(*shape, len(input_size), 2), sizes.expand(*shape, len(input_size))
    start = boxes[..., 0] * sizes // inputs
    stop = -(-boxes[..., 1] * sizes // inputs)
    return torch.stack([start, torch.minimum(stop, sizes)], -1)
