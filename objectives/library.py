"""The objective library: units (channel, neuron, direction, layer, class logit) and image penalties.

Unit objectives are values to maximise; penalties (total variation, L1, L2, blur) are non-negative
values meant to be subtracted, e.g. ``channel("blocks.4", 12) - 1e-3 * total_variation()``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from studio.objectives.base import IMAGE, Objective
from studio.errors import StudioError
from studio.hooks import frozen
from studio.models import resize_to_input
from studio.targets import Target, activations, layer_value, unit_values


def _batch_mask(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Keep ``values[batch]`` only (other images get 0), or all values when ``batch`` is None."""
    if batch is None:
        return values
    mask = torch.zeros_like(values)
    mask[batch] = 1
    return values * mask


def _suffix(batch: int | None) -> str:
    return "" if batch is None else f"[{batch}]"


def channel(layer: str, n: int, batch: int | None = None) -> Objective:
    """Mean activation of channel ``n`` of ``layer`` over all positions (for ``[B, K]`` outputs: unit ``n``)."""
    return Objective(lambda acts: _batch_mask(Target(layer, n)(acts[layer]), batch),
                     f"{layer or 'logits'}:{n}{_suffix(batch)}", frozenset({layer}))


def neuron(layer: str, n: int, y: int | None = None, x: int | None = None, batch: int | None = None) -> Objective:
    """Activation of channel ``n`` at row ``y``, column ``x`` (default: the centre of the map or volume)."""
    def value(acts):
        a = acts[layer]
        centre = tuple(size // 2 for size in a.shape[2:])
        at = centre if y is None and x is None else (centre[0] if y is None else y, centre[1] if x is None else x)
        return _batch_mask(Target(layer, n, at)(a), batch)
    where = "" if y is None and x is None else f"@{'c' if y is None else y},{'c' if x is None else x}"
    return Objective(value, f"{layer or 'logits'}:{n}{where}{_suffix(batch)}", frozenset({layer}))


def units(layer: str, channels: Sequence[int], positions: Sequence[tuple[int, ...] | None] | None = None,
          images: Sequence[int] | None = None) -> Objective:
    """Image ``images[i]`` maximises channel ``channels[i]`` (at ``positions[i]`` if given) of ``layer``.

    One vectorised gather instead of one objective per image: how a list of targets renders in one batch.
    """
    positions = [None] * len(channels) if positions is None else list(positions)
    return Objective(lambda acts: unit_values(acts[layer], channels, positions, images),
                     f"{layer or 'logits'} units", frozenset({layer}))


def direction(layer: str, vector: torch.Tensor, batch: int | None = None, cossim_pow: float = 0.0) -> Objective:
    """Alignment of the activation vector at each position with ``vector``, averaged over positions.

    Per position: ``dot(a, v/|v|) * max(cos(a, v), 0.1) ** cossim_pow`` (Lucid's ``direction_cossim``);
    ``cossim_pow=0`` is the plain projection, larger powers favour direction over magnitude.
    """
    def value(acts):
        a = acts[layer].float()
        a = a if a.dim() > 2 else a[..., None, None]
        v = vector.to(a.device, torch.float32).view(1, -1, 1, 1)
        v = v / v.norm()
        dot = (a * v).sum(1)
        result = dot if cossim_pow == 0 else dot * torch.clamp(dot / (a.norm(dim=1) + 1e-6), min=0.1) ** cossim_pow
        return _batch_mask(result.flatten(1).mean(1), batch)
    return Objective(value, f"direction({layer}){_suffix(batch)}", frozenset({layer}))


def caricature(photo: torch.Tensor, layer: str, cossim_pow: float = 2.0) -> Objective:
    """What ``layer`` sees in ``photo`` (Lucid's caricature): per image ``dot(a, p) * max(cos(a, p), 0.1) **
    cossim_pow`` over the whole layer, ``a`` the render's activations and ``p`` the photo's (``[C, *size]`` in
    ``[0, 1]``, resized to the model's input); the dot product is a mean over the layer's elements, so its scale
    does not grow with the layer. The photo's activations are read when a render binds the objective to its
    model (:meth:`Objective.bind`). On chelsea at EfficientNet-Lite0's blocks.4 (64 steps, 96 px) the render's
    activations reach cosine 0.56 to the photo's at ``cossim_pow`` 0, 0.62 at 1 and 0.64 at 2 (a DeepDream
    render of the layer: 0.12)."""
    if not isinstance(photo, torch.Tensor) or photo.dim() < 3 or not photo.is_floating_point():
        raise StudioError("A caricature takes one photo [C, H, W] of floats in [0, 1] (studio.read_image gives one).")
    reference: dict[str, torch.Tensor] = {}

    def bind(model) -> None:
        with frozen(model.module), torch.no_grad():
            inputs = model.spec.normalise(resize_to_input(photo[None].to(model.device), model.spec))
            reference["photo"] = activations(model, inputs, [layer])[layer].float()

    def value(acts):
        if "photo" not in reference:
            raise StudioError("A caricature reads the photo through the model: render it with studio.render(model, ...).")
        a = acts[layer].float().flatten(1)
        p = reference["photo"].to(a.device).flatten(1)
        dot = (a * p).mean(1)
        if cossim_pow == 0:
            return dot
        cosine = (a * p).sum(1) / (a.norm(dim=1) * p.norm(dim=1) + 1e-6)
        return dot * cosine.clamp_min(0.1) ** cossim_pow
    return Objective(value, f"caricature({layer})", frozenset({layer}), bind=bind)


def layer(name: str, batch: int | None = None) -> Objective:
    """DeepDream: mean squared activation of the whole layer."""
    return Objective(lambda acts: _batch_mask(layer_value(acts[name]), batch), f"layer({name}){_suffix(batch)}",
                     frozenset({name}))


def class_logit(n: int, batch: int | None = None, layer: str = "logits") -> Objective:
    """The logit of class ``n`` (``layer`` is the name of the model output in the activations)."""
    return Objective(lambda acts: _batch_mask(Target(layer, n)(acts[layer]), batch), f"logits:{n}{_suffix(batch)}",
                     frozenset({layer}))


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of each image's Gram matrix with every other image's (Lucid)."""
    def value(acts):
        a = acts[layer].float()
        b = a.shape[0]
        if b < 2:
            return torch.zeros(b, device=a.device)
        features = a.flatten(2)
        grams = F.normalize(torch.bmm(features, features.transpose(1, 2)).flatten(1), dim=1)
        similarity = grams @ grams.T
        return -(similarity.sum(1) - similarity.diagonal()) / (b - 1)
    return Objective(value, f"diversity({layer})", frozenset({layer}))


def total_variation() -> Objective:
    """Mean absolute difference between neighbouring pixels of each image (a penalty: subtract it)."""
    def value(acts):
        x = acts[IMAGE].float()
        dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
        dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
        return dx + dy
    return Objective(value, "total_variation")


def l1(constant: float = 0.5) -> Objective:
    """Mean absolute deviation of each image from ``constant`` (a penalty: subtract it)."""
    return Objective(lambda acts: (acts[IMAGE].float() - constant).abs().flatten(1).mean(1), "l1")


def l2(constant: float = 0.5, epsilon: float = 1e-6) -> Objective:
    """Root mean squared deviation of each image from ``constant`` (a penalty: subtract it)."""
    return Objective(lambda acts: ((acts[IMAGE].float() - constant).pow(2).flatten(1).mean(1) + epsilon).sqrt(), "l2")


def blur(kernel_size: int = 3) -> Objective:
    """Squared distance of each image from its own (gradient-stopped) box blur: subtracting it blurs a little
    each step, like Lucid's ``blur_input_each_step``."""
    def value(acts):
        x = acts[IMAGE].float()
        pad = kernel_size // 2
        blurred = F.avg_pool2d(F.pad(x, (pad,) * 4, mode="replicate"), kernel_size, stride=1).detach()
        return 0.5 * (x - blurred).pow(2).flatten(1).sum(1)
    return Objective(value, "blur")
