"""The Feature Studio dock widget: feature visualisations streamed live into an image layer, and
attribution heat maps (saliency, SmoothGrad, Integrated Gradients, Grad-CAM) as overlay layers.

The render runs :func:`studio.viewer.streaming.stream` (the engine's generator) in a napari generator
worker; every step yields, so Stop and napari's cancel take effect within a step, and every few steps the
image layer's data is replaced in place. Layers are only touched in the main thread (signal handlers).
"""

from __future__ import annotations

import threading
import time
from functools import partial

import numpy as np
import torch
from magicgui.widgets import ComboBox, Container, FloatSlider, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCompleter, QFileDialog

from studio.errors import StudioError
from studio.models import DEFAULT_MODEL, EMBEDDED, StudioModel, load_model
from studio.targets import LOGITS, OUTPUT, resolve_layer
from studio.viewer.streaming import (ATTRIBUTION_TARGETS, FIELD_RANGES, KINDS, METHODS, Frame, Heatmap, RenderRequest, WorkerError,
                                     attribute_images, explain, images_from_layer, layer_name, stream)

DEFAULT_LAYER = "blocks.4"
HEATMAP_COLORMAPS = ("turbo", "inferno", "magma", "viridis", "PiYG")
#: Colormap used instead of a sequential one when a heat map has negative values.
SIGNED_COLORMAP = "PiYG"
HEATMAP_KEY = "studio_heatmap"
TARGETS_KEY = "studio_targets"
#: Seconds between status-text and progress-bar refreshes for steps that bring no image.
STATUS_INTERVAL = 0.25


def _drive(frames):
    """Generator function the worker runs (a generator *function*, so napari makes a GeneratorWorker)."""
    return (yield from frames)


def _load(spec: str, device: str) -> StudioModel:
    """Load a model and record its layer shapes (a forward pass), off the main thread."""
    try:
        model = load_model(spec, device=device)
        _ = model.layer_shapes
    except RuntimeError as error:
        raise WorkerError(explain(error)) from error
    return model


def devices() -> list[str]:
    """Devices to offer: CUDA first when present, then the CPU."""
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] + ["cpu"]


class StudioWidget(Container):
    """Dock widget: pick a model, layer, unit and settings, press Run and watch the image form; pick an
    image layer, a method and a target, press Attribute and get a heat map overlay.

    ``model`` skips loading (tests, ``studio view``); otherwise ``autoload`` loads the model named in the
    model field in the background.
    """

    #: Emitted (main thread) after a frame's images are shown in the render layer.
    frame_shown = Signal(object)
    #: Emitted when a render ends (finished, stopped or failed), with the last frame or None.
    render_finished = Signal(object)
    #: Emitted with the new or updated heat-map layer.
    attribution_added = Signal(object)
    #: Emitted when an attribution job ends, successfully or not.
    attribution_finished = Signal()
    #: Emitted with the loaded model.
    model_loaded = Signal(object)
    #: Emitted with the message of every error shown to the user.
    failed = Signal(str)

    def __init__(self, napari_viewer, model: StudioModel | None = None, autoload: bool = True) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model: StudioModel | None = None
        self._model_key: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None
        self._last_frame: Frame | None = None
        self._status_time = 0.0
        self._render_name = ""
        self._targets: list[str] = []
        self.render_worker = None
        self.attribution_worker = None
        self.load_worker = None
        self.render_layer: Image | None = None
        self.progress_bar: progress | None = None

        self.model_name = LineEdit(name="model", value=DEFAULT_MODEL,
                                   tooltip="efficientnet_lite0, torchvision:NAME, timm:NAME, file.py:factory or model.pt")
        self.browse_button = PushButton(text="File…", tooltip="pick a saved model (.pt, .pth, .ts) or a .py file")
        self.load_button = PushButton(text="Load")
        self.device = ComboBox(name="device", choices=devices())
        self.model_info = Label(value="no model loaded")
        self.layer = ComboBox(name="layer", choices=self._layer_choices, tooltip="module path, with its output shape")
        self.kind = ComboBox(name="objective", choices=list(KINDS), value="channel")
        self.channel = SpinBox(name="channel", min=0, max=0, value=0)
        self.class_name = LineEdit(name="class", value="", tooltip="class label (with completion) or index")
        self.row = SpinBox(name="row", min=0, max=0)
        self.column = SpinBox(name="column", min=0, max=0)
        self.count = SpinBox(name="channels_at_once", label="channels at once", min=FIELD_RANGES["count"][0],
                             max=FIELD_RANGES["count"][1], value=1,
                             tooltip="render this many consecutive units as a stack (slider axis)")
        self.param = ComboBox(name="parameterisation", choices=["fourier", "pixel"], value="fourier")
        self.steps = SpinBox(name="steps", min=FIELD_RANGES["steps"][0], max=FIELD_RANGES["steps"][1], value=256)
        self.size = SpinBox(name="image_size", label="image size", min=FIELD_RANGES["size"][0],
                            max=FIELD_RANGES["size"][1], step=16, value=128)
        self.every = SpinBox(name="update_every", label="update every", min=1, max=1000, value=4,
                             tooltip="show the image every N steps")
        self.seed = SpinBox(name="seed", min=FIELD_RANGES["seed"][0], max=FIELD_RANGES["seed"][1], value=0)
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")

        self.source = ComboBox(name="image_layer", label="image layer", choices=self._source_choices,
                               tooltip="a photo (File → Open) or a rendered visualisation")
        self.method = ComboBox(name="method", choices=list(METHODS), value="gradcam")
        self.attribution_target = ComboBox(name="explain", choices=list(ATTRIBUTION_TARGETS), value="top class")
        self.attribution_class = LineEdit(name="explain_class", label="class", value="")
        self.colormap = ComboBox(name="colormap", choices=list(HEATMAP_COLORMAPS), value="turbo")
        self.blending = ComboBox(name="blending", choices=["translucent", "additive"], value="translucent")
        self.opacity = FloatSlider(name="opacity", min=0.0, max=1.0, step=0.05, value=0.5)
        self.attribute_button = PushButton(text="Attribute")
        self.message = Label(value="")

        self.extend([
            Label(label="", value="<b>Model</b>"),
            Container(layout="horizontal", labels=False, label="model",
                      widgets=[self.model_name, self.browse_button, self.load_button]),
            self.device, self.model_info,
            Label(label="", value="<b>Feature visualisation</b>"),
            self.layer, self.kind, self.channel, self.class_name, self.row, self.column, self.count,
            self.param, self.steps, self.size, self.every, self.seed,
            Container(layout="horizontal", labels=False, widgets=[self.run_button, self.stop_button]),
            self.status,
            Label(label="", value="<b>Attribution</b>"),
            self.source, self.method, self.attribution_target, self.attribution_class,
            self.colormap, self.blending, self.opacity, self.attribute_button,
            self.message,
        ])
        for label in (self.status, self.message, self.model_info):
            label.native.setWordWrap(True)
            label.native.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.load_button.changed.connect(lambda: self.load())
        self.browse_button.changed.connect(self._browse)
        self.layer.changed.connect(self._update_unit_fields)
        self.kind.changed.connect(self._update_unit_fields)
        self.attribution_target.changed.connect(self._update_attribution_fields)
        self.run_button.changed.connect(lambda: self.run())
        self.stop_button.changed.connect(self.stop)
        self.attribute_button.changed.connect(lambda: self.attribute())
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_sources)

        self._update_attribution_fields()
        if model is not None:
            self.set_model(model)
        else:
            self._update_unit_fields()
            if autoload:
                self.load()

    # ---------------------------------------------------------------- model

    @property
    def busy(self) -> bool:
        """Whether a render, an attribution or a model load is running."""
        return any(w is not None for w in (self.render_worker, self.attribution_worker, self.load_worker))

    def load(self, then=None) -> None:
        """Load the model named in the model field, in a worker; ``then()`` runs once it is loaded."""
        if self.load_worker is not None:
            return
        spec, device = self.model_name.value.strip() or DEFAULT_MODEL, self.device.value
        self.model_info.value = f"loading {spec} on {device} ..."
        worker = create_worker(_load, spec, device, _ignore_errors=True, _progress={"desc": f"Loading {spec}"})
        worker.returned.connect(partial(self._on_loaded, spec, device, then))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_load_finished)
        self.load_worker = worker
        self._update_buttons()
        worker.start()

    def _on_loaded(self, spec: str, device: str, then, model: StudioModel) -> None:
        self.set_model(model, key=(spec, device))
        if then is not None:
            then()

    def _on_load_finished(self) -> None:
        self.load_worker = None
        if self.model is None:
            self.model_info.value = "no model loaded"
        self._update_buttons()

    def set_model(self, model: StudioModel, key: tuple[str, str] | None = None) -> None:
        """Use an already loaded model: fill the layer list (with shapes) and the class completions."""
        self.model = model
        device = str(model.device)
        if key is None:
            self.model_name.value = model.name
            if device not in self.device.choices:
                self.device.choices = [*self.device.choices, device]
            self.device.value = device
            key = (model.name, device)
        self._model_key = key
        shapes = model.layer_shapes
        current = self.layer.value
        self.layer.reset_choices()
        names = list(self.layer.choices)
        self.layer.value = current if current in names else (DEFAULT_LAYER if DEFAULT_LAYER in names
                                                             else names[len(names) // 2])
        classes = [c.strip() for d in (model.class_names or []) for c in d.split(",")]
        for field in (self.class_name, self.attribution_class):
            completer = QCompleter(sorted(set(classes), key=str.lower), field.native)
            completer.setCaseSensitivity(Qt.CaseInsensitive)
            completer.setFilterMode(Qt.MatchContains)
            field.native.setCompleter(completer)
        if model.class_names:
            self.class_name.value = self.class_name.value or model.class_label(0)
        size = "×".join(map(str, model.spec.size))
        self.model_info.value = f"{model.name} · input {size} · {len(shapes)} layers · {device}"
        self._update_unit_fields()
        self.model_loaded.emit(model)

    def _layer_choices(self, *_) -> list[tuple[str, str]]:
        """Every layer of the loaded model with its output shape (choices of a combo box must come from a
        callable: magicgui resets static choices when the widget is docked)."""
        if self.model is None:
            return []
        return [(f"{layer_name(name)}   {'×'.join(map(str, shape))}", layer_name(name))
                for name, shape in self.model.layer_shapes.items()]

    def _model_ready(self) -> bool:
        spec = self.model_name.value.strip() or DEFAULT_MODEL
        return self.model is not None and self._model_key == (spec, self.device.value)

    def _browse(self, *_) -> None:
        path, _ = QFileDialog.getOpenFileName(self.native, "Model file", "",
                                              "Models (*.pt *.pth *.ts *.py);;All files (*)")
        if path:
            self.model_name.value = f"{path}:model" if path.endswith(".py") else path
            self.show_message("Name the factory function after the colon, then press Load."
                              if path.endswith(".py") else "Press Load to load it.")

    # ------------------------------------------------------------ render fields

    def _update_unit_fields(self, *_) -> None:
        layer = self.layer.value
        shape = None
        if self.model is not None and layer:
            shape = self.model.layer_shapes.get(resolve_layer(self.model, layer))
        is_logits = layer in (LOGITS, OUTPUT)
        kind = self.kind.value
        self.class_name.visible = is_logits and kind != "layer"
        self.channel.visible = not is_logits and kind != "layer"
        self.row.visible = self.column.visible = kind == "neuron"
        self.count.enabled = kind != "layer"
        if shape:
            self.channel.max = max(0, shape[0] - 1)
            if len(shape) == 3:
                self.row.max, self.column.max = shape[1] - 1, shape[2] - 1
                self.row.value, self.column.value = shape[1] // 2, shape[2] // 2

    def request(self) -> RenderRequest:
        """The render the fields describe."""
        unit = self.class_name.value if self.layer.value in (LOGITS, OUTPUT) else self.channel.value
        position = (self.row.value, self.column.value) if self.kind.value == "neuron" else None
        return RenderRequest(layer=self.layer.value or DEFAULT_LAYER, kind=self.kind.value, unit=unit,
                             count=self.count.value, position=position, param=self.param.value,
                             steps=self.steps.value, size=self.size.value, seed=self.seed.value,
                             every=self.every.value)

    def fill(self, target: str | None = None, **fields) -> None:
        """Fill the fields from a target string (``blocks.4:12``, ``blocks.4:3@7,7``, ``logits:"tabby"``)
        and field values by name (``steps=64, size=128, count=4, seed=0, param="pixel"``)."""
        names = {"steps": self.steps, "size": self.size, "count": self.count, "seed": self.seed,
                 "param": self.param, "every": self.every, "method": self.method}
        for key, value in fields.items():
            if value is not None:
                names[key].value = value
        if target is None:
            return
        if self.model is None:
            raise StudioError("Load a model before filling in a target.")
        from studio.targets import parse_target

        parsed = parse_target(target, self.model)
        self.layer.value = layer_name(parsed.layer)
        self.kind.value = "layer" if parsed.channel is None else ("neuron" if parsed.position else "channel")
        self._update_unit_fields()
        if parsed.channel is not None:
            if parsed.layer == OUTPUT and self.model.class_names:
                self.class_name.value = self.model.class_label(parsed.channel)
            else:
                self.channel.value = parsed.channel
        if parsed.position is not None:
            self.row.value, self.column.value = parsed.position

    # ------------------------------------------------------------------ render

    def run(self) -> None:
        """Start a render with the current fields (loading the model first if its field changed)."""
        if self.render_worker is not None or self.load_worker is not None:
            self.show_message("A render or a model load is running; wait for it or press Stop.")
            return
        if not self._model_ready():
            self.load(then=self.run)
            return
        request = self.request()
        try:
            targets = request.targets(self.model)
            name = request.label(self.model)
        except StudioError as error:
            self.show_message(str(error), error=True)
            return
        self._targets, self._render_name, self._last_frame = targets, name, None
        self._stop = threading.Event()
        frames = stream(self.model, targets, every=request.every, lock=self._lock, stop=self._stop,
                        **request.settings())
        # Our own napari progress bar, advanced at most a few times a second: with software OpenGL every
        # repaint of the window costs a full composite, and a per-step bar slowed renders several-fold.
        self.progress_bar = progress(total=request.steps, desc=f"Rendering {name}")
        worker = create_worker(_drive, frames, _ignore_errors=True)
        worker.yielded.connect(self._on_frame)
        worker.returned.connect(self._on_render_returned)
        worker.errored.connect(self._on_error)
        worker.finished.connect(partial(self._on_render_finished, frames))
        self.render_worker = worker
        self.status.value = f"rendering {name} ..."
        self.show_message("")
        self._update_buttons()
        worker.start()

    def stop(self, *_) -> None:
        """Stop the render after the current step; the last image stays."""
        if self._stop is not None:
            self._stop.set()

    def _on_frame(self, frame: Frame) -> None:
        self._last_frame = frame
        now = time.perf_counter()
        if frame.images is None and now - self._status_time < STATUS_INTERVAL:
            return  # a step without images: refresh the text at most a few times a second
        self._status_time = now
        if self.progress_bar is not None:
            self.progress_bar.update(frame.step - self.progress_bar.n)
        values = ", ".join(f"{v:.3g}" for v in frame.values[:4]) + (" ..." if len(frame.values) > 4 else "")
        state = "stopped at" if frame.stopped else ("done," if frame.done else "step")
        self.status.value = (f"{self._render_name}: {state} {frame.step}/{frame.steps} · objective {values} · "
                             f"{frame.steps_per_second:.1f} steps/s")
        if frame.images is not None:
            self._show(frame.images)
            self.frame_shown.emit(frame)

    def _on_render_returned(self, frame: Frame | None) -> None:
        if frame is not None and frame.stopped:
            self._on_frame(frame)

    def _on_render_finished(self, frames) -> None:
        frames.close()  # after a napari cancel (quit) the generator is suspended: close it, restoring the model
        if self.progress_bar is not None:
            self.progress_bar.close()
        self.render_worker = None
        self._stop = None
        self._update_buttons()
        self.render_finished.emit(self._last_frame)

    def _show(self, images: np.ndarray) -> None:
        """Put images ``[B, H, W, 3]`` in the render layer: replace its data, or create it once."""
        data = images[0] if len(images) == 1 else images
        layer = self.render_layer
        if layer is None or layer not in self.viewer.layers or layer.name != self._render_name:
            existing = self.viewer.layers[self._render_name] if self._render_name in self.viewer.layers else None
            if isinstance(existing, Image) and existing.rgb:
                layer = existing
            else:
                layer = self.viewer.add_image(data, rgb=True, name=self._render_name, contrast_limits=(0, 1))
                self._place_beside_others(layer)
                if data.ndim == 4 and self.viewer.dims.ndim == 3:
                    self.viewer.dims.axis_labels = ("unit", *self.viewer.dims.axis_labels[1:])
        if layer.data is not data:
            layer.data = data
        layer.metadata[TARGETS_KEY] = list(self._targets)
        self.render_layer = layer
        self.source.reset_choices()

    def _place_beside_others(self, layer: Image) -> None:
        """Scale a new render to the height of the other images and put it to their left."""
        others = [other for other in self.viewer.layers
                  if other is not layer and isinstance(other, Image) and not other.metadata.get(HEATMAP_KEY)]
        if not others:
            return
        extents = np.array([other.extent.world[:, -2:] for other in others])
        top, left = extents[:, 0, 0].min(), extents[:, 0, 1].min()
        height = extents[:, 1, 0].max() - top
        rows, cols = layer.data.shape[-3:-1]
        scale = height / rows
        layer.scale = (*layer.scale[:-2], scale, scale)
        layer.translate = (*layer.translate[:-2], top, left - cols * scale - 0.05 * height)
        self.viewer.reset_view()

    # ------------------------------------------------------------- attribution

    def _source_choices(self, *_) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and not layer.metadata.get(HEATMAP_KEY)]

    def _refresh_sources(self, *_) -> None:
        self.source.reset_choices()

    def _update_attribution_fields(self, *_) -> None:
        self.attribution_class.visible = self.attribution_target.value == "class"

    def attribution_targets(self, layer: Image) -> list:
        """Targets for an attribution of ``layer``: ``[None]`` (top class), a class, or the visualised unit
        (per image for a rendered stack; for a photo, the unit on the slider's current position)."""
        choice = self.attribution_target.value
        if choice == "top class":
            return [None]
        if choice == "class":
            text = self.attribution_class.value.strip().strip("\"'")
            if not text:
                raise StudioError("Type a class name (or index) to explain.")
            return [int(text) if text.isdigit() else text]
        rendered = layer.metadata.get(TARGETS_KEY)
        if rendered:
            return list(rendered)
        targets = self._targets or self.request().targets(self.model)
        index = self.viewer.dims.current_step[0] if len(targets) > 1 and self.viewer.dims.ndim > 2 else 0
        return [targets[min(max(int(index), 0), len(targets) - 1)]]

    def attribute(self, layer: Image | None = None) -> None:
        """Explain the image(s) of ``layer`` (default: the chosen image layer) with the chosen method and
        target, in a worker; the heat map arrives as an overlay layer aligned with the image."""
        if self.attribution_worker is not None or self.load_worker is not None:
            self.show_message("An attribution or a model load is running; wait for it to finish.")
            return
        if not self._model_ready():
            self.load(then=partial(self.attribute, layer))
            return
        layer = layer if layer is not None else self.source.value
        if layer is None:
            self.show_message("Open a photo (File → Open) or render a visualisation, then pick it as the image layer.",
                              error=True)
            return
        try:
            images = images_from_layer(layer.data, layer.rgb, layer.contrast_limits)
            targets = self.attribution_targets(layer)
        except StudioError as error:
            self.show_message(str(error), error=True)
            return
        method = self.method.value
        worker = create_worker(attribute_images, self.model, images, method, targets, self._lock,
                               _ignore_errors=True, _progress={"desc": f"{method} of {layer.name}"})
        worker.returned.connect(partial(self._add_heatmap, layer))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_attribution_finished)
        self.attribution_worker = worker
        self.show_message(f"{method} of {layer.name} ...")
        self._update_buttons()
        worker.start()

    def _on_attribution_finished(self) -> None:
        self.attribution_worker = None
        self._update_buttons()
        self.attribution_finished.emit()

    def _add_heatmap(self, source: Image, heat: Heatmap) -> None:
        data = heat.maps[0] if source.ndim == 2 else heat.maps
        name = f"{source.name} · {heat.method} · {heat.target_label}"
        low, high = float(data.min()), float(data.max())
        colormap = self.colormap.value
        if low < 0:
            bound = max(abs(low), abs(high), 1e-12)
            limits, colormap = (-bound, bound), SIGNED_COLORMAP
        else:
            limits = (low, high if high > low else low + 1e-12)
        metadata = {HEATMAP_KEY: True, "source": source.name, "method": heat.method, "target": heat.target_label}
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
        self.show_message(f"added {name} (values {low:.3g} to {high:.3g})")
        self.attribution_added.emit(layer)

    # ------------------------------------------------------------------ common

    def _on_error(self, error: BaseException) -> None:
        self.show_message(explain(error), error=True)

    def show_message(self, text: str, error: bool = False) -> None:
        """Show a message under the widget (errors in red, and as a napari notification)."""
        self.message.value = text
        self.message.native.setStyleSheet("color: #ff6b6b;" if error else "")
        if error:
            self.failed.emit(text)
            show_error(text)

    def _update_buttons(self) -> None:
        rendering, loading = self.render_worker is not None, self.load_worker is not None
        self.run_button.enabled = not rendering and not loading
        self.stop_button.enabled = rendering
        self.load_button.enabled = not loading and not rendering
        self.attribute_button.enabled = self.attribution_worker is None and not loading
