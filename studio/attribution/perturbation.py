"""Perturbation methods, model-agnostic: they only read the target's score on altered copies of an image, built
and scored ``batch_size`` at a time on the model's device. Occlusion (Zeiler & Fergus 2014, captum's
conventions), RISE (Petsiuk et al. 2018), LIME (Ribeiro et al. 2016, on SLIC superpixels as its image explainer
does) and KernelSHAP (Lundberg & Lee 2017, captum's sampling). Written here rather than called from captum so
that every method batches its perturbations, takes any unit target and 2D or 3D inputs; tests check them against
captum's on the same masks and seeds.

Each returns the fields of an :class:`~studio.attribution.api.Attribution`: maps at the model's input size
(positive: the region raises the score) and the scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from studio.attribution.gradients import baselines
from studio.attribution.machinery import scores
from studio.errors import StudioError
from studio.models import StudioModel
from studio.targets import Target

#: The weight captum's KernelSHAP gives the empty and the full coalition, so the fit all but satisfies
#: efficiency (the values sum to f(x) - f(baseline)).
FULL_WEIGHT = 1e6


def _each_masked(model: StudioModel, image: torch.Tensor, start: torch.Tensor, target: Target, count: int,
                 batch_size: int, masks_for) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(masks, scores)`` chunk by chunk over ``count`` perturbations: ``masks_for(first, stop)`` gives masks
    ``[n, 1, *size]`` (1: keep the image, 0: the baseline ``start``), scored on ``start + (image - start) *
    mask`` ``batch_size`` copies at a time, so memory does not grow with ``count``."""
    for first in range(0, count, batch_size):
        masks = masks_for(first, min(count, first + batch_size)).to(image)
        yield masks, scores(model, start + (image - start) * masks, [target] * len(masks), batch_size)


def occlusion(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *, window: int = 16,
              stride: int = 8, baseline: str | float | torch.Tensor = 0.5, batch_size: int = 16) -> dict:
    """The score's drop when a ``window``-pixel square (a cube for volumes) slides over the image by ``stride``
    and is set to the ``baseline``, averaged over the windows covering each pixel (0 where none does)."""
    size = tuple(inputs.shape[2:])
    if window > min(size):
        raise StudioError(f"The occlusion window ({window} px) is larger than the model's input {list(size)}.")
    axes = [torch.arange(0, n - window + 1, stride) for n in size]
    corners = torch.cartesian_prod(*axes).view(-1, len(size))

    def masks_for(first: int, stop: int) -> torch.Tensor:
        masks = torch.ones(stop - first, 1, *size)
        for mask, corner in zip(masks, corners[first:stop].tolist()):
            mask[(slice(None), *(slice(c, c + window) for c in corner))] = 0
        return masks

    covered = 1.0
    for axis, n in zip(axes, size):  # windows covering each pixel: a product of one count per axis
        line = torch.zeros(n)
        for c in axis.tolist():
            line[c:c + window] += 1
        covered = torch.tensordot(torch.as_tensor(covered), line, dims=0)
    starts = baselines(baseline, inputs, model.spec, None)
    values = scores(model, inputs, targets, batch_size)
    maps = []
    for image, start, target, value in zip(inputs, starts, targets, values):
        total = torch.zeros(size, device=inputs.device)
        for masks, masked in _each_masked(model, image, start, target, len(corners), batch_size, masks_for):
            total += torch.tensordot(value - masked, 1 - masks[:, 0], dims=1)
        maps.append(total / covered.to(total).clamp_min(1))
    return {"maps": torch.stack(maps), "scores": values}


def rise_masks(count: int, size: tuple[int, ...], cells: int, keep: float, generator: torch.Generator) -> torch.Tensor:
    """RISE's masks ``[count, 1, *size]``: a ``cells``-per-side grid of cells kept with probability ``keep``,
    upsampled (bi- or trilinearly) to one cell more than ``size`` and cut at a random shift within a cell."""
    dims = len(size)
    cell = [math.ceil(n / cells) for n in size]
    grid = (torch.rand(count, 1, *[cells] * dims, generator=generator) < keep).float()
    mode = "bilinear" if dims == 2 else "trilinear"
    up = F.interpolate(grid, size=[(cells + 1) * c for c in cell], mode=mode, align_corners=False)
    shifts = [torch.randint(0, c, (count,), generator=generator) for c in cell]
    masks = torch.empty(count, 1, *size)
    for i in range(count):
        masks[i] = up[(i, slice(None), *(slice(int(s[i]), int(s[i]) + n) for s, n in zip(shifts, size)))]
    return masks


def rise(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *, samples: int = 2000,
         cells: int = 7, keep: float = 0.5, seed: int = 0, baseline: str | float | torch.Tensor = 0.5,
         batch_size: int = 16) -> dict:
    """RISE's saliency ``E[f(x with mask M) M] / keep``, the score each pixel keeps when it is kept, over
    ``samples`` random smooth masks of ``cells`` cells a side (drawn from ``seed``, the same for every image),
    estimated as ``mean(f) + sum_i (f_i - mean(f)) M_i / (samples * keep)``: the paper's sum with the mean score
    as a control variate. Both estimate the same map (``E[M] = keep`` per pixel), but the paper's also carries
    ``mean(f)`` times the masks' own uneven coverage, sampling noise that at a few hundred masks outweighs the
    signal. Measured on chelsea with 256 masks: two seeds' maps correlate at 0.15 by the paper's sum, 0.69 by
    this one; and a fully randomised model's map with the trained one's at 0.96 by the paper's sum (the masks,
    not the model), -0.12 by this one."""
    size = tuple(inputs.shape[2:])
    starts = baselines(baseline, inputs, model.spec, None)
    maps = []
    for image, start, target in zip(inputs, starts, targets):
        generator = torch.Generator().manual_seed(seed)  # the masks of a chunk follow those before it
        weighted, coverage, total = torch.zeros(size, device=inputs.device), torch.zeros(size, device=inputs.device), 0.0
        for masks, values in _each_masked(model, image, start, target, samples, batch_size,
                                          lambda first, stop: rise_masks(stop - first, size, cells, keep, generator)):
            weighted += torch.tensordot(values.float(), masks[:, 0], dims=1)
            coverage += masks[:, 0].sum(0)
            total += values.float().sum().item()
        mean = total / samples
        maps.append(mean + (weighted - mean * coverage) / (samples * keep))
    return {"maps": torch.stack(maps), "scores": scores(model, inputs, targets, batch_size)}


def superpixels(image: torch.Tensor, segments: int, rgb: bool) -> torch.Tensor:
    """SLIC superpixels (scikit-image) of one image ``[C, *size]`` in ``[0, 1]``: labels ``[*size]`` from 0, in
    Lab colour for RGB photos, on the raw channels otherwise (and for volumes)."""
    from skimage.segmentation import slic

    array = image.detach().float().cpu().movedim(0, -1).numpy().astype(np.float64)
    labels = slic(array, n_segments=segments, compactness=10 if rgb else 0.1, start_label=0, channel_axis=-1,
                  convert2lab=rgb)
    return torch.from_numpy(np.unique(labels, return_inverse=True)[1].reshape(labels.shape))


def _coalition_masks(coalitions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Pixel masks ``[N, 1, *size]`` of superpixel coalitions ``[N, S]`` (1: the superpixel shows the image)."""
    return coalitions.float()[:, labels][:, None]


def lime_coalitions(count: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """LIME's samples: each superpixel on with probability one half."""
    return torch.randint(0, 2, (count, features), generator=generator)


def lime_weights(coalitions: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """LIME's image kernel: ``sqrt(exp(-d^2 / width^2))`` of the cosine distance ``d`` between a sample and the
    whole image (all superpixels on)."""
    on = coalitions.double()
    cosine = on.sum(1) / (on.norm(dim=1) * math.sqrt(on.shape[1])).clamp_min(1e-12)
    return torch.exp(-((1 - cosine) ** 2) / kernel_width ** 2).sqrt()


def shap_coalitions(count: int, features: int, generator: torch.Generator) -> torch.Tensor:
    """KernelSHAP's samples as captum draws them: the full and the empty coalition, then coalitions whose size
    ``k`` follows the Shapley kernel ``(M - 1) / (k (M - k))`` and whose members are uniform."""
    sizes = torch.arange(1, features, dtype=torch.float64)
    drawn = torch.multinomial((features - 1) / (sizes * (features - sizes)), max(count - 2, 0), replacement=True,
                              generator=generator) + 1 if features > 1 else torch.zeros(0, dtype=torch.long)
    rows = [torch.ones(features, dtype=torch.long), torch.zeros(features, dtype=torch.long)]
    for k in drawn.tolist():
        row = torch.zeros(features, dtype=torch.long)
        row[torch.randperm(features, generator=generator)[:k]] = 1
        rows.append(row)
    return torch.stack(rows[:count])


def weighted_linear_fit(coalitions: torch.Tensor, values: torch.Tensor, weights: torch.Tensor,
                        ridge: float = 0.0) -> torch.Tensor:
    """Coefficients of ``values ~ coalitions @ w + b`` by weighted least squares (a ridge penalty ``ridge`` on
    ``w``, not on ``b``), as scikit-learn's ``Ridge``/``LinearRegression`` with ``sample_weight`` fit it."""
    x, y, w = coalitions.double(), values.double().cpu(), weights.double()
    x_mean, y_mean = (w[:, None] * x).sum(0) / w.sum(), (w * y).sum() / w.sum()
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ (w[:, None] * xc) + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.lstsq(gram, xc.T @ (w * yc)).solution


def _superpixel_method(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], samples: int,
                       segments: int, seed: int, baseline, batch_size: int, draw, weigh, ridge: float) -> dict:
    """LIME and KernelSHAP: per image, superpixels, coalitions drawn by ``draw``, the target's score on each
    coalition's image, and a ``weigh``-weighted linear fit whose coefficients paint the superpixels."""
    rgb = model.spec.channels == 3 and model.spec.dims == 2
    starts = baselines(baseline, inputs, model.spec, None)
    maps = []
    for image, start, target in zip(inputs, starts, targets):
        labels = superpixels(image, segments, rgb)
        features = int(labels.max()) + 1
        coalitions = draw(samples, features, torch.Generator().manual_seed(seed))
        chunks = _each_masked(model, image, start, target, samples, batch_size,
                              lambda first, stop: _coalition_masks(coalitions[first:stop], labels))
        values = torch.cat([chunk for _, chunk in chunks])
        coefficients = weighted_linear_fit(coalitions, values, weigh(coalitions), ridge)
        maps.append(coefficients.float()[labels].to(inputs.device))
    return {"maps": torch.stack(maps), "scores": scores(model, inputs, targets, batch_size)}


def lime(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *, samples: int = 1000,
         segments: int = 50, kernel_width: float = 0.25, ridge: float = 1.0, seed: int = 0,
         baseline: str | float | torch.Tensor = 0.5, batch_size: int = 16) -> dict:
    """Each superpixel's coefficient in a ridge fit (penalty ``ridge``) of the score on ``samples`` random
    coalitions of about ``segments`` SLIC superpixels (the others set to the ``baseline``), each weighted by
    LIME's kernel of width ``kernel_width`` on its cosine distance to the whole image."""
    return _superpixel_method(model, inputs, targets, samples, segments, seed, baseline, batch_size, lime_coalitions,
                              lambda coalitions: lime_weights(coalitions, kernel_width), ridge)


def kernel_shap(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *, samples: int = 1000,
                segments: int = 50, seed: int = 0, baseline: str | float | torch.Tensor = 0.5,
                batch_size: int = 16) -> dict:
    """Each superpixel's Shapley value, estimated by KernelSHAP: a least-squares fit of the score on
    ``samples`` coalitions drawn by the Shapley kernel (the full and empty ones weighted so heavily that the
    values sum to ``f(x) - f(baseline)``); exact for a score that is linear in the superpixels."""

    def weigh(coalitions: torch.Tensor) -> torch.Tensor:
        weights = torch.ones(len(coalitions), dtype=torch.float64)
        ends = (coalitions.sum(1) == 0) | (coalitions.sum(1) == coalitions.shape[1])
        return torch.where(ends, torch.tensor(FULL_WEIGHT, dtype=torch.float64), weights)

    return _superpixel_method(model, inputs, targets, samples, segments, seed, baseline, batch_size,
                              shap_coalitions, weigh, 0.0)
