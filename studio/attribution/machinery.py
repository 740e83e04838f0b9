"""What every attribution method shares: the model in attribution mode, one forward (and backward) pass that
gives each image's score and its gradient, chunking, and the top classes of images."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import os
from contextlib import contextmanager

import torch
from torch import nn

from studio.errors import StudioError
from studio.hooks import OUTPUT, forward_to, frozen
from studio.io import read_input
from studio.models import StudioModel, resize_to_input
from studio.targets import Target, activations, channels_first, class_target, module_of


@contextmanager
def attribution_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode, frozen parameters, gradients on (grad mode is thread-local; a napari worker starts without
    the caller's context); all flags restored on exit."""
    with frozen(module), torch.inference_mode(False), torch.enable_grad():
        yield


def evaluate(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], wrt: str | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward (and backward) pass: the scores ``[N]`` (each image's target read by the target itself),
    the gradient of each image's score with respect to ``wrt`` (``"input"``, a layer, or None for no backward)
    and that layer's activation, both channels-first (a token layer as its patch grid). Captures are clones,
    safe from later in-place ops."""
    keys = {t.key for t in targets}
    layer = None if wrt in (None, "input") else wrt
    paths = {key: module_of(model, key) for key in keys}
    with torch.set_grad_enabled(wrt is not None):
        x = inputs.detach().clone().requires_grad_(wrt is not None)  # a graph from the input on, even for a layer
        captured = forward_to(model.module, model.spec.normalise(x), {*paths.values(), *([layer] if layer else [])},
                              clone=True)
        acts = {key: channels_first(model, key, captured[path]) for key, path in paths.items()}
        scores = torch.cat([t(acts[t.key][i:i + 1]) for i, t in enumerate(targets)])
        if wrt is None:
            return scores.detach(), None, None
        source = x if layer is None else captured[layer]
        gradient = None
        if scores.requires_grad:
            (gradient,) = torch.autograd.grad(scores.sum(), source, allow_unused=True)
        if gradient is None and layer is not None:
            raise StudioError(f"The target does not depend on layer {wrt!r}; pick a Grad-CAM layer that runs before "
                              f"the target's layer ({', '.join(sorted({t.layer_name for t in targets}))}).")
        if gradient is None:
            gradient = torch.zeros_like(x)
        if layer is not None:
            gradient, source = channels_first(model, layer, gradient), channels_first(model, layer, source)
        return scores.detach(), gradient.detach(), source.detach()


def chunked(count: int, batch_size: int, step: Callable[[int, int], None]) -> None:
    """Call ``step(start, stop)`` over ``range(count)`` in chunks of ``batch_size`` (bounds memory)."""
    for start in range(0, count, batch_size):
        step(start, min(count, start + batch_size))


def logits(model: StudioModel, inputs: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """The model output ``[N, classes]`` for images at the model's input size, in chunks, without gradients."""
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        chunked(len(inputs), batch_size,
                lambda a, b: parts.append(activations(model, model.spec.normalise(inputs[a:b]), [OUTPUT])[OUTPUT]))
    return torch.cat(parts).float()


def scores(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], batch_size: int) -> torch.Tensor:
    """The explained scalar of each image, without gradients, in chunks."""
    parts: list[torch.Tensor] = []
    chunked(len(inputs), batch_size, lambda a, b: parts.append(evaluate(model, inputs[a:b], targets[a:b])[0]))
    return torch.cat(parts)


def input_gradients(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], batch_size: int,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[N]`` and input gradients ``[N, C, *size]``, in chunks of ``batch_size``."""
    values, grads = torch.empty(len(inputs), device=inputs.device), torch.empty_like(inputs)

    def step(a: int, b: int) -> None:
        values[a:b], grads[a:b], _ = evaluate(model, inputs[a:b], targets[a:b], "input")
    chunked(len(inputs), batch_size, step)
    return values, grads


def as_batch(images, model: StudioModel) -> tuple[torch.Tensor, torch.device]:
    """Images the model takes (``[B, C, *size]`` or one ``[C, *size]``, floats in ``[0, 1]``, or a file path)
    as a float32 batch on the model's device, and the device the results go back to; anything else is a
    one-sentence error naming the shape the model expects."""
    spec = model.spec
    expected = f"[B, {spec.channels}, {', '.join('DHW'[-spec.dims:])}] or [{spec.channels}, {', '.join('DHW'[-spec.dims:])}]"
    if isinstance(images, (str, os.PathLike)):
        images = read_input(images, spec.channels, spec.dims)
    if not isinstance(images, torch.Tensor):
        raise StudioError(f"Images must be a {expected} tensor in [0, 1] or an image path, not {type(images).__name__}.")
    if not images.is_floating_point():
        raise StudioError(f"Images must be floats in [0, 1], not {images.dtype}; divide uint8 images by 255.")
    if images.dim() == spec.dims + 1:
        images = images.unsqueeze(0)
    if images.dim() != spec.dims + 2 or images.shape[1] != spec.channels or images.shape[0] == 0:
        raise StudioError(f"{model.name} takes images of shape {expected}, not {list(images.shape)}.")
    if not torch.isfinite(images).all():
        raise StudioError("The images hold NaN or infinite values; give finite values in [0, 1].")
    return images.detach().to(model.device, torch.float32), images.device


def top_classes(model: StudioModel, images: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """The ``k`` most probable classes of each image (as :func:`as_batch` takes them):
    ``(index, label, softmax probability)``."""
    images, _ = as_batch(images, model)
    class_target(model, 0)  # the model must output classes
    with attribution_mode(model.module):
        probs = logits(model, resize_to_input(images, model.spec)).softmax(1)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [[(i, model.class_label(i), v) for i, v in zip(row_i, row_v)]
            for row_i, row_v in zip(indices.tolist(), values.tolist())]
