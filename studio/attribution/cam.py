"""Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al. 2018): class- or unit-weighted
activation maps of a convolutional layer, ReLU'd; the layer defaults to the unit's own layer or the last
convolutional block."""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch

from studio.attribution.attention import attention_layers
from studio.attribution.machinery import chunked, evaluate
from studio.errors import StudioError
from studio.hooks import OUTPUT, capture, first_tensor, frozen
from studio.models import StudioModel
from studio.targets import Target, layer_info, resolve_layer


def default_cam_layer(model: StudioModel) -> str:
    """The last map (a convolutional block, a channel-last map or a token grid, outside attention modules)
    that the model's top score depends on: for a CNN its last convolutional block; for a ViT, whose head
    reads only the class token, the input of the last attention (its later patch tokens get no gradient).
    Found once per model by one probe backward on a fixed random image."""
    by_input = _DEFAULT_LAYERS.setdefault(model.module, {})
    if model.spec not in by_input:
        by_input[model.spec] = _probe_cam_layer(model)
    return by_input[model.spec]


#: Default Grad-CAM layer per module and input spec (weakly held: it goes with the model).
_DEFAULT_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _probe_cam_layer(model: StudioModel) -> str:
    inside_attention = tuple(f"{name}." for name in attention_layers(model))
    candidates = [name for name in model.layer_shapes
                  if name and not name.startswith(inside_attention) and _is_map(model, name)]
    if not candidates:
        raise StudioError(f"{model.name} has no layer with a spatial map; Grad-CAM needs a convolutional layer.")
    probe = torch.rand(1, model.spec.channels, *model.spec.size, generator=torch.Generator().manual_seed(0)).to(model.device)
    probe.requires_grad_(True)  # parameters are frozen: the graph starts at the image
    with frozen(model.module), torch.enable_grad(), capture(model.module, candidates, stop_early=False,
                                                               clone=True) as captured:
        output = first_tensor(model.module(model.spec.normalise(probe)))
        gradients = torch.autograd.grad(output.flatten(1).max(1).values.sum(), [captured[n] for n in candidates],
                                        allow_unused=True)
    reached = [name for name, gradient in zip(candidates, gradients)  # on the grid: prefix tokens do not count
               if gradient is not None and layer_info(model, name).channels_first(gradient).abs().sum() > 0]
    return (reached or candidates)[-1]


def _is_map(model: StudioModel, name: str) -> bool:
    try:
        info = layer_info(model, name)
    except StudioError:  # window-partitioned attention, scalars
        return False
    return len(info.spatial) == model.spec.dims and math.prod(info.spatial) > 1


def cam_layers(model: StudioModel, layer: str | None, targets: Sequence[Target]) -> list[str]:
    """The Grad-CAM layer of each image: the given one; else a unit target's own layer when it is a spatial
    map (Grad-CAM there is the unit's ReLU'd activation map), else the last convolutional block."""
    if layer is None:
        return [t.layer if t.layer != OUTPUT and _is_map(model, t.layer) else default_cam_layer(model)
                for t in targets]
    name = resolve_layer(model, layer)
    if len(layer_info(model, name).spatial) != model.spec.dims:
        raise StudioError(f"Layer {layer!r} has output shape {list(model.layer_shapes[name])}, not a map like the "
                          f"input's; pick a convolutional layer such as {default_cam_layer(model)!r}.")
    order = {module: index for index, module in enumerate(model.layer_shapes)}
    early = sorted({t.name for t in targets if order[t.layer] < order[name]})
    if early:
        raise StudioError(f"Target {', '.join(early)} is computed before Grad-CAM layer {layer!r} and cannot depend "
                          "on it; pick a layer that runs before the target, or leave --layer out.")
    return [name] * len(targets)


def cam_from_gradients(activations: torch.Tensor, gradients: torch.Tensor, plus_plus: bool = False) -> torch.Tensor:
    """Grad-CAM ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of ``d score / d A_k``; Grad-CAM++
    uses the closed-form weights of Chattopadhay et al. (eq. 19, as in pytorch-grad-cam). ``[N, h, w]``, or
    ``[N, d, h, w]`` for a volume's layer."""
    spatial = tuple(range(2, activations.dim()))  # (h, w), or (d, h, w) for a volume
    if plus_plus:
        # alpha = g^2 / (2 g^2 + sum(A) g^3), divided through by g^2: no epsilon that would swamp tiny gradients.
        denominator = 2 + activations.sum(spatial, keepdim=True) * gradients
        usable = (gradients != 0) & (denominator.abs() > 1e-6)
        alpha = torch.where(usable, 1 / torch.where(usable, denominator, torch.ones_like(denominator)), 0.0)
        weights = (alpha * gradients.clamp_min(0)).sum(spatial, keepdim=True)
    else:
        weights = gradients.mean(spatial, keepdim=True)
    return (weights * activations).sum(1).clamp_min(0)


def _cam(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], layer: str | None, batch_size: int,
         plus_plus: bool) -> dict:
    """Maps at their layer's resolution (a list, one ``[h, w]`` map per image: images whose targets live in
    different layers get maps of different sizes) and scores; images are grouped by their layer."""
    layers = cam_layers(model, layer, targets)
    maps: list[torch.Tensor | None] = [None] * len(inputs)
    values = inputs.new_empty(len(inputs))
    for name in dict.fromkeys(layers):
        rows = torch.tensor([i for i, chosen in enumerate(layers) if chosen == name])

        def step(a: int, b: int) -> None:
            index = rows[a:b]
            chunk_scores, gradients, activations = evaluate(model, inputs[index], [targets[i] for i in index], name)
            for i, cam in zip(index.tolist(), cam_from_gradients(activations.float(), gradients.float(), plus_plus)):
                maps[i] = cam
            values[index] = chunk_scores
        chunked(len(rows), batch_size, step)
    return {"maps": maps, "scores": values, "layer": layers[0] if len(set(layers)) == 1 else layers}


def gradcam(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *, layer: str | None = None,
            batch_size: int = 16) -> dict:
    """Grad-CAM at ``layer`` (default: the unit's own map, else the last convolutional block)."""
    return _cam(model, inputs, targets, layer, batch_size, plus_plus=False)


def gradcam_plus_plus(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *,
                      layer: str | None = None, batch_size: int = 16) -> dict:
    """Grad-CAM++ at ``layer`` (default as for :func:`gradcam`)."""
    return _cam(model, inputs, targets, layer, batch_size, plus_plus=True)
