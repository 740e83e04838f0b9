"""A unit's map over its dataset examples: the activation of its channel (or concept) at every position of
the layer's grid for an example's image, brought to the file's own pixels and cut to the example's crop box,
so a crop shows where in it the unit responds."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from studio.errors import StudioError
from studio.exemplars.query import Example
from studio.hooks import frozen
from studio.display import overlay
from studio.io import preview, read_input
from studio.models import StudioModel, resize_to_input
from studio.targets import Target, activations, layer_info, parse_target

#: Images read through the model at a time.
BATCH = 16


def map_picture(crop: torch.Tensor, heat: torch.Tensor, scale: float) -> torch.Tensor:
    """A unit's map over a crop (:func:`example_maps`) blended over the crop's picture (:func:`studio.io.preview`),
    ``scale`` being the value shown at full colour (one per unit, so its crops compare): ``[3, h, w]``; a
    volume's map ``[d, h, w]`` by its maximum along depth, like its crop."""
    return overlay(preview(crop), heat.amax(0) if heat.dim() == 3 else heat, scale=scale)


def has_positions(model: StudioModel, target: str | Target) -> bool:
    """Whether a channel (or concept) has a map over positions, not a vector's value such as a logit."""
    unit = parse_target(target, model)
    return unit.channel is not None and bool(layer_info(model, unit.layer_key).spatial)


def example_maps(model: StudioModel, examples: Sequence[Example], target: str | Target) -> list[torch.Tensor]:
    """Each example's map ``[h, w]`` (``[d, h, w]`` for a volume) in the unit's own values, aligned with its
    ``crop()``; the maps of a layer without positions (a vector, such as the logits) are refused."""
    unit = parse_target(target, model)
    if not has_positions(model, unit):
        raise StudioError(f"{unit.name} has no map over positions (a whole layer or a vector).")
    maps = []
    for start in range(0, len(examples), BATCH):
        chunk = examples[start:start + BATCH]
        images = [read_input(e.path, model.spec.channels, model.spec.dims) for e in chunk]
        inputs = torch.cat([resize_to_input(image[None], model.spec) for image in images]).to(model.device)
        with torch.no_grad(), frozen(model.module):
            grids = activations(model, model.spec.normalise(inputs), [unit.layer_key])[unit.layer_key][:, unit.channel]
        for grid, image, example in zip(grids.float().cpu(), images, chunk):
            full = F.interpolate(grid[None, None], size=tuple(image.shape[1:]),
                                 mode="bilinear" if grid.dim() == 2 else "trilinear", align_corners=False)[0, 0]
            maps.append(full[tuple(slice(begin, end) for begin, end in example.box)])
    return maps
