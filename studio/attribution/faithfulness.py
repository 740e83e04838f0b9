"""Is a heat map faithful to the model? Deletion and insertion (Petsiuk et al. 2018): remove the pixels a map
ranks highest, a fraction at a time, and watch the score fall (deletion: a faithful map makes it fall fast, a
low area under the curve); or start from the baseline and put them back (insertion: a high area).

The score is the class's softmax probability for a class target (as in the paper) and what the target reads
for a unit. Pixels are ranked at the model's input size; ties (a ReLU'd Grad-CAM's zeros) are broken by a seeded
random order, the same for every method, so a flat region is removed in random order rather than by position.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from studio.attribution.api import TargetSpec, resolve_targets
from studio.attribution.gradients import baselines
from studio.attribution.machinery import as_batch, attribution_mode, evaluate
from studio.checks import check_number
from studio.errors import StudioError
from studio.hooks import OUTPUT
from studio.models import StudioModel, resample, resize_to_input
from studio.targets import Target

METRICS = ("deletion", "insertion")


@dataclass
class Faithfulness:
    """Per image: the score after removing (deletion) or restoring (insertion) each of ``fractions`` of the
    pixels, highest-ranked first (``[B, steps + 1]``), and each curve's area (trapezoid rule over the
    fractions, so a score that never changes has the area of its value)."""

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    targets: list[Target]

    @property
    def deletion_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.deletion, self.fractions, dim=1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.insertion, self.fractions, dim=1)


def _score(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], batch_size: int) -> torch.Tensor:
    """Each input's score: a class target's softmax probability, a unit's own reading."""
    values = []
    for first in range(0, len(inputs), batch_size):
        chunk, wanted = inputs[first:first + batch_size], targets[first:first + batch_size]
        if all(target.layer == OUTPUT and target.channel is not None for target in wanted):
            with torch.no_grad():
                probabilities = model.module(model.spec.normalise(chunk)).float().softmax(1)
            values.append(probabilities[torch.arange(len(chunk)), [t.channel for t in wanted]])
        else:
            values.append(evaluate(model, chunk, wanted)[0].float())
    return torch.cat(values)


def deletion_insertion(model: StudioModel, images: torch.Tensor | str | os.PathLike, maps: torch.Tensor,
                       target: TargetSpec | Sequence[TargetSpec] = None, *, steps: int = 32,
                       baseline: str | float | torch.Tensor | None = None, seed: int = 0,
                       batch_size: int = 16) -> Faithfulness:
    """Deletion and insertion curves of ``maps`` (``[B, *size]`` at any resolution, one per image, e.g. from
    :func:`studio.attribute`) for ``target`` (as :func:`studio.attribute` takes it) on ``images``: ``steps``
    equal fractions of the pixels, each removed to (or restored from) the ``baseline`` (``black``, ``blurred``,
    a grey level or images; default blurred for 2D images, black for volumes, which have no blur here)."""
    check_number("steps", steps, int, minimum=1, maximum=4096)
    images, _ = as_batch(images, model)
    maps = maps[None] if maps.dim() == model.spec.dims else maps
    if len(maps) != len(images) or maps.dim() != model.spec.dims + 1:
        raise StudioError(f"Give one map per image ({len(images)}, each [{', '.join('DHW'[-model.spec.dims:])}]), "
                          f"not maps of shape {list(maps.shape)}.")
    with attribution_mode(model.module):
        inputs = resize_to_input(images, model.spec).detach()
        targets = resolve_targets(model, target, inputs, batch_size)
        default = "blurred" if model.spec.dims == 2 else "black"
        starts = baselines(default if baseline is None else baseline, inputs, model.spec, None)
        ranked = resample(maps[:, None].float().to(inputs), model.spec.size)[:, 0].flatten(1)
        generator = torch.Generator().manual_seed(seed)
        jitter = torch.rand(ranked.shape[1], generator=generator).to(ranked)  # ties in a seeded random order
        order = torch.argsort(torch.stack([r + jitter * 1e-6 * (r.abs().max() + 1e-12) for r in ranked]), dim=1,
                              descending=True)
        pixels = order.shape[1]
        counts = torch.linspace(0, pixels, steps + 1).round().long()
        curves = {name: torch.empty(len(inputs), steps + 1) for name in METRICS}
        for i, (image, start, target) in enumerate(zip(inputs, starts, targets)):
            rank = torch.empty(pixels, dtype=torch.long, device=image.device)
            rank[order[i]] = torch.arange(pixels, device=image.device)
            removed = (rank[None] < counts.to(image.device)[:, None]).view(steps + 1, 1, *model.spec.size).float()
            deleted = image + (start - image) * removed          # the top pixels set to the baseline
            inserted = start + (image - start) * removed         # the top pixels put back on the baseline
            together = torch.cat([deleted, inserted])
            values = _score(model, together, [target] * len(together), batch_size).cpu()
            curves["deletion"][i], curves["insertion"][i] = values[:steps + 1], values[steps + 1:]
    return Faithfulness(counts.float() / pixels, curves["deletion"], curves["insertion"], targets)
