"""Building blocks (Olah et al. 2018, "The Building Blocks of Interpretability"): which channels of a layer made a
decision on a photo, where each of them fired, and what each responds to.

A channel's attribution is ``sum over positions of activation x gradient`` of the target's score: the first-order
estimate of how much the score falls when the channel is zeroed. The channels are ranked by it; each keeps its
spatial map (the same product, per position, at the photo's resolution) and can be rendered in one batch.
:func:`ablate` measures what the ranking only estimates: the score with the channels really zeroed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch

from studio.attribution.api import TargetSpec, resolve_targets
from studio.attribution.machinery import as_batch, attribution_mode, evaluate
from studio.checks import check_number
from studio.engine import RenderResult, render
from studio.errors import StudioError
from studio.models import StudioModel, resample, resize_to_input
from studio.settings import RenderSettings
from studio.objectives import Objective, units
from studio.targets import Target, layer_info, layer_key, module_of


@dataclass
class BuildingBlocks:
    """The ``top`` channels of ``layer`` behind ``target`` on one photo, best first: each one's attribution
    (and its share of the layer's total), mean activation and map ``[top, H, W]`` at the photo's resolution;
    the target's score; each channel's direction (1: raising it raises the target, -1: lowering it does) and
    the renders, each pushing its channel that way (None when not rendered)."""

    layer: str
    target: Target
    channels: list[int]
    attributions: torch.Tensor
    shares: torch.Tensor
    activations: torch.Tensor
    maps: torch.Tensor
    score: float
    directions: list[int]
    renders: RenderResult | None = None

    @property
    def units(self) -> list[str]:
        """The channels as targets, ``blocks.5:17``, in rank order."""
        return [f"{self.layer}:{channel}" for channel in self.channels]


class ChannelReading(NamedTuple):
    """One photo read at a layer: per channel the attribution ``[K]``, the activation x gradient map
    ``[K, *grid]``, the mean activation and the summed gradient ``[K]``; and the target's score."""

    attributions: torch.Tensor
    products: torch.Tensor
    means: torch.Tensor
    gradients: torch.Tensor
    score: float


def channel_attribution(model: StudioModel, image: torch.Tensor, layer: str, target: Target) -> ChannelReading:
    """Each channel of ``layer`` read on one model-ready image ``[1, C, *size]`` for ``target``."""
    key = layer_key(model, layer)
    info = layer_info(model, key)
    if not info.spatial:
        raise StudioError(f"Layer {info.name!r} is a vector ({info.channels} channels) with no map on the photo; "
                          "pick a convolutional or token layer.")
    with attribution_mode(model.module):
        scores, gradient, activation = evaluate(model, image, [target], wrt=module_of(model, key))
    gradient, activation = gradient[0].float(), activation[0].float()
    product = gradient * activation
    return ChannelReading(product.flatten(1).sum(1), product, activation.flatten(1).mean(1),
                          gradient.flatten(1).sum(1), float(scores[0]))


def blocks(model: StudioModel, photo: torch.Tensor | str | os.PathLike, layer: str,
           target: TargetSpec = None, *, top: int = 6, render_channels: bool = True,
           settings: RenderSettings | None = None, **options) -> BuildingBlocks:
    """The ``top`` channels of ``layer`` that most raise ``target`` (None: the photo's top-1 class; a class or a
    unit of a later layer) on ``photo`` (``[C, *size]`` in ``[0, 1]`` or a file), with their maps; rendered in one
    batch by :func:`studio.render` (``settings`` or its keyword ``options``) unless ``render_channels`` is off.
    Each render pushes its channel the way that raises the target (the sign of its summed gradient): up for most,
    down for a channel of a signed layer that helps by being low."""
    images, _ = as_batch(photo, model)
    if len(images) != 1:
        raise StudioError(f"Building blocks explain one photo at a time, not a batch of {len(images)}.")
    inputs = resize_to_input(images, model.spec).detach()
    with attribution_mode(model.module):
        (resolved,) = resolve_targets(model, target, inputs, 1)
    reading = channel_attribution(model, inputs, layer, resolved)
    check_number("top", top, int, minimum=1, maximum=len(reading.attributions))
    order = torch.argsort(reading.attributions, descending=True)[:top]
    total = reading.attributions.clamp_min(0).sum()
    maps = resample(reading.products[order][:, None], tuple(images.shape[2:]))[:, 0]
    key = layer_key(model, layer)
    result = BuildingBlocks(layer_info(model, key).name, resolved, order.tolist(),
                            reading.attributions[order].cpu(),
                            (reading.attributions[order] / total if total > 0 else torch.zeros(top)).cpu(),
                            reading.means[order].cpu(), maps.cpu(), reading.score,
                            [1 if g >= 0 else -1 for g in reading.gradients[order].tolist()])
    if render_channels:
        result.renders = render(model, signed_units(key, result.channels, result.directions), settings,
                                batch=top, **options)
    return result


def signed_units(key: str, channels: list[int], directions: list[int]) -> Objective:
    """Image ``i`` raises channel ``channels[i]`` when ``directions[i]`` is 1 and lowers it when -1."""
    parts = []
    for sign in (1, -1):
        images = [i for i, d in enumerate(directions) if d == sign]
        if images:
            part = units(key, [channels[i] for i in images], images=images)
            parts.append(part if sign == 1 else -part)
    total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    total.name = ", ".join(f"{'-' if d < 0 else ''}{key}:{c}" for c, d in zip(channels, directions))
    return total


@contextmanager
def zeroed(model: StudioModel, layer: str, channels: Sequence[int]) -> Iterator[None]:
    """``channels`` of ``layer`` set to zero in every forward pass inside the block (for a token layer, on its
    patch tokens, the grid the channels were ranked on); the hook is removed on every exit."""
    key = layer_key(model, layer)
    info = layer_info(model, key)
    index = torch.as_tensor(list(channels), dtype=torch.long)

    def hook(_module, _inputs, output):
        output = output.clone()
        if info.layout == "tokens":
            output[:, info.prefix:, index.to(output.device)] = 0
        elif info.layout == "channel-last":
            output[..., index.to(output.device)] = 0
        else:
            output[:, index.to(output.device)] = 0
        return output

    handle = model.module.get_submodule(module_of(model, key)).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def ablate(model: StudioModel, photo: torch.Tensor | str | os.PathLike, layer: str, channels: Sequence[int],
           target: TargetSpec = None) -> float:
    """``target``'s score on ``photo`` with ``channels`` of ``layer`` zeroed (:func:`zeroed`)."""
    images, _ = as_batch(photo, model)
    inputs = resize_to_input(images, model.spec).detach()
    with attribution_mode(model.module):
        targets = resolve_targets(model, target, inputs, len(inputs))
        with zeroed(model, layer, channels), torch.no_grad():
            return float(evaluate(model, inputs, targets)[0][0])


def random_control(model: StudioModel, photo: torch.Tensor | str | os.PathLike, result: BuildingBlocks,
                   draws: int = 8, seed: int = 0) -> tuple[float, torch.Tensor]:
    """The ablation check of a ranking: the score with ``result``'s channels zeroed, and with as many channels
    drawn at random from the layer zeroed instead (``draws`` times), so the ranking is tested, not assumed."""
    check_number("draws", draws, int, minimum=1, maximum=1000)
    count = layer_info(model, layer_key(model, result.layer)).channels
    generator = torch.Generator().manual_seed(seed)
    chosen = ablate(model, photo, result.layer, result.channels, result.target)
    drawn = [ablate(model, photo, result.layer, torch.randperm(count, generator=generator)[:len(result.channels)]
                    .tolist(), result.target) for _ in range(draws)]
    return chosen, torch.tensor(drawn)


def blocks_figure(photo: torch.Tensor, result: BuildingBlocks, examples: Sequence[torch.Tensor | None] | None = None,
                  control: tuple[float, torch.Tensor] | None = None):
    """A matplotlib ``Figure``: the photo, then per channel its map over the photo, its render (with its clean
    activation) and, given ``examples`` (one picture per channel, None for a channel without), its top dataset
    example."""
    from matplotlib.figure import Figure

    from studio.display import overlay
    from studio.io import preview

    rows = 1 + (result.renders is not None) + (examples is not None)
    columns = 1 + len(result.channels)
    figure = Figure(figsize=(1.9 * columns, 2.1 * rows + 0.5), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False)
    for axis in panels.ravel():
        axis.set_axis_off()
    shown = preview(photo.cpu())
    panels[0, 0].imshow(shown.permute(1, 2, 0).numpy())
    panels[0, 0].set_title(f"{result.target.short}\nscore {result.score:.3g}", fontsize=8)
    for j, channel in enumerate(result.channels, 1):
        panels[0, j].imshow(overlay(shown, result.maps[j - 1], signed=True).permute(1, 2, 0).numpy())
        panels[0, j].set_title(f"{result.layer}:{channel}\n{result.attributions[j - 1]:.3g} "
                               f"({100 * result.shares[j - 1]:.0f} %)", fontsize=8)
    row = 1
    if result.renders is not None:
        panels[row, 0].text(0.5, 0.5, "renders", ha="center", va="center", fontsize=9)
        for j, (image, value, direction) in enumerate(zip(result.renders.images, result.renders.clean_values.tolist(),
                                                          result.directions), 1):
            panels[row, j].imshow(preview(image.cpu()).permute(1, 2, 0).numpy())
            panels[row, j].set_title(f"{'raised' if direction > 0 else 'lowered'}: {direction * value:.3g}",
                                     fontsize=8)
        row += 1
    if examples is not None:
        panels[row, 0].text(0.5, 0.5, "top dataset\nexample", ha="center", va="center", fontsize=9)
        for j, crop in enumerate(examples, 1):
            if crop is not None:
                panels[row, j].imshow(preview(crop.cpu()).permute(1, 2, 0).numpy())
    title = f"Building blocks of {result.target.short} in {result.layer} (activation x gradient, summed)"
    if control is not None:
        chosen, drawn = control
        title += (f"\nzeroing these {len(result.channels)}: score {result.score:.3g} -> {chosen:.3g}; "
                  f"{len(result.channels)} random channels: {drawn.mean():.3g} (mean of {len(drawn)})")
    figure.suptitle(title, fontsize=9)
    return figure
