"""One layer's running top-k examples and statistics, in memory, updated one batch at a time; the index
stores exactly this state after every batch, so a resumed run continues from where a killed one left off.

Per channel: the ``top_k`` images with the highest spatial maximum (ties: the image indexed first), the position
of that strongest neuron and its receptive-field box; the sum of each image's spatial mean, the largest
activation and the largest spatial mean; and a histogram of each image's spatial maximum (quantiles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from studio.exemplars import histogram
from studio.exemplars.fields import crop_boxes


@dataclass(frozen=True)
class BatchSummary:
    """What a batch gives one layer, per image and channel (``[B, C]``, on the CPU): the spatial maximum
    ``peaks``, its flat position in the grid ``where`` and the spatial mean ``means``; small enough to come back
    from a worker, and all :meth:`LayerState.update` needs."""

    peaks: torch.Tensor
    where: torch.Tensor
    means: torch.Tensor
    grid: tuple[int, ...]


def summarise(activation: torch.Tensor) -> BatchSummary:
    """The :class:`BatchSummary` of a channels-first ``activation`` ``[B, C, *grid]``, reduced on its device."""
    flat = activation.detach().reshape(*activation.shape[:2], -1).float()  # [B, C, positions]
    peaks, where = flat.max(2)
    return BatchSummary(peaks.double().cpu(), where.cpu(), flat.mean(2).double().cpu(), tuple(activation.shape[2:]))


@dataclass
class LayerState:
    """Per channel (rows): top-k ``scores`` (``-inf`` where empty), ``images`` (ids, -1 where empty),
    ``positions`` ``[C, k, axes]``, ``boxes`` ``[C, k, dims, 2]``; and the statistics ``total`` (sum of spatial
    means), ``peak`` (largest activation), ``best_mean`` (largest spatial mean), ``counts`` ``[C, BINS]``."""

    name: str
    fields: list[list[tuple[int, int]]]
    scores: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    total: torch.Tensor
    peak: torch.Tensor
    best_mean: torch.Tensor
    counts: np.ndarray

    @classmethod
    def empty(cls, name: str, channels: int, top_k: int, fields: list[list[tuple[int, int]]], dims: int) -> LayerState:
        """The state before any image."""
        return cls(name, fields, torch.full((channels, top_k), -torch.inf, dtype=torch.float64),
                   torch.full((channels, top_k), -1, dtype=torch.long),
                   torch.zeros(channels, top_k, len(fields), dtype=torch.long),
                   torch.zeros(channels, top_k, dims, 2, dtype=torch.long), torch.zeros(channels, dtype=torch.float64),
                   torch.full((channels,), -torch.inf, dtype=torch.float64),
                   torch.full((channels,), -torch.inf, dtype=torch.float64),
                   np.zeros((channels, histogram.BINS), dtype=np.int64))

    def update(self, summary: BatchSummary, ids: torch.Tensor, sizes: torch.Tensor,
               input_size: tuple[int, ...]) -> list[int]:
        """Add a batch: its :class:`BatchSummary`, the images' ``ids`` ``[B]`` and file ``sizes`` ``[B, dims]``.
        Returns the channels whose top-k changed."""
        peaks, where, means, grid = summary.peaks, summary.where, summary.means, summary.grid
        self.total += means.sum(0)
        self.peak = torch.maximum(self.peak, peaks.amax(0))
        self.best_mean = torch.maximum(self.best_mean, means.amax(0))
        channels = peaks.shape[1]
        np.add.at(self.counts, (np.arange(channels)[None], histogram.bins(peaks).numpy()), 1)
        positions = torch.stack(torch.unravel_index(where, grid), -1) if grid else where[..., None][..., :0]
        boxes = crop_boxes(self.fields, positions, sizes[:, None], input_size)  # [B, C, dims, 2]
        previous = self.images
        scores = torch.cat([self.scores, peaks.T], 1)
        order = scores.sort(dim=1, descending=True, stable=True).indices[:, :self.scores.shape[1]]
        self.scores = scores.gather(1, order)
        self.images = _pick(torch.cat([self.images, ids.expand(channels, -1)], 1), order)
        self.positions = _pick(torch.cat([self.positions, positions.transpose(0, 1)], 1), order)
        self.boxes = _pick(torch.cat([self.boxes, boxes.transpose(0, 1)], 1), order)
        return torch.nonzero((self.images != previous).any(1)).flatten().tolist()


def _pick(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows of ``values`` (``[C, n, ...]``) reordered and cut by ``order`` (``[C, k]``) along the second axis."""
    index = order.view(*order.shape, *[1] * (values.dim() - 2)).expand(*order.shape, *values.shape[2:])
    return values.gather(1, index)
