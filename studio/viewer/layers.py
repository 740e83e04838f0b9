"""Images as napari layers: a model's images (:func:`studio.viewer.streaming.to_napari` data) shown as one
RGB layer, one grey layer, or one layer per channel on napari's channel axis (additive), volumes as 3D
layers; found again by name and updated in place; placed on the canvas by their spatial axes, and beside
each other."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from napari.layers import Image

from studio.viewer.streaming import (CHANNELS_KEY, EXAMPLES_KEY, GRID_KEY, HEATMAP_KEY, ChannelSet, channel_names,
                                     layer_arrays)

#: Gap between an image and what is placed beside it, as a fraction of the image's height.
GAP = 0.05


def add_image_layers(viewer, images: np.ndarray, rgb: bool, name: str) -> list[Image]:
    """Add layers that show ``images`` in ``[0, 1]``: an RGB layer, a grey one, or one per channel (napari's
    channel axis, additive blending, its channel colours)."""
    arrays = layer_arrays(images, rgb)
    names = channel_names(name, len(arrays))
    if len(arrays) > 1:
        layers = viewer.add_image(np.stack(arrays), channel_axis=0, name=names, blending="additive",
                                  contrast_limits=(0, 1))
    else:
        layers = [viewer.add_image(arrays[0], rgb=rgb, name=name, contrast_limits=(0, 1),
                                   **({} if rgb else {"colormap": "gray"}))]
    update_image_layers(layers, images, rgb, name)
    return layers


def find_image_layers(viewer, images: np.ndarray, rgb: bool, name: str) -> list[Image] | None:
    """The layers named for ``images`` (see :func:`add_image_layers`) when they can show them, else None."""
    arrays = layer_arrays(images, rgb)
    layers = [viewer.layers[layer] if layer in viewer.layers else None for layer in channel_names(name, len(arrays))]
    fits = all(isinstance(layer, Image) and layer.rgb == rgb and layer.data.ndim == array.ndim
               for layer, array in zip(layers, arrays))
    return layers if fits else None


def update_image_layers(layers: Sequence[Image], images: np.ndarray, rgb: bool, name: str) -> None:
    """Show new ``images`` in the layers that show their set, replacing each layer's data in place; a
    channel set's layers also hold the whole set (:class:`ChannelSet`), for attribution."""
    arrays = layer_arrays(images, rgb)
    channels = ChannelSet(name, images) if len(arrays) > 1 else None
    for layer, array in zip(layers, arrays):
        layer.data = array
        if channels is not None:
            layer.metadata[CHANNELS_KEY] = channels


def image_shape(layer: Image) -> tuple[int, int]:
    """A layer's height and width in data pixels (the last two spatial axes)."""
    shape = layer.data.shape
    return tuple(shape[-3:-1]) if layer.rgb else tuple(shape[-2:])


def shows_model_images(layer) -> bool:
    """Whether a layer holds images the model takes (a photo, a render), not a heat map or dataset examples."""
    return isinstance(layer, Image) and not any(layer.metadata.get(key) for key in (HEATMAP_KEY, EXAMPLES_KEY, GRID_KEY))


def place(layer: Image, scale: float, top: float, left: float, dims: int) -> None:
    """Scale a layer's ``dims`` spatial axes by ``scale`` (a volume's depth too, so voxels stay cubes) and put
    its top-left corner at ``(top, left)``; leading axes (the unit slider) keep their place. A layer already
    there is left alone (no redraw), so calling it on every frame costs nothing."""
    lead = layer.ndim - dims
    scales = (*layer.scale[:lead], *[scale] * dims)
    offsets = (*layer.translate[:lead], *[0.0] * (dims - 2), top, left)
    if not (np.allclose(layer.scale, scales) and np.allclose(layer.translate, offsets)):
        layer.scale, layer.translate = scales, offsets


def place_right_of(layers: Sequence[Image], anchors: Sequence[Image], dims: int, make_room: bool = False) -> None:
    """Scale ``layers`` to the height of ``anchors`` (the layers of one image set) and put them just right of it,
    pixel edges level; ``make_room`` first moves the anchors left by that width, so the layers cover nothing
    that was beside them."""
    (rows, columns), step = image_shape(anchors[0]), float(anchors[0].scale[-1])
    top, left = (float(offset) - step / 2 for offset in anchors[0].translate[-2:])  # pixel edges, not centres
    scale = rows * step / image_shape(layers[0])[0]
    gap = GAP * rows * step
    if make_room:
        left -= image_shape(layers[0])[1] * scale + gap
        for layer in anchors:
            place(layer, step, top + step / 2, left + step / 2, dims)
    for layer in layers:
        place(layer, scale, top + scale / 2, left + columns * step + gap + scale / 2, dims)


def show_boxes(viewer, boxes: np.ndarray, anchor: Image, name: str):
    """The crop boxes of a canvas step (``[B, K, 2, 2]``: start and stop of rows and columns) as rectangles of
    a shapes layer ``name`` over ``anchor`` (its scale and place; corners on pixel edges), hidden until the user
    turns it on; a batch's boxes sit on its unit slider. Returns the layer."""
    lead = anchor.ndim - 2  # the unit slider (napari's ndim leaves out an RGB layer's colour axis)
    rectangles = []
    for unit, unit_boxes in enumerate(boxes):
        for (top, bottom), (left, right) in unit_boxes:
            corners = np.array([[top, left], [top, right], [bottom, right], [bottom, left]], dtype=float) - 0.5
            rectangles.append(np.concatenate([np.full((4, lead), unit), corners], 1) if lead else corners)
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = rectangles
        layer.shape_type = ["rectangle"] * len(rectangles)
    else:
        layer = viewer.add_shapes(rectangles, shape_type="rectangle", name=name, edge_color="yellow",
                                  face_color="transparent", edge_width=2, visible=False)
    layer.scale, layer.translate = anchor.scale, anchor.translate
    return layer
