"""Attribution heat maps: where in a photo the model (or one of its units) looks.

``attribute(model, images, target, method)`` returns ``[B, H, W]`` float32 maps at each image's own
resolution, for the same models and target syntax as feature visualisation:

- ``saliency``: max over colour channels of ``|d score / d pixel|`` (Simonyan et al. 2014);
- ``gradient_x_input``: ``sum_c gradient * image`` (signed);
- ``smoothgrad``: the saliency map averaged over noisy copies (Smilkov et al. 2017);
- ``integrated_gradients``: ``sum_c (x - x') * mean gradient along the straight path`` (Sundararajan
  et al. 2017), signed; the map sums to ``f(x) - f(x')`` (see :func:`explain` for the error);
- ``gradcam`` / ``gradcam++``: class-weighted activation maps of a convolutional layer (Selvaraju et al.
  2017; Chattopadhay et al. 2018), ReLU'd and upsampled bilinearly.

The score explained is the raw logit of a class, or for a unit target (``blocks.5:17``,
``blocks.5:17@3,4``) that unit's activation: the channel's spatial mean or the one neuron. Images are
resized to the model's input size (as ``StudioModel.__call__`` does), attributed there, and the maps
resized back bilinearly. Maps are raw (not normalised), so they compare across images and methods;
:func:`display_map` and :func:`overlay` do the display normalisation.

Hooks exist only for one forward pass and only on the layers a target or Grad-CAM needs
(``studio.targets.capture``); the rest of the network is handed a clone of each hooked output, so a later
in-place op (``ReLU(inplace=True)``, ``out += identity``) cannot overwrite the activation being
differentiated. The model runs in eval mode with frozen parameters; its ``training`` and ``requires_grad``
flags are restored afterwards. Everything is batched in chunks of ``batch_size`` forward passes, so
memory is bounded whatever ``steps`` or ``samples`` are, and each image's map is independent of the
others in its batch.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from studio.errors import StudioError
from studio.models import InputSpec, StudioModel, resize_to_input
from studio.targets import LOGITS, OUTPUT, Target, forward_to, frozen, parse_target, resolve_layer

METHODS = ("saliency", "gradient_x_input", "smoothgrad", "integrated_gradients", "gradcam", "gradcam++")
CAM_METHODS = ("gradcam", "gradcam++")
#: Methods whose maps are signed (positive and negative evidence); the others are non-negative.
SIGNED_METHODS = ("gradient_x_input", "integrated_gradients")
_ALIASES = {"ig": "integrated_gradients", "grad_cam": "gradcam", "grad_cam++": "gradcam++", "gradcampp": "gradcam++",
            "gradcam_pp": "gradcam++", "input_x_gradient": "gradient_x_input", "smooth_grad": "smoothgrad",
            "gradient": "saliency"}
IG_RULES = ("gausslegendre", "riemann_middle")
#: Integrated Gradients steps by default. EfficientNet-Lite0's logit is a rough function along the path (ReLU6
#: kinks, and a jump of ~9 within the darkest 5 % of a black-baseline path): Gauss-Legendre needs ~256 points for
#: a completeness error under 2 % (measured 0.1-1.7 % on six photo/baseline pairs; 0.5-5.5 % at 128 steps).
DEFAULT_STEPS = 256

TargetSpec = int | str | Target | None


@dataclass
class Attribution:
    """Maps and what they explain.

    ``maps``: ``[B, H, W]`` float32 at the images' resolution, on the images' device. ``targets``: the
    resolved target of each image (e.g. ``logits:285 "Egyptian cat"``). ``layer``: the Grad-CAM layer (a list,
    one per image, when the images' unit targets live in different layers).
    ``scores``: the explained scalar ``f(x)`` per image. For Integrated Gradients, ``baseline_scores``
    ``f(x')`` and ``completeness_error`` ``|sum(map) - (f(x) - f(x'))| / |f(x) - f(x')|`` per image, measured
    on the maps at model resolution (resizing changes the sum by the area ratio). ``per_channel``: the
    gradient methods' attribution per colour channel, ``[B, 3, h, w]`` at the model's input size.
    """

    maps: torch.Tensor
    method: str
    targets: list[str]
    layer: str | list[str] | None = None
    scores: torch.Tensor | None = None
    baseline_scores: torch.Tensor | None = None
    completeness_error: torch.Tensor | None = None
    per_channel: torch.Tensor | None = None


def attribute(model: StudioModel | nn.Module, images: torch.Tensor | str | os.PathLike,
              target: TargetSpec | Sequence[TargetSpec] = None, method: str = "saliency",
              layer: str | None = None, **options) -> torch.Tensor:
    """Heat maps ``[B, H, W]`` (float32, each image's own resolution) of where ``target`` looks in ``images``.

    ``images``: ``[B, 3, H, W]`` or ``[3, H, W]`` floats in ``[0, 1]`` (or an image file path).
    ``target``: None (each image's top-1 class), a class index or label, a studio target string
    (``"blocks.5:17"``, ``"blocks.5:17@3,4"``, ``"logits:285"``), or a list with one per image.
    ``method``: one of :data:`METHODS`. ``layer``: the Grad-CAM layer (default: the last convolutional block,
    or the target's own layer for a unit target). ``options``: see :func:`explain`.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise StudioError(f"Unknown option(s) {', '.join(map(repr, unknown))} for attribute: use {', '.join(OPTIONS)}.")
    return explain(model, images, target, method, layer, **options).maps


def explain(model: StudioModel | nn.Module, images: torch.Tensor | str | os.PathLike,
            target: TargetSpec | Sequence[TargetSpec] = None, method: str = "saliency", layer: str | None = None,
            *, steps: int = DEFAULT_STEPS, rule: str = "gausslegendre", baseline: str | float | torch.Tensor = "black",
            blur_sigma: float | None = None, samples: int = 25, noise: float = 0.15, seed: int = 0,
            batch_size: int = 16) -> Attribution:
    """:func:`attribute` with the details: resolved targets, scores and Integrated Gradients' completeness error.

    Options: ``steps`` and ``rule`` (``gausslegendre`` or ``riemann_middle``) of the Integrated Gradients
    path integral; its ``baseline``: ``"black"``, ``"blurred"`` (Gaussian blur, ``blur_sigma`` pixels at the
    model's input size, default 5 % of it), a grey level, or an image ``[3, H, W]``/``[B, 3, H, W]`` in
    ``[0, 1]``. SmoothGrad: ``samples`` noisy copies with noise std ``noise * (max - min)`` of each image,
    drawn from ``seed``. ``batch_size``: forward passes per chunk (bounds memory).
    """
    model = model if isinstance(model, StudioModel) else StudioModel(model, InputSpec(), type(model).__name__)
    method = _method_name(method)
    _check_options(steps=steps, samples=samples, batch_size=batch_size, noise=noise, rule=rule)
    images, out_device = _as_batch(images, model)
    size = tuple(images.shape[-2:])
    with _attribution_mode(model.module):
        inputs = resize_to_input(images, model.spec).detach()
        targets = _resolve_targets(model, target, inputs, batch_size)
        names = [describe_target(model, t) for t in targets]
        if method in CAM_METHODS:
            layers = _cam_layers(model, layer, targets)
            maps, scores = _cam(model, inputs, targets, layers, method, batch_size, size)
            result = Attribution(maps, method, names, layers[0] if len(set(layers)) == 1 else layers, scores)
        else:
            if layer is not None:
                resolve_layer(model, layer)  # validated (typos are errors) but only Grad-CAM uses it
            result = _GRADIENT_METHODS[method](model, inputs, targets, batch_size=batch_size, steps=steps, rule=rule,
                                               baseline=baseline, blur_sigma=blur_sigma, samples=samples,
                                               noise=noise, seed=seed)
            result.targets = names
    result.maps = _resize_maps(result.maps, size).to(out_device, torch.float32)
    return result


# ------------------------------------------------------------------------------------------------ targets

def num_classes(model: StudioModel) -> int | None:
    """Length of the model's output vector, or None when its output is not one vector per image."""
    shape = model.layer_shapes.get(OUTPUT)
    return shape[0] if shape is not None and len(shape) == 1 else None


def _class_target(model: StudioModel, index: int, text: str | None = None) -> Target:
    count = num_classes(model)
    if count is None:
        raise StudioError(f"{model.name} does not output class scores; name a unit such as layer:channel instead.")
    if not 0 <= index < count:
        raise StudioError(f"Class {index} is out of range for {model.name}: valid classes are 0 to {count - 1}.")
    return Target(OUTPUT, index, None, text or f"{LOGITS}:{index}")


def _parse_one(model: StudioModel, spec: TargetSpec) -> Target | None:
    """A target for one image, or None for "the image's top-1 class"."""
    if spec is None:
        return None
    if isinstance(spec, Target):
        return None if spec.layer == OUTPUT and spec.channel is None else spec
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return _class_target(model, int(spec))
    if not isinstance(spec, str):
        raise StudioError(f"Cannot use {spec!r} as a target; give a class index, a class label or a target like blocks.5:17.")
    text = spec.strip()
    if re.fullmatch(r"-?\d+", text):
        return _class_target(model, int(text))
    if ":" in text or "@" in text or text == LOGITS or text in model.layer_shapes:
        parsed = parse_target(text, model)
        return None if parsed.layer == OUTPUT and parsed.channel is None else parsed
    if model.class_names and not re.fullmatch(r"[\w.]*\.\w*", text):
        return _class_target(model, model.class_index(text), text)
    resolve_layer(model, text)  # raises the unknown-layer error with the closest names
    raise AssertionError("unreachable")


def _resolve_targets(model: StudioModel, target, inputs: torch.Tensor, batch_size: int) -> list[Target]:
    """One target per image; ``None`` entries become that image's top-1 class."""
    count = len(inputs)
    if isinstance(target, (list, tuple)):
        if len(target) != count:
            raise StudioError(f"Got {len(target)} targets for {count} images; give one target or one per image.")
        parsed = [_parse_one(model, t) for t in target]
    else:
        parsed = [_parse_one(model, target)] * count
    missing = [i for i, t in enumerate(parsed) if t is None]
    if missing:
        _class_target(model, 0)  # the model must output classes to pick its top-1
        top = _logits(model, inputs[missing], batch_size).argmax(1).tolist()
        for i, index in zip(missing, top):
            parsed[i] = _class_target(model, index)
    return parsed


def describe_target(model: StudioModel, target: Target) -> str:
    """``logits:285 "Egyptian cat"`` for a class, the target string for a unit."""
    if target.layer == OUTPUT and target.channel is not None and model.class_names:
        return f'{LOGITS}:{target.channel} "{model.class_label(target.channel)}"'
    if target.text:
        return target.text
    where = "" if target.position is None else f"@{target.position[0]},{target.position[1]}"
    unit = "" if target.channel is None else f":{target.channel}"
    return f"{target.layer or LOGITS}{unit}{where}"


def _unit_value(activation: torch.Tensor, target: Target) -> torch.Tensor:
    """The explained scalar of one image: class logit, channel mean, neuron, or the whole layer's mean."""
    if target.channel is None:
        return activation.float().mean()
    value = activation[target.channel]
    if target.position is not None:
        value = value[target.position]
    return value.float().mean()


# ---------------------------------------------------------------------------------------------- the model

@contextmanager
def _attribution_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters, gradients on (grad mode is thread-local; a napari worker starts without
    the caller's context); all flags restored on exit."""
    with frozen(module), torch.inference_mode(False), torch.enable_grad():
        yield


def _forward(model: StudioModel, inputs: torch.Tensor, layers: set[str]) -> dict[str, torch.Tensor]:
    """Activations of ``layers`` (``""`` = the model output) for images in ``[0, 1]`` at the model's input
    size, safe from later in-place ops; the forward stops after the last hooked layer unless the output is needed."""
    return forward_to(model.module, model.spec.normalise(inputs), sorted(layers), clone=True)


def _evaluate(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], wrt: str | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward (and backward) pass: the scores ``[N]``, the gradient of each image's score with respect
    to ``wrt`` (``"input"``, a layer name, or None for no backward) and that layer's activation."""
    layers = {t.layer for t in targets} | ({wrt} if wrt not in (None, "input") else set())
    with torch.set_grad_enabled(wrt is not None):
        x = inputs.detach().clone().requires_grad_(wrt is not None)  # a graph from the input on, even for a layer
        acts = _forward(model, x, layers)
        scores = torch.stack([_unit_value(acts[t.layer][i], t) for i, t in enumerate(targets)])
        if wrt is None:
            return scores.detach(), None, None
        source = x if wrt == "input" else acts[wrt]
        gradient = None
        if scores.requires_grad:
            (gradient,) = torch.autograd.grad(scores.sum(), source, allow_unused=True)
        if gradient is None and wrt != "input":
            raise StudioError(f"The target does not depend on layer {wrt!r}; pick a Grad-CAM layer that runs before "
                              f"the target's layer ({', '.join(sorted({t.layer or LOGITS for t in targets}))}).")
        if gradient is None:
            gradient = torch.zeros_like(x)
        return scores.detach(), gradient.detach(), source.detach()


def _chunked(count: int, batch_size: int, step: Callable[[int, int], None]) -> None:
    for start in range(0, count, batch_size):
        step(start, min(count, start + batch_size))


def _logits(model: StudioModel, inputs: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        _chunked(len(inputs), batch_size, lambda a, b: parts.append(_forward(model, inputs[a:b], {OUTPUT})[OUTPUT]))
    return torch.cat(parts).float()


def _scores(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], batch_size: int) -> torch.Tensor:
    """The explained scalar of each image, without gradients, in chunks."""
    parts: list[torch.Tensor] = []
    _chunked(len(inputs), batch_size, lambda a, b: parts.append(_evaluate(model, inputs[a:b], targets[a:b])[0]))
    return torch.cat(parts)


def top_classes(model: StudioModel, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """The ``k`` most probable classes of each image: ``(index, label, softmax probability)``."""
    images, _ = _as_batch(images, model)
    _class_target(model, 0)
    with _attribution_mode(model.module):
        probs = _logits(model, resize_to_input(images, model.spec)).softmax(1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(i, model.class_label(i), v) for i, v in zip(row_i, row_v)]
            for row_i, row_v in zip(indices.tolist(), values.tolist())]


# ----------------------------------------------------------------------------------- gradient methods

def _input_gradients(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], batch_size: int,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[N]`` and input gradients ``[N, 3, h, w]``, in chunks of ``batch_size``."""
    scores, grads = torch.empty(len(inputs), device=inputs.device), torch.empty_like(inputs)

    def step(a: int, b: int) -> None:
        scores[a:b], grads[a:b], _ = _evaluate(model, inputs[a:b], targets[a:b], "input")
    _chunked(len(inputs), batch_size, step)
    return scores, grads


def _path_average(model: StudioModel, target: Target, points: Callable[[int, int], torch.Tensor],
                  weights: torch.Tensor, batch_size: int, absolute: bool) -> torch.Tensor:
    """``sum_k weights[k] * grad(points k)`` (of ``|grad|`` when ``absolute``) over the points of one image,
    built and differentiated ``batch_size`` at a time so memory does not grow with their number."""
    total = None

    def step(a: int, b: int) -> None:
        nonlocal total
        _, grads = _input_gradients(model, points(a, b), [target] * (b - a), batch_size)
        grads = grads.abs() if absolute else grads
        part = torch.einsum("n,nchw->chw", weights[a:b].to(grads), grads)
        total = part if total is None else total + part
    _chunked(len(weights), batch_size, step)
    return total


def _saliency(model, inputs, targets, *, batch_size, **_) -> Attribution:
    scores, grads = _input_gradients(model, inputs, targets, batch_size)
    return Attribution(grads.abs().amax(1), "saliency", [], scores=scores, per_channel=grads.abs())


def _gradient_x_input(model, inputs, targets, *, batch_size, **_) -> Attribution:
    scores, grads = _input_gradients(model, inputs, targets, batch_size)
    per_channel = grads * inputs
    return Attribution(per_channel.sum(1), "gradient_x_input", [], scores=scores, per_channel=per_channel)


def _smoothgrad(model, inputs, targets, *, batch_size, samples, noise, seed, **_) -> Attribution:
    per_channel = torch.empty_like(inputs)
    for i, (image, target) in enumerate(zip(inputs, targets)):
        generator = torch.Generator(device=image.device).manual_seed(seed)  # same draws whatever the batch
        draws = torch.randn((samples, *image.shape), generator=generator, device=image.device, dtype=image.dtype)
        sigma = noise * (image.max() - image.min())
        per_channel[i] = _path_average(model, target, lambda a, b: image + sigma * draws[a:b],
                                       torch.full((samples,), 1.0 / samples), batch_size, absolute=True)
    scores = _scores(model, inputs, targets, batch_size)
    return Attribution(per_channel.amax(1), "smoothgrad", [], scores=scores, per_channel=per_channel)


def integration_rule(steps: int, rule: str = "gausslegendre") -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alpha`` in (0, 1) and weights (summing to 1) of the path integral (captum's conventions)."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1)).float(), torch.from_numpy(0.5 * weights).float()
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # riemann_middle
    return alphas, torch.full((steps,), 1.0 / steps)


def _baselines(baseline, inputs: torch.Tensor, spec: InputSpec, blur_sigma: float | None) -> torch.Tensor:
    if isinstance(baseline, str):
        if baseline == "black":
            return torch.zeros_like(inputs)
        if baseline == "blurred":
            from kornia.filters import gaussian_blur2d

            sigma = float(blur_sigma) if blur_sigma is not None else 0.05 * min(spec.size)
            radius = max(1, int(np.ceil(3 * sigma)))
            return gaussian_blur2d(inputs, (2 * radius + 1,) * 2, (sigma, sigma), border_type="replicate")
        raise StudioError(f"Unknown baseline {baseline!r}: use 'black', 'blurred', a grey level or an image tensor.")
    if isinstance(baseline, (int, float)):
        return torch.full_like(inputs, float(baseline))
    if isinstance(baseline, torch.Tensor):
        given, _ = _as_batch(baseline, None)
        if len(given) not in (1, len(inputs)):
            raise StudioError(f"Got {len(given)} baseline images for {len(inputs)} images; give one or one per image.")
        return resize_to_input(given.to(inputs), spec).expand_as(inputs)
    raise StudioError(f"Cannot use {type(baseline).__name__} as a baseline; give 'black', 'blurred', a number or an image.")


def _integrated_gradients(model, inputs, targets, *, batch_size, steps, rule, baseline, blur_sigma, **_
                          ) -> Attribution:
    starts = _baselines(baseline, inputs, model.spec, blur_sigma)
    alphas, weights = integration_rule(steps, rule)
    alphas = alphas.to(inputs).view(-1, 1, 1, 1)
    per_channel = torch.empty_like(inputs)
    for i, (image, start, target) in enumerate(zip(inputs, starts, targets)):
        direction = image - start
        mean_gradient = _path_average(model, target, lambda a, b: start + alphas[a:b] * direction, weights,
                                      batch_size, absolute=False)
        per_channel[i] = direction * mean_gradient
    maps = per_channel.sum(1)
    scores, baseline_scores = _scores(model, inputs, targets, batch_size), _scores(model, starts, targets, batch_size)
    change = scores - baseline_scores
    error = (maps.flatten(1).sum(1) - change).abs() / change.abs().clamp_min(1e-12)
    return Attribution(maps, "integrated_gradients", [], scores=scores, baseline_scores=baseline_scores,
                       completeness_error=error, per_channel=per_channel)


#: Keyword options of :func:`explain` (and so of :func:`attribute`).
OPTIONS = ("steps", "rule", "baseline", "blur_sigma", "samples", "noise", "seed", "batch_size")

_GRADIENT_METHODS = {"saliency": _saliency, "gradient_x_input": _gradient_x_input, "smoothgrad": _smoothgrad,
                     "integrated_gradients": _integrated_gradients}


# ------------------------------------------------------------------------------------------------ Grad-CAM

def default_cam_layer(model: StudioModel) -> str:
    """The last module (in forward order) whose output is a spatial map: the last convolutional block."""
    spatial = [name for name, shape in model.layer_shapes.items()
               if name and len(shape) == 3 and shape[1] * shape[2] > 1]
    if not spatial:
        raise StudioError(f"{model.name} has no layer with a spatial map; Grad-CAM needs a convolutional layer.")
    return spatial[-1]


def _cam_layers(model: StudioModel, layer: str | None, targets: Sequence[Target]) -> list[str]:
    """The Grad-CAM layer of each image: the given one; else a unit target's own layer when it is a spatial
    map (Grad-CAM there is the unit's ReLU'd activation map), else the last convolutional block."""
    if layer is None:
        shapes = model.layer_shapes
        return [t.layer if t.layer != OUTPUT and len(shapes[t.layer]) == 3 else default_cam_layer(model)
                for t in targets]
    name = resolve_layer(model, layer)
    shape = model.layer_shapes[name]
    if len(shape) != 3:
        raise StudioError(f"Layer {layer!r} has output shape {list(shape)}, not a [channels, height, width] map; "
                          f"pick a convolutional layer such as {default_cam_layer(model)!r}.")
    order = {module: index for index, module in enumerate(model.layer_shapes)}
    early = sorted({t.text or t.layer for t in targets if order[t.layer] < order[name]})
    if early:
        raise StudioError(f"Target {', '.join(early)} is computed before Grad-CAM layer {layer!r} and cannot depend "
                          "on it; pick a layer that runs before the target, or leave --layer out.")
    return [name] * len(targets)


def cam_from_gradients(activations: torch.Tensor, gradients: torch.Tensor, plus_plus: bool = False) -> torch.Tensor:
    """Grad-CAM ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``d score / d A_k``; Grad-CAM++
    uses the closed-form weights of Chattopadhay et al. (eq. 19, as in pytorch-grad-cam). ``[N, h, w]``."""
    if plus_plus:
        # alpha = g^2 / (2 g^2 + sum(A) g^3), divided through by g^2: no epsilon that would swamp tiny gradients.
        denominator = 2 + activations.sum((2, 3), keepdim=True) * gradients
        usable = (gradients != 0) & (denominator.abs() > 1e-6)
        alpha = torch.where(usable, 1 / torch.where(usable, denominator, torch.ones_like(denominator)), 0.0)
        weights = (alpha * gradients.clamp_min(0)).sum((2, 3), keepdim=True)
    else:
        weights = gradients.mean((2, 3), keepdim=True)
    return (weights * activations).sum(1).clamp_min(0)


def _cam(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], layers: Sequence[str], method: str,
         batch_size: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps resized to ``size`` and scores; images are grouped by their layer."""
    maps = inputs.new_empty((len(inputs), *size))
    scores = inputs.new_empty(len(inputs))
    for layer in dict.fromkeys(layers):
        rows = torch.tensor([i for i, name in enumerate(layers) if name == layer])

        def step(a: int, b: int) -> None:
            index = rows[a:b]
            chunk_scores, gradients, activations = _evaluate(model, inputs[index], [targets[i] for i in index], layer)
            cams = cam_from_gradients(activations.float(), gradients.float(), method == "gradcam++")
            maps[index], scores[index] = _resize_maps(cams, size), chunk_scores
        _chunked(len(rows), batch_size, step)
    return maps, scores


# ----------------------------------------------------------------------------------------- input, output

def _method_name(method: str) -> str:
    name = str(method).strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in METHODS:
        raise StudioError(f"Unknown attribution method {method!r}: use one of {', '.join(METHODS)}.")
    return name


def _check_options(*, steps, samples, batch_size, noise, rule) -> None:
    for label, value in (("steps", steps), ("samples", samples), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise StudioError(f"Option {label} must be a whole number of at least 1, not {value!r}.")
    if not isinstance(noise, (int, float)) or noise < 0:
        raise StudioError(f"Option noise must be a non-negative fraction of the image's value range, not {noise!r}.")
    if rule not in IG_RULES:
        raise StudioError(f"Unknown integration rule {rule!r}: use {' or '.join(IG_RULES)}.")


def _as_batch(images, model: StudioModel | None) -> tuple[torch.Tensor, torch.device]:
    """``[B, 3, H, W]`` float32 on the model's device, and the device the maps go back to."""
    if isinstance(images, (str, os.PathLike)):
        from studio.io import read_image

        images = read_image(images)
    if not isinstance(images, torch.Tensor):
        raise StudioError(f"Images must be a [B, 3, H, W] tensor in [0, 1] or an image path, not {type(images).__name__}.")
    if not images.is_floating_point():
        raise StudioError(f"Images must be floats in [0, 1], not {images.dtype}; divide uint8 images by 255.")
    if images.dim() == 3:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise StudioError(f"Images must have shape [B, 3, H, W] or [3, H, W], not {list(images.shape)}.")
    device = images.device
    return images.detach().to(model.device if model is not None else device, torch.float32), device


def _resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, h, w]`` maps to ``size`` (no-op when it matches)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)


def display_map(heat: torch.Tensor, signed: bool = False, percentile: float = 99.0) -> torch.Tensor:
    """Scale one ``[H, W]`` map to ``[0, 1]`` for display: ``|map|`` for signed methods, divided by its
    ``percentile`` (so a few extreme pixels do not wash out the rest), clipped."""
    values = heat.detach().float()
    values = values.abs() if signed else values.clamp_min(0)
    flat = values.flatten()
    rank = max(1, min(flat.numel(), int(round(percentile / 100 * flat.numel()))))
    scale = flat.kthvalue(rank).values
    if scale <= 0:
        scale = flat.max()
    return (values / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(values)


def overlay(image: torch.Tensor, heat: torch.Tensor, signed: bool = False, colormap: str = "viridis",
            alpha: float = 0.5, percentile: float = 99.0) -> torch.Tensor:
    """The heat map in a perceptual colormap (kornia's viridis by default) blended over ``image``
    (``[3, H, W]`` in ``[0, 1]``); returns ``[3, H, W]`` in ``[0, 1]``."""
    from kornia.color import ColorMap, apply_colormap

    try:
        palette = ColorMap(colormap, num_colors=256, device=image.device, dtype=torch.float32)
    except ValueError:
        raise StudioError(f"Unknown colormap {colormap!r}: use viridis, plasma, cividis, turbo or another kornia colormap.") from None
    level = display_map(heat.to(image.device), signed, percentile)
    coloured = apply_colormap(level[None, None], palette)[0]
    return ((1 - alpha) * image.float() + alpha * coloured).clamp(0, 1)
