"""``attribute`` and ``explain``: heat maps of where a class or unit looks in photos, for any method.

Images are resized to the model's input size (as ``StudioModel.__call__`` does), attributed there, and the
maps resized back bilinearly to each image's resolution. Maps are raw (not normalised), so they compare
across images and methods; :mod:`studio.display` does the display normalisation. Each method's options
are its own keyword arguments: :func:`method_options` reads them from its signature.
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import os
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from studio.attribution.attention import attention, attention_rollout
from studio.attribution.cam import gradcam, gradcam_plus_plus
from studio.attribution.gradients import (gradient_x_input, integrated_gradients, saliency, smoothgrad,
                                          smoothgrad_squared, vargrad)
from studio.attribution.machinery import as_batch, attribution_mode, logits
from studio.attribution.perturbation import kernel_shap, lime, occlusion, rise
from studio.checks import SEED_LIMIT, check_number
from studio.errors import StudioError
from studio.hooks import OUTPUT
from studio.memory import fitting_chunk
from studio.models import InputSpec, StudioModel, resample, resize_to_input
from studio.targets import Target, class_target, parse_target

#: Every method by name; each is ``fn(model, inputs, targets, *, options...) -> Attribution fields``.
METHOD_FUNCTIONS: dict[str, Callable[..., dict]] = {
    "saliency": saliency, "gradient_x_input": gradient_x_input, "smoothgrad": smoothgrad,
    "smoothgrad_squared": smoothgrad_squared, "vargrad": vargrad,
    "integrated_gradients": integrated_gradients, "gradcam": gradcam, "gradcam++": gradcam_plus_plus,
    "attention": attention, "attention_rollout": attention_rollout,
    "occlusion": occlusion, "rise": rise, "lime": lime, "kernel_shap": kernel_shap,
}
METHODS = tuple(METHOD_FUNCTIONS)
CAM_METHODS = ("gradcam", "gradcam++")
#: Methods whose maps are signed (positive and negative evidence); the others are non-negative.
SIGNED_METHODS = ("gradient_x_input", "integrated_gradients", "occlusion", "lime", "kernel_shap")
#: Methods that only read scores of perturbed copies (model-agnostic: no gradients, any model).
PERTURBATION_METHODS = ("occlusion", "rise", "lime", "kernel_shap")
_ALIASES = {"ig": "integrated_gradients", "grad_cam": "gradcam", "grad_cam++": "gradcam++", "gradcampp": "gradcam++",
            "gradcam_pp": "gradcam++", "input_x_gradient": "gradient_x_input", "smooth_grad": "smoothgrad",
            "smoothgrad_sq": "smoothgrad_squared", "sg_sq": "smoothgrad_squared", "smoothgrad2": "smoothgrad_squared",
            "var_grad": "vargrad",
            "kernelshap": "kernel_shap", "shap": "kernel_shap"}

TargetSpec = int | str | Target | None
#: The range of each numeric method option (type checks come from the signatures): counts bounded where more
#: would only cost time (Integrated Gradients at 4096 Gauss-Legendre points is exact to float precision).
OPTION_LIMITS = {
    "steps": {"minimum": 1, "maximum": 4096}, "samples": {"minimum": 1, "maximum": 4096},
    "batch_size": {"minimum": 1, "maximum": 4096}, "noise": {"minimum": 0, "maximum": 1},
    "blur_sigma": {"positive": True, "maximum": 1000}, "seed": {"minimum": 0, "maximum": SEED_LIMIT - 1},
    "head": {"minimum": 0}, "baseline": {"minimum": 0, "maximum": 1},
    "window": {"minimum": 1, "maximum": 4096}, "stride": {"minimum": 1, "maximum": 4096},
    "cells": {"minimum": 1, "maximum": 256}, "keep": {"positive": True, "maximum": 1},
    "segments": {"minimum": 2, "maximum": 4096}, "kernel_width": {"positive": True, "maximum": 100},
    "ridge": {"minimum": 0, "maximum": 1e6},
}


@dataclass
class Attribution:
    """Maps and what they explain.

    ``maps``: ``[B, H, W]`` float32 at the images' resolution, on the images' device. ``targets``: the
    resolved target of each image (``.description`` reads ``logits:285 "Egyptian cat"``). ``layer``: the
    Grad-CAM layer (a list, one per image, when the images' targets live in different layers).
    ``scores``: the explained scalar ``f(x)`` per image. For Integrated Gradients, ``baseline_scores``
    ``f(x')`` and ``completeness_error`` ``|sum(map) - (f(x) - f(x'))| / |f(x) - f(x')|`` per image, measured
    on the maps at model resolution (resizing changes the sum by the area ratio). ``per_channel``: the
    gradient methods' attribution per colour channel, ``[B, 3, h, w]`` at the model's input size.
    """

    maps: torch.Tensor
    method: str
    targets: list[Target]
    layer: str | list[str] | None = None
    scores: torch.Tensor | None = None
    baseline_scores: torch.Tensor | None = None
    completeness_error: torch.Tensor | None = None
    per_channel: torch.Tensor | None = None


def method_name(method: str) -> str:
    """The canonical name of a method (aliases such as ``ig`` accepted); an unknown one is an error."""
    name = str(method).strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in METHODS:
        close = difflib.get_close_matches(name, [*METHODS, *_ALIASES], n=1)
        hint = f"did you mean {_ALIASES.get(close[0], close[0])!r}? " if close else ""
        raise StudioError(f"Unknown attribution method {method!r}: {hint}use one of {', '.join(METHODS)} "
                          "(saliency is the absolute gradient).")
    return name


def method_options(method: str) -> dict[str, object]:
    """A method's options with their defaults, read from its signature."""
    parameters = inspect.signature(METHOD_FUNCTIONS[method_name(method)]).parameters.values()
    return {p.name: p.default for p in parameters if p.kind == p.KEYWORD_ONLY}


def attribute(model: StudioModel | nn.Module, images: torch.Tensor | str | os.PathLike,
              target: TargetSpec | Sequence[TargetSpec] = None, method: str = "saliency",
              layer: str | None = None, **options) -> torch.Tensor:
    """Heat maps ``[B, H, W]`` (float32, each image's own resolution) of where ``target`` looks in ``images``.

    ``images``: ``[B, C, *size]`` or ``[C, *size]`` floats in ``[0, 1]`` (C and a 2D or 3D size as the model
    takes them), or an image file path; maps are ``[B, *size]``.
    ``target``: None (each image's top-1 class), a class index or label, a studio target string
    (``"blocks.5:17"``, ``"blocks.5:17@3,4"``, ``"logits:285"``), or a list with one per image.
    ``method``: one of :data:`METHODS`. ``layer``: the Grad-CAM layer (default: the last convolutional block,
    or the target's own layer for a unit target). ``options``: the method's own (:func:`method_options`).
    """
    return explain(model, images, target, method, layer, **options).maps


def explain(model: StudioModel | nn.Module, images: torch.Tensor | str | os.PathLike,
            target: TargetSpec | Sequence[TargetSpec] = None, method: str = "saliency", layer: str | None = None,
            **options) -> Attribution:
    """:func:`attribute` with the details: resolved targets, scores, Grad-CAM's layer and Integrated
    Gradients' completeness error. An option the method does not take is an error naming those it does."""
    model = model if isinstance(model, StudioModel) else StudioModel(model, InputSpec(), type(model).__name__)
    method = method_name(method)
    if layer is not None:
        options["layer"] = layer
    check_options(method, options)
    images, out_device = as_batch(images, model)
    size = tuple(images.shape[2:])
    with attribution_mode(model.module):
        inputs = resize_to_input(images, model.spec).detach()
        wanted = options.get("batch_size", method_options(method)["batch_size"])
        targets = resolve_targets(model, target, inputs, wanted)
        options["batch_size"] = fitting_chunk(model, [t.key for t in targets], wanted)
        fields = METHOD_FUNCTIONS[method](model, inputs, targets, **options)
    maps = torch.stack([_resize_map(heat, size) for heat in fields.pop("maps")]).to(out_device, torch.float32)
    return Attribution(maps, method, targets, **fields)


def resolve_targets(model: StudioModel, target, inputs: torch.Tensor, batch_size: int) -> list[Target]:
    """One target per image (``inputs`` at the model's input size); ``None`` (or the whole output layer)
    becomes that image's top-1 class."""
    count = len(inputs)
    if isinstance(target, (list, tuple)):
        if len(target) != count:
            raise StudioError(f"Got {len(target)} targets for {count} images; give one target or one per image.")
        parsed = [_parse_one(model, t) for t in target]
    else:
        parsed = [_parse_one(model, target)] * count
    missing = [i for i, t in enumerate(parsed) if t is None]
    if missing:
        class_target(model, 0)  # the model must output classes to pick its top-1
        top = logits(model, inputs[missing], fitting_chunk(model, [""], batch_size)).argmax(1).tolist()
        for i, index in zip(missing, top):
            parsed[i] = class_target(model, index)
    return parsed


def _parse_one(model: StudioModel, spec: TargetSpec) -> Target | None:
    if spec is None:
        return None
    parsed = parse_target(int(spec) if isinstance(spec, np.integer) else spec, model)
    return None if parsed.layer == OUTPUT and parsed.whole_layer else parsed


def _is_a(value, kind: type) -> bool:
    """Whether ``value`` passes as ``kind`` (any integer for int, any real for float; a bool is neither)."""
    if kind in (int, float):
        return isinstance(value, numbers.Integral if kind is int else numbers.Real) and not isinstance(value, bool)
    return value is None if kind is type(None) else isinstance(value, kind)


def check_options(method: str, options: dict) -> None:
    """Each option is one the method takes, of the type its signature names, in its range."""
    allowed = method_options(method)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise StudioError(f"Option(s) {', '.join(map(repr, unknown))} do not apply to {method}: it takes "
                          f"{', '.join(allowed)}.")
    hints = typing.get_type_hints(METHOD_FUNCTIONS[method])
    for name, value in options.items():
        kinds = typing.get_args(hints[name]) or (hints[name],)
        if not any(_is_a(value, kind) for kind in kinds):
            names = " or ".join(kind.__name__ for kind in kinds)
            raise StudioError(f"Option {name} must be {names}, not {value!r}.")
    for name, value in options.items():
        if name in OPTION_LIMITS and _is_a(value, float):
            check_number(f"Option {name}", value, int if _is_a(value, int) else float, **OPTION_LIMITS[name])


def _resize_map(heat: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Bi- or trilinear resize of one ``[h, w]`` (``[d, h, w]``) map to ``size`` (no-op when it matches)."""
    return resample(heat[None, None], size)[0, 0]
