"""The model-randomisation test of Adebayo et al. 2018 ("Sanity Checks for Saliency Maps") as a score: a map
that explains what the model learned must change when the learned weights are destroyed. The layers are
redrawn in a cascade from the output towards the input, on a copy of the model; after each stage the map is
recomputed for the same target and compared with the trained model's by the Spearman rank correlation of the
absolute maps and by SSIM. Low is good: a method scoring near 1 draws the image, not the model.

Each parameter is redrawn from a Gaussian with its own tensor's mean and standard deviation, so activations
keep their scale through a deep network (a fresh ``reset_parameters`` would also reset batch-norm statistics
and make the randomised network's maps blow up or vanish for reasons that are not the method's). A constant
tensor holds no learned pattern and is left as it is.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from studio.attribution.api import Attribution, TargetSpec, explain
from studio.checks import check_number
from studio.errors import StudioError
from studio.models import StudioModel


@dataclass
class Randomisation:
    """Per image and cascade stage (``[B, len(stages)]``): the similarity of the randomised model's map to the
    trained model's; ``stages`` names the layer nearest the input redrawn by each stage (the last stage
    redraws every parameter)."""

    stages: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor

    @property
    def score(self) -> torch.Tensor:
        """The Spearman correlation with the fully randomised model's map, per image (lower is better)."""
        return self.spearman[:, -1]


def cascade(model: StudioModel, stages: int) -> list[list[str]]:
    """The modules holding parameters, output first, split into ``stages`` groups of near-equal size; the
    model's own parameters (``""``), used at the input, come last."""
    order = list(model.output_shapes)  # forward order of every named module
    holders = [name for name in order if name and any(True for _ in model.module.get_submodule(name)
                                                      .parameters(recurse=False))]
    if any(True for _ in model.module.parameters(recurse=False)):  # a ViT's class token and position embedding
        holders.insert(0, "")
    if not holders:
        raise StudioError(f"{model.name} has no parameters to randomise.")
    groups = np.array_split(np.array(holders[::-1], dtype=object), min(stages, len(holders)))
    return [list(group) for group in groups if len(group)]


def redraw(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Each of ``module``'s own parameters replaced by Gaussian draws with that tensor's mean and std."""
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            if parameter.numel() < 2:
                continue
            values = parameter.detach().float()
            spread = values.std()
            if spread == 0:
                continue
            noise = torch.randn(parameter.shape, generator=generator).to(values.device)
            parameter.copy_((values.mean() + spread * noise).to(parameter.dtype))


def rank_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """Spearman's rank correlation of two maps' absolute values (ties ranked by their mean rank); a constant map
    has no ranking, scored 0."""
    from scipy.stats import spearmanr

    a, b = (m.detach().abs().flatten().double().cpu().numpy() for m in (first, second))
    if a.min() == a.max() or b.min() == b.max():
        return 0.0
    return float(spearmanr(a, b).statistic)


def structural_similarity(first: torch.Tensor, second: torch.Tensor) -> float:
    """SSIM of two maps' absolute values, each scaled to ``[0, 1]`` (7-pixel windows, fewer on a small map)."""
    from skimage.metrics import structural_similarity as ssim

    a, b = (m.detach().abs().double().cpu().numpy() for m in (first, second))
    a, b = ((x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x) for x in (a, b))
    window = min(7, *a.shape)
    return float(ssim(a, b, data_range=1.0, win_size=window - (window % 2 == 0)))


def model_randomisation(model: StudioModel, images: torch.Tensor | str | os.PathLike, method: str = "gradcam",
                        target: TargetSpec | Sequence[TargetSpec] = None, *, stages: int = 4, seed: int = 0,
                        trained: Attribution | None = None, **options) -> Randomisation:
    """Adebayo et al.'s cascading randomisation of ``model`` (on a copy: ``model`` is untouched) in ``stages``
    steps, with ``method``'s map (and its ``options``) for ``target`` on ``images`` (as :func:`studio.attribute`
    takes them) compared with the trained model's after each step. The target is resolved on the trained model
    once (None: each image's top-1 class) and kept, so every map explains the same class or unit. ``trained``:
    the trained model's :func:`studio.explain` result for these images when already at hand."""
    check_number("stages", stages, int, minimum=1, maximum=256)
    trained = trained if trained is not None else explain(model, images, target, method, **options)
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    names, spearman, ssim = [], [], []
    for group in cascade(twin, stages):
        for name in group:
            redraw(twin.module.get_submodule(name), generator)
        maps = explain(twin, images, trained.targets, method, **options).maps
        names.append(group[-1] or "(the model)")
        spearman.append([rank_correlation(a, b) for a, b in zip(trained.maps, maps)])
        ssim.append([structural_similarity(a, b) for a, b in zip(trained.maps, maps)])
    del twin
    return Randomisation(names, torch.tensor(spearman).T.reshape(len(trained.maps), -1),
                         torch.tensor(ssim).T.reshape(len(trained.maps), -1))
