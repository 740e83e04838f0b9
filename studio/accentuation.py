"""Feature accentuation (Hamblin et al. 2024, the faccent recipe): start from a photo and optimise a unit through
the usual random transforms, while a penalty keeps the image close to the photo in an early layer's features.
The result shows what in *this* photo the unit responds to, rather than a picture of the unit from noise.

The penalty reads the early layer on the optimised image as it is (untransformed, resized to the model's input),
so it compares features at the same places as the photo's; it is the mean squared difference relative to the
photo's own mean square, so ``weight`` does not depend on the layer's scale.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from studio.attribution.api import TargetSpec
from studio.attribution.machinery import as_batch, attribution_mode
from studio.checks import check_number
from studio.engine import RenderResult, objective_for, render, unit_values
from studio.errors import StudioError
from studio.hooks import forward_to
from studio.io import fit
from studio.models import StudioModel, resize_to_input
from studio.objectives import IMAGE, Objective
from studio.settings import RenderSettings
from studio.targets import Target, layer_info, layer_key, module_of


@dataclass
class Accentuation:
    """The accentuated render and its honest numbers: the unit's value on the photo and on the render, and
    the render's distance to the photo in pixels (root mean square, images in ``[0, 1]``) and in the early
    layer's features (relative mean square, as the penalty measures it)."""

    result: RenderResult
    layer: str
    photo_value: float
    value: float
    pixel_distance: float
    feature_distance: float

    @property
    def gain(self) -> float:
        """How many times the photo's value the render reaches (NaN when the photo's value is not positive,
        where a ratio says nothing)."""
        return self.value / self.photo_value if self.photo_value > 0 else float("nan")


def default_layer(model: StudioModel) -> str:
    """The early layer the penalty reads when none is named: of the spatial outputs of second-level modules
    (``blocks.3``, ``layer2.1``) in forward order, the one a sixth of the way through (``blocks.1`` of
    EfficientNet-Lite0, ``layer1.1`` of a ResNet-18); any spatial output when the model has none of those."""
    names = [name for name, shape in model.output_shapes.items() if len(shape) >= 3 and re.fullmatch(r"[^.]+\.\d+", name)]
    names = names or [name for name, shape in model.output_shapes.items() if name and len(shape) >= 3]
    if not names:
        raise StudioError(f"{model.name} has no spatial layer for the accentuation penalty; name one with layer=.")
    return names[len(names) // 6]


def feature_distance(model: StudioModel, layer: str, photo: torch.Tensor) -> Objective:
    """``mean((phi(x) - phi(photo))^2) / mean(phi(photo)^2)`` per image, ``phi`` the model's ``layer`` on the
    image as optimised (before transforms), ``photo`` ``[1, C, *size]`` at the model's input size."""
    path = module_of(model, layer_key(model, layer))
    with torch.no_grad():
        reference = forward_to(model.module, model.spec.normalise(photo), [path])[path].float()
    scale = reference.pow(2).mean().clamp_min(1e-12)

    def value(acts) -> torch.Tensor:
        inputs = model.spec.normalise(resize_to_input(acts[IMAGE], model.spec))
        features = forward_to(model.module, inputs, [path])[path].float()
        return (features - reference.to(features.device)).pow(2).flatten(1).mean(1) / scale
    return Objective(value, f"feature_distance({layer})")


@dataclass
class AccentuationPlan:
    """What an accentuation renders: the objective (the unit minus the weighted penalty), the photo cropped to
    the render's square size ``[C, S, S]`` on the model's device as its start, the unit and the penalty."""

    objective: Objective
    start: torch.Tensor
    target: Target
    penalty: Objective
    layer: str


def plan_accentuation(model: StudioModel, photo: torch.Tensor | str | os.PathLike, target: TargetSpec, *,
                      size: int, layer: str | None = None, weight: float = 50.0) -> AccentuationPlan:
    """The objective ``target - weight * feature_distance(layer)`` (:func:`feature_distance`; ``layer`` default
    :func:`default_layer`) and its start, ``photo`` (``[C, H, W]`` in ``[0, 1]`` or a file) cropped to ``size``."""
    check_number("weight", weight, minimum=0, maximum=1e6)
    images, _ = as_batch(photo, model)
    if len(images) != 1 or model.spec.dims != 2:
        raise StudioError("Accentuation starts from one 2D photo at a time.")
    unit, targets = objective_for(model, target)
    if targets is None or len(targets) != 1:
        raise StudioError(f"Accentuate one unit at a time, not {target!r}.")
    layer = layer or default_layer(model)
    if not layer_info(model, layer_key(model, layer)).spatial:
        raise StudioError(f"The accentuation layer {layer!r} has no spatial map; pick an early convolutional layer.")
    start = fit(images[0].cpu(), (size, size)).to(model.device)
    penalty = feature_distance(model, layer, resize_to_input(start[None], model.spec))
    return AccentuationPlan(unit - weight * penalty if weight else unit, start, targets[0], penalty, layer)


def measure_accentuation(model: StudioModel, plan: AccentuationPlan, result: RenderResult) -> Accentuation:
    """The numbers of a finished accentuation: the unit on the photo and on the render, and their distances."""
    photo_value, value = unit_values(model, [plan.target] * 2, torch.stack([plan.start.cpu(), result.images[0]])).tolist()
    with attribution_mode(model.module), torch.no_grad():
        distance = plan.penalty({IMAGE: result.images.to(model.device)})
    pixels = (result.images[0].to(plan.start.device) - plan.start).pow(2).mean().sqrt()
    return Accentuation(result, plan.layer, photo_value, value, float(pixels), float(distance[0]))


def accentuate(model: StudioModel, photo: torch.Tensor | str | os.PathLike, target: TargetSpec, *,
               layer: str | None = None, weight: float = 50.0, settings: RenderSettings | None = None,
               seed: int = 0, progress: bool = False, **options) -> Accentuation:
    """Accentuate ``target`` (one unit, as :func:`studio.render` takes it) in ``photo`` (``[C, H, W]`` in ``[0, 1]``
    or a file; cropped to the render's square side, the canvas when there is one): the render starts from the
    photo and maximises ``target - weight * feature_distance(layer)`` (:func:`plan_accentuation`). ``settings`` and ``options`` are
    :func:`studio.render`'s (``steps=``, ``lr=``...), ``seed`` that of the transforms.
    The default weight keeps chelsea a recognisable cat while blocks.4:3 reaches 56 times its value on the
    photo (128 steps, 128 px; weight 10: 98 times, the cat half gone)."""
    settings = (settings or RenderSettings()).updated(options)
    plan = plan_accentuation(model, photo, target, size=settings.side, layer=layer, weight=weight)
    result = render(model, plan.objective, settings, init=plan.start, batch=1, seed=seed, progress=progress)
    return measure_accentuation(model, plan, result)
