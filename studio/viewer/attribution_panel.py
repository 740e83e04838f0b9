"""The attribution panel: pick an image layer, a method and what to explain; :meth:`AttributionPanel.start`
computes the heat maps in a worker and adds them as overlay layers aligned with the image (with its axes:
a volume's map is a volume)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from magicgui.widgets import ComboBox, Container, FloatSlider, LineEdit, PushButton
from napari.layers import Image
from napari.qt.threading import create_worker
from psygnal import Signal

from studio.errors import StudioError
from studio.models import StudioModel
from studio.targets import OUTPUT, Target, parse_target
from studio.viewer.fields import complete_classes
from studio.viewer.layers import shows_model_images
from studio.viewer.streaming import (ATTRIBUTION_TARGETS, CHANNELS_KEY, HEATMAP_KEY, METHODS, TARGETS_KEY, Heatmap,
                                     attribute_images, error_message, images_from_layer, overlay)

HEATMAP_COLORMAPS = ("turbo", "inferno", "magma", "viridis", "PiYG")
#: The colormap and blending a heat map starts with, by the model's spatial dimensions: over a volume (drawn
#: as its maximum along the view), a map black at zero and added leaves the data visible where it is cold.
HEATMAP_LOOKS = {2: ("turbo", "translucent"), 3: ("inferno", "additive")}
#: Colormap used instead of a sequential one when a heat map has negative values.
SIGNED_COLORMAP = "PiYG"


class AttributionPanel(Container):
    """Explain an image layer (a photo or a render) with a heat map per image.

    ``visualised`` gives the units being visualised (for "visualised unit" on a photo); ``lock`` is shared
    with the render panel. The model comes from :meth:`set_model`; messages go out through ``message``.
    """

    #: Emitted with the new or updated heat-map layer.
    added = Signal(object)
    #: Emitted when an attribution job ends, successfully or not.
    finished = Signal()
    #: A message for the user, and whether it is an error.
    message = Signal(str, bool)

    def __init__(self, napari_viewer, lock: threading.Lock, visualised: Callable[[], list[Target]]) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model: StudioModel | None = None
        self._lock = lock
        self._visualised = visualised
        self.worker = None

        self.source = ComboBox(name="image_layer", label="image layer", choices=self._source_choices,
                               tooltip="a photo (File → Open) or a rendered visualisation")
        self.method = ComboBox(name="method", choices=list(METHODS), value=METHODS[0])
        self.explain = ComboBox(name="explain", choices=list(ATTRIBUTION_TARGETS), value=ATTRIBUTION_TARGETS[0])
        self.class_name = LineEdit(name="explain_class", label="class", value="",
                                   tooltip="class label (with completion) or index")
        self.colormap = ComboBox(name="colormap", choices=list(HEATMAP_COLORMAPS), value=HEATMAP_LOOKS[2][0])
        self.blending = ComboBox(name="blending", choices=["translucent", "additive"], value=HEATMAP_LOOKS[2][1])
        self.opacity = FloatSlider(name="opacity", min=0.0, max=1.0, step=0.05, value=0.5)
        self.attribute_button = PushButton(text="Attribute")
        self.extend([self.source, self.method, self.explain, self.class_name, self.colormap, self.blending,
                     self.opacity, self.attribute_button])

        self.explain.changed.connect(self._update_class_field)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_sources)
        self._update_class_field()

    def set_model(self, model: StudioModel) -> None:
        """Explain with ``model``; complete its class labels; start heat maps with the look for its images."""
        self.model = model
        complete_classes(self.class_name, model)
        self.colormap.value, self.blending.value = HEATMAP_LOOKS[model.spec.dims]

    def update_buttons(self, loading: bool) -> None:
        """Attribute while idle and no model is loading."""
        self.attribute_button.enabled = self.worker is None and not loading

    def _source_choices(self, *_) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers if shows_model_images(layer)]

    def _refresh_sources(self, *_) -> None:
        self.source.reset_choices()

    def _update_class_field(self, *_) -> None:
        self.class_name.visible = self.explain.value == "class"

    def targets(self, layer: Image) -> list[Target | None]:
        """What to explain in ``layer``: ``[None]`` (top class), a class, or the visualised unit (per image for
        a rendered stack; for a photo, the unit on the slider's current position)."""
        choice = self.explain.value
        if choice == "top class":
            return [None]
        if choice == "class":
            text = self.class_name.value.strip().strip("\"'")
            if not text:
                raise StudioError("Type a class name (or index) to explain.")
            target = parse_target(text, self.model)
            if target.layer != OUTPUT or target.whole_layer:
                raise StudioError(f"{text!r} is not a class of {self.model.name}; type a class label or index.")
            return [target]
        rendered = layer.metadata.get(TARGETS_KEY)
        if rendered:
            return [parse_target(name, self.model) for name in rendered]
        targets = self._visualised()
        stacked = self.viewer.dims.ndim > self.model.spec.dims
        index = self.viewer.dims.current_step[0] if len(targets) > 1 and stacked else 0
        return [targets[min(max(int(index), 0), len(targets) - 1)]]

    def images(self, layer: Image) -> torch.Tensor:
        """The model's images ``[B, C, *size]`` that ``layer`` shows: a channel set's whole images (any of its
        layers stands for them), else the layer's own data."""
        channels = layer.metadata.get(CHANNELS_KEY)
        if channels is not None:
            return torch.from_numpy(channels.images)
        return images_from_layer(layer.data, layer.rgb, layer.contrast_limits, self.model.spec)

    def start(self, layer: Image | None = None) -> None:
        """Explain the image(s) of ``layer`` (default: the chosen image layer) with the panel's model, method
        and target, in a worker; the heat map arrives as an overlay layer aligned with the image."""
        layer = layer if layer is not None else self.source.value
        if layer is None:
            self.message.emit("Open a photo (File → Open) or render a visualisation, then pick it as the image "
                              "layer.", True)
            return
        try:
            images = self.images(layer)
            targets = self.targets(layer)
        except StudioError as error:
            self.message.emit(str(error), True)
            return
        method = self.method.value
        worker = create_worker(attribute_images, self.model, images, method, targets, self._lock,
                               _ignore_errors=True, _progress={"desc": f"{method} of {layer.name}"})
        worker.returned.connect(partial(self._add_heatmap, layer))
        worker.errored.connect(lambda error: self.message.emit(error_message(error), True))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.message.emit(f"{method} of {layer.name} ...", False)
        worker.start()

    def _on_finished(self) -> None:
        self.worker = None
        self.finished.emit()

    def _add_heatmap(self, source: Image, heat: Heatmap) -> None:
        channels = source.metadata.get(CHANNELS_KEY)
        name = f"{channels.name if channels is not None else source.name} · {heat.method} · {heat.target_label}"
        layer, (low, high) = self.show_map(source, heat.maps, name, {
            "method": heat.method, "target": heat.target_label,
            "deletion_auc": heat.deletion_auc.tolist(), "insertion_auc": heat.insertion_auc.tolist()})
        self.message.emit(f"added {name} (values {low:.3g} to {high:.3g}) · {heat.faithfulness()}", False)
        self.added.emit(layer)

    def show_map(self, source: Image, maps: np.ndarray, name: str, metadata: dict) -> tuple[Image, tuple[float, float]]:
        """Show ``maps`` ``[B, *size]`` over ``source`` as the heat-map layer ``name`` (updated in place when it
        exists; the panel's colormap, or a diverging one for signed values); the layer and the maps' range."""
        data = overlay(maps, source.data.shape[:-1] if source.rgb else source.data.shape)
        low, high = float(data.min()), float(data.max())
        colormap = self.colormap.value
        if low < 0:
            bound = max(abs(low), abs(high), 1e-12)
            limits, colormap = (-bound, bound), SIGNED_COLORMAP
        else:
            limits = (low, high if high > low else low + 1e-12)
        metadata = {HEATMAP_KEY: True, "source": source.name, **metadata}
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.contrast_limits = limits
            layer.metadata.update(metadata)
        else:
            layer = self.viewer.add_image(data, name=name, colormap=colormap, blending=self.blending.value,
                                          opacity=self.opacity.value, contrast_limits=limits, scale=source.scale,
                                          translate=source.translate, rotate=source.rotate, shear=source.shear,
                                          affine=source.affine, metadata=metadata)
        return layer, (low, high)
