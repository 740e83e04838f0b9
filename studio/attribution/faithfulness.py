"""Is a heat map faithful to the model? Deletion and insertion (Petsiuk et al. 2018): remove the pixels a map
ranks highest, a fraction at a time, and watch the score fall (deletion: a faithful map makes it fall fast, a
low area under the curve); or start from the baseline and put them back (insertion: a high area). ROAD (Rong
et al. 2022) removes them by imputing from their neighbours instead, so the altered images stay close to the
ones the model knows (a scatter of constant pixels does not).

The score is the class's softmax probability for a class target (as in the paper) and what the target reads
for a unit. Pixels are ranked at the model's input size; ties (a ReLU'd Grad-CAM's zeros) are broken by a seeded
random order, the same for every method, so a flat region is removed in random order rather than by position.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from studio.attribution.api import TargetSpec, resolve_targets
from studio.attribution.gradients import baselines
from studio.attribution.machinery import as_batch, attribution_mode, evaluate
from studio.checks import check_number
from studio.errors import StudioError
from studio.hooks import OUTPUT
from studio.models import StudioModel, resample, resize_to_input
from studio.targets import Target

METRICS = ("deletion", "insertion")  # the curves of deletion_insertion
#: Fractions of the pixels in the deletion and insertion scores shown beside every heat map (the viewer's layers,
#: ``studio attribute``): 34 forward passes a map.
QUICK_STEPS = 16


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


def auc_summary(deletion: float, insertion: float) -> str:
    """Deletion and insertion AUCs in a few words, with which way is faithful."""
    return f"deletion AUC {deletion:.3g} (low is faithful), insertion AUC {insertion:.3g} (high is faithful)"


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


def _one_map_per_image(model: StudioModel, images, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The images as the model takes them (:func:`as_batch`) and one map per image ``[B, *size]``; anything else
    is one sentence."""
    images, _ = as_batch(images, model)
    maps = maps[None] if maps.dim() == model.spec.dims else maps
    if len(maps) != len(images) or maps.dim() != model.spec.dims + 1:
        raise StudioError(f"Give one map per image ({len(images)}, each [{', '.join('DHW'[-model.spec.dims:])}]), "
                          f"not maps of shape {list(maps.shape)}.")
    return images, maps


def _ranked_pixels(model: StudioModel, inputs: torch.Tensor, maps: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """``[B, pixels]``: each map's pixels at the model's input size, highest first; ties (a ReLU'd map's zeros)
    in one seeded random order drawn from ``generator``, the same for every map."""
    ranked = resample(maps[:, None].float().to(inputs), model.spec.size)[:, 0].flatten(1)
    jitter = torch.rand(ranked.shape[1], generator=generator).to(ranked)
    scale = ranked.abs().amax(1, keepdim=True) + 1e-12
    return torch.argsort(ranked + jitter * 1e-6 * scale, dim=1, descending=True)


def deletion_insertion(model: StudioModel, images: torch.Tensor | str | os.PathLike, maps: torch.Tensor,
                       target: TargetSpec | Sequence[TargetSpec] = None, *, steps: int = 32,
                       baseline: str | float | torch.Tensor | None = None, seed: int = 0,
                       batch_size: int = 16) -> Faithfulness:
    """Deletion and insertion curves of ``maps`` (``[B, *size]`` at any resolution, one per image, e.g. from
    :func:`studio.attribute`) for ``target`` (as :func:`studio.attribute` takes it) on ``images``: ``steps``
    equal fractions of the pixels, each removed to (or restored from) the ``baseline`` (``black``, ``blurred``,
    a grey level or images; default blurred for 2D images, black for volumes, which have no blur here)."""
    check_number("steps", steps, int, minimum=1, maximum=4096)
    images, maps = _one_map_per_image(model, images, maps)
    with attribution_mode(model.module):
        inputs = resize_to_input(images, model.spec).detach()
        targets = resolve_targets(model, target, inputs, batch_size)
        default = "blurred" if model.spec.dims == 2 else "black"
        starts = baselines(default if baseline is None else baseline, inputs, model.spec, None)
        order = _ranked_pixels(model, inputs, maps, torch.Generator().manual_seed(seed))
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


#: Neighbour weights of ROAD's noisy linear imputation (Rong et al. 2022): direct neighbours count twice as
#: much as diagonal ones.
NEIGHBOURS = [((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def noisy_linear_impute(image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` ``[C, H, W]`` with the ``removed`` pixels (``[H, W]`` bool) replaced by ROAD's imputation:
    each the weighted mean of its neighbours (:data:`NEIGHBOURS`, removed ones included, so one sparse linear
    system), plus Gaussian noise of std ``noise``, so that the removed pixels' places leak no information.
    A linear ramp is imputed exactly away from the border."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width = removed.shape
    mask = removed.cpu().numpy()
    count = int(mask.sum())
    if count == 0:
        return image.clone()
    values = image.detach().double().cpu().numpy().reshape(image.shape[0], -1)
    index = -np.ones(height * width, dtype=np.int64)
    flat = np.flatnonzero(mask)
    index[flat] = np.arange(count)
    ys, xs = np.divmod(flat, width)
    rows, columns, entries = [], [], []
    diagonal = np.zeros(count)
    rhs = np.zeros((count, image.shape[0]))
    for (dy, dx), weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        unknown = np.arange(count)[inside]
        neighbour = ny[inside] * width + nx[inside]
        diagonal[unknown] += weight
        also_removed = index[neighbour] >= 0
        rows.append(unknown[also_removed])
        columns.append(index[neighbour[also_removed]])
        entries.append(np.full(int(also_removed.sum()), -weight))
        np.add.at(rhs, unknown[~also_removed], weight * values[:, neighbour[~also_removed]].T)
    rows.append(np.arange(count))
    columns.append(np.arange(count))
    entries.append(diagonal)
    system = coo_matrix((np.concatenate(entries), (np.concatenate(rows), np.concatenate(columns))),
                        shape=(count, count)).tocsc()
    solved = np.asarray(spsolve(system, rhs)).reshape(count, -1)
    out = image.detach().clone()
    filled = torch.from_numpy(solved.T).to(out)
    if noise:
        filled = filled + noise * torch.randn(filled.shape, generator=generator).to(out)
    out.view(image.shape[0], -1)[:, torch.from_numpy(flat).to(out.device)] = filled
    return out


@dataclass
class Road:
    """ROAD's curves per image (``[B, len(fractions)]``): the score with each fraction of the pixels removed
    and imputed, most relevant first (``morf``: a faithful map makes it fall fast) and least relevant first
    (``lerf``: it stays high); and their areas over the fractions."""

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    targets: list[Target]

    @property
    def morf_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.morf, self.fractions, dim=1)

    @property
    def lerf_auc(self) -> torch.Tensor:
        return torch.trapezoid(self.lerf, self.fractions, dim=1)


def road(model: StudioModel, images: torch.Tensor | str | os.PathLike, maps: torch.Tensor,
         target: TargetSpec | Sequence[TargetSpec] = None, *, fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
         noise: float = 0.01, seed: int = 0, batch_size: int = 16) -> Road:
    """ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution Methods"): the
    retraining-free successor of ROAR. The pixels a map ranks highest (MoRF) or lowest (LeRF) are removed
    and filled by :func:`noisy_linear_impute` rather than a constant, which keeps the inputs close to the
    images the model knows, so the curves measure the information removed. 2D images."""
    if model.spec.dims != 2:
        raise StudioError("ROAD imputes 2D images; for volumes use deletion_insertion.")
    images, maps = _one_map_per_image(model, images, maps)
    wanted = torch.tensor([float(f) for f in fractions])
    if not len(wanted) or (wanted <= 0).any() or (wanted >= 1).any():
        raise StudioError(f"ROAD's fractions must lie strictly between 0 and 1, not {list(fractions)}.")
    with attribution_mode(model.module):
        inputs = resize_to_input(images, model.spec).detach()
        targets = resolve_targets(model, target, inputs, batch_size)
        generator = torch.Generator().manual_seed(seed)  # the tie order, then the imputation noise
        order = _ranked_pixels(model, inputs, maps, generator)
        curves = {"morf": torch.empty(len(inputs), len(wanted)), "lerf": torch.empty(len(inputs), len(wanted))}
        pixels = order.shape[1]
        for i, (image, target) in enumerate(zip(inputs, targets)):
            imputed = {name: [] for name in curves}
            for fraction in wanted.tolist():
                count = round(fraction * pixels)
                for name, chosen in (("morf", order[i, :count]), ("lerf", order[i, pixels - count:])):
                    removed = torch.zeros(pixels, dtype=torch.bool, device=image.device)
                    removed[chosen] = True
                    imputed[name].append(noisy_linear_impute(image, removed.view(model.spec.size), noise, generator))
            for name, batch in imputed.items():
                curves[name][i] = _score(model, torch.stack(batch), [target] * len(batch), batch_size).cpu()
    return Road(wanted, curves["morf"], curves["lerf"], targets)
