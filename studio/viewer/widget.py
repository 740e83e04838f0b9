"""The Feature Studio dock widget: the model section (with an optional dataset-example index, whose top crops
appear beside each render) above the render panel (feature visualisations streamed live into an image layer)
and the attribution panel (heat maps as overlay layers).

The widget owns what the panels share: the model (loaded in a worker, handed to both panels), the lock that
keeps them from running it at once, the message line and which buttons are enabled.
"""

from __future__ import annotations

import threading
from functools import partial

import torch
import torch._dynamo  # noqa: F401  before napari's OpenGL: see the note below
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from psygnal import Signal
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import QFileDialog, QScrollArea

from studio.accentuation import AccentuationPlan, measure_accentuation, plan_accentuation
from studio.errors import StudioError
from studio.models import DEFAULT_MODEL, MODEL_HELP, StudioModel, load_model, runs_code, untrusted_code
from studio.objectives import caricature
from studio.probing import ActivationGrid, Probe, activation_grid, grid_mosaic, mosaic_scale, probe
from studio.targets import layer_target
from studio.viewer.attribution_panel import AttributionPanel
from studio.viewer.blocks_panel import BlocksPanel
from studio.viewer.examples_panel import ExamplesPanel
from studio.viewer.render_panel import RenderPanel
from studio.viewer.layers import image_shape, shows_model_images
from studio.viewer.streaming import ERROR_COLOUR, GRID_KEY, CustomRender, Frame, WorkerError, error_message

# Note: torch's optimisers import torch._dynamo, and with it Triton, on first use. Triton loaded after Mesa's
# software OpenGL (llvmpipe: Xvfb, headless machines) crashes the process, so it is loaded with this module,
# which ``studio view`` and scripts import before napari opens a window. (Opened from napari's plugin menu,
# the window exists first; there only loading Triton before napari helps, e.g. a timm model loaded first.)


#: The model section's opt-in for model files that run code when loaded.
TRUST_TEXT = "run code from this model file"


def _load_model(spec: str, device: str) -> StudioModel:
    """Load a model and record its layer shapes (a forward pass), off the main thread."""
    try:
        model = load_model(spec, device=device)
        _ = model.layer_shapes
    except RuntimeError as error:
        raise WorkerError(error_message(error)) from error
    return model


def _grid_job(model: StudioModel, photo: torch.Tensor, layer: str, stride: int, settings, lock: threading.Lock
              ) -> ActivationGrid:
    """The activation grid, off the main thread, while holding the model."""
    try:
        with lock:
            return activation_grid(model, photo, layer, stride=stride, settings=settings)
    except RuntimeError as error:
        raise WorkerError(error_message(error)) from error


class VerticalScroll(QScrollArea):
    """A scroll area around ``content`` that scrolls vertically only: as wide as the content asks, as short as
    a few rows, so a long dock never makes the window taller than the screen."""

    def __init__(self, content) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setWidget(content)

    def minimumSizeHint(self) -> QSize:
        width = self.widget().sizeHint().width() + self.verticalScrollBar().sizeHint().width()
        return QSize(width, min(self.widget().minimumSizeHint().height(), 120))

    def sizeHint(self) -> QSize:
        return QSize(self.minimumSizeHint().width(), self.widget().sizeHint().height())

    def eventFilter(self, watched, event) -> bool:
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content grew (a long layer name): widen the dock
        return super().eventFilter(watched, event)


def devices() -> list[str]:
    """Devices to offer: CUDA first when present, then the CPU."""
    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] + ["cpu"]


class StudioWidget(Container):
    """Dock widget: pick a model; in the render panel a layer, unit and settings, press Run and watch the
    image form; in the attribution panel an image layer, a method and a target, press Attribute and get a
    heat-map overlay.

    ``model`` skips loading (tests, ``studio view``); otherwise ``autoload`` loads the model named in the
    model field in the background. Run and Attribute load the model first when its fields changed. With an
    examples index (:meth:`ExamplesPanel.set_index`), each render gets its units' dataset examples beside it.
    """

    #: Emitted with the loaded model.
    model_loaded = Signal(object)
    #: Emitted with the message of every error shown to the user.
    failed = Signal(str)

    def __init__(self, napari_viewer, model: StudioModel | None = None, autoload: bool = True) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.model: StudioModel | None = None
        self._model_key: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self.load_worker = None

        self.model_name = LineEdit(name="model", value=DEFAULT_MODEL,
                                   tooltip=MODEL_HELP)
        self.browse_button = PushButton(text="File…", tooltip="pick a saved model (.pt, .pth, .ts) or a .py file")
        self.load_button = PushButton(text="Load")
        self.device = ComboBox(name="device", choices=devices())
        self.trust = CheckBox(name="trust", text=TRUST_TEXT, value=False,
                              tooltip="a .py factory or a pickled .pt runs its code when loaded: only for files you trust")
        self.model_info = Label(value="no model loaded")
        self.render_panel = RenderPanel(napari_viewer, self._lock)
        self.examples_panel = ExamplesPanel(napari_viewer, self.render_panel, self._lock)
        self.attribution_panel = AttributionPanel(napari_viewer, self._lock, self.render_panel.current_targets)
        self.probe = CheckBox(name="probe", text="click a photo to probe", value=False,
                              tooltip="render the neuron of the chosen layer under the clicked point (its channel the "
                                      "most active there), then its heat map on the photo")
        self.grid_button = PushButton(text="Activation grid",
                                      tooltip="render the neuron under every cell of the chosen layer on the "
                                              "attribution panel's image layer, laid over it cell by cell")
        self.grid_stride = SpinBox(name="grid_stride", label="every", min=1, max=64, value=1,
                                   tooltip="render every N-th cell along each axis (a 14 x 14 grid is 196 renders)")
        self.grid_worker = None
        self.accentuate_button = PushButton(text="Accentuate in photo",
                                            tooltip="render the unit starting from the attribution panel's image "
                                                    "layer, kept close to it in the model's early features")
        self.accent_weight = FloatSpinBox(name="accent_weight", label="closeness", min=0.0, max=1e4, step=5.0,
                                          value=50.0, tooltip="weight of the early-feature distance to the photo "
                                                              "(0: free; higher: closer to the photo)")
        self.caricature_button = PushButton(text="Caricature of photo",
                                            tooltip="render what the chosen layer sees in the attribution panel's "
                                                    "image layer (Lucid's caricature)")
        self.blocks_panel = BlocksPanel(napari_viewer, self._lock, self.render_panel, self.attribution_panel)
        self.message = Label(value="")
        #: Every section, in a scroll area above the message line (napari docks a magicgui container's inner
        #: widget, dropping magicgui's own scroll area): a long dock would make the window taller than a screen.
        self.sections = Container(labels=False, widgets=[
            Label(value="<b>Model</b>"),
            Container(layout="horizontal", labels=False,
                      widgets=[self.model_name, self.browse_button, self.load_button]),
            Container(labels=True, widgets=[self.device]), self.trust, self.model_info, self.examples_panel,
            Label(value="<b>Feature visualisation</b>"), self.render_panel, self.probe,
            Container(layout="horizontal", labels=True, widgets=[self.grid_button, self.grid_stride]),
            Container(layout="horizontal", labels=True, widgets=[self.accentuate_button, self.accent_weight]),
            self.caricature_button,
            Label(value="<b>Attribution</b>"), self.attribution_panel,
            Label(value="<b>Building blocks</b>"), self.blocks_panel,
        ])
        self.append(self.message)
        self.native.layout().insertWidget(0, VerticalScroll(self.sections.native))
        for label in (self.render_panel.status, self.message, self.model_info):
            label.native.setWordWrap(True)
            label.native.setTextInteractionFlags(Qt.TextSelectableByMouse)

        self.load_button.changed.connect(lambda: self.load())
        self.model_name.changed.connect(self._forget_trust)
        self.browse_button.changed.connect(self._browse)
        self.render_panel.run_button.changed.connect(lambda: self.run())
        self.attribution_panel.attribute_button.changed.connect(lambda: self.attribute())
        for panel in (self.render_panel, self.attribution_panel, self.examples_panel, self.blocks_panel):
            panel.message.connect(self.show_message)
        for panel in (self.render_panel, self.attribution_panel, self.blocks_panel):
            panel.finished.connect(self._update_buttons)
        self.blocks_panel.picked.connect(self.run)
        self.blocks_panel.find_button.changed.connect(self._update_buttons)
        self.accentuate_button.changed.connect(lambda: self.accentuate())
        self.caricature_button.changed.connect(lambda: self.caricature())
        self.probe.changed.connect(self._update_probe_callbacks)
        self.grid_button.changed.connect(lambda: self.activation_grid())
        self.viewer.layers.events.inserted.connect(self._update_probe_callbacks)

        if model is not None:
            self.set_model(model)
        elif autoload:
            self.load()

    # ---------------------------------------------------------------- model

    @property
    def busy(self) -> bool:
        """Whether a render, an attribution, a model load or a dataset-example job is running."""
        workers = (self.render_panel.worker, self.attribution_panel.worker, self.load_worker, self.grid_worker,
                   self.blocks_panel.worker)
        return any(worker is not None for worker in workers) or self.examples_panel.busy

    def load(self, then=None) -> None:
        """Load the model named in the model field, in a worker; ``then()`` runs once it is loaded."""
        if self.load_worker is not None:
            return
        spec, device = self.model_name.value.strip() or DEFAULT_MODEL, self.device.value
        if runs_code(spec) and not self.trust.value:
            self.show_message(untrusted_code(spec, f"tick '{TRUST_TEXT}'"), error=True)
            return
        self.model_info.value = f"loading {spec} on {device} ..."
        worker = create_worker(_load_model, spec, device, _ignore_errors=True, _progress={"desc": f"Loading {spec}"})
        worker.returned.connect(partial(self._on_loaded, spec, device, then))
        worker.errored.connect(lambda error: self.show_message(error_message(error), error=True))
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
        """Use an already loaded model in both panels (``key``: the model and device fields it was loaded from)."""
        self.model = model
        device = str(model.device)
        if key is None:
            self.model_name.value = model.name
            if device not in self.device.choices:
                self.device.choices = [*self.device.choices, device]
            self.device.value = device
            key = (model.name, device)
        self._model_key = key
        self.render_panel.set_model(model)
        self.attribution_panel.set_model(model)
        self.blocks_panel.set_model(model)
        layers = len(model.layer_shapes)
        self.model_info.value = f"{model.name} · input {model.spec.describe()} · {layers} layers · {device}"
        self.model_loaded.emit(model)

    def _model_ready(self) -> bool:
        spec = self.model_name.value.strip() or DEFAULT_MODEL
        return self.model is not None and self._model_key == (spec, self.device.value)

    def _forget_trust(self, *_) -> None:
        """Trust is given to one file: naming another model clears the box."""
        self.trust.value = False

    def _browse(self, *_) -> None:
        path, _ = QFileDialog.getOpenFileName(self.native, "Model file", "",
                                              "Models (*.pt *.pth *.ts *.py);;All files (*)")
        if path:
            self.model_name.value = f"{path}:model" if path.endswith(".py") else path
            self.show_message("Name the factory function after the colon, then press Load."
                              if path.endswith(".py") else "Press Load to load it.")

    # ---------------------------------------------------------------- panels

    def fill(self, target: str | None = None, *, method: str | None = None, **values) -> None:
        """Fill the render panel (a target string, fields by name such as ``steps=64, count=4``) and the
        attribution ``method``."""
        self.render_panel.fill(target, **values)
        if method is not None:
            self.attribution_panel.method.value = method

    def run(self, custom: CustomRender | None = None) -> None:
        """Start a render with the render panel's fields (loading the model first if its fields changed), or of
        ``custom`` (built on the loaded model) with the fields' settings."""
        if self.render_panel.worker is not None or self.load_worker is not None:
            self.show_message("A render or a model load is running; wait for it or press Stop.")
            return
        if custom is None and not self._model_ready():
            self.load(then=self.run)
            return
        self.render_panel.start(custom)
        self._update_buttons()

    def stop(self, *_) -> None:
        """Stop the render after the current step; the last image stays."""
        self.render_panel.stop()

    def attribute(self, layer: Image | None = None) -> None:
        """Explain ``layer`` (default: the attribution panel's image layer) as the attribution panel says
        (loading the model first if its fields changed)."""
        if self.attribution_panel.worker is not None or self.load_worker is not None:
            self.show_message("An attribution or a model load is running; wait for it to finish.")
            return
        if not self._model_ready():
            self.load(then=partial(self.attribute, layer))
            return
        self.attribution_panel.start(layer)
        self._update_buttons()

    def probe_at(self, layer: Image, point) -> Probe | None:
        """Render the neuron of the render panel's layer under ``point`` (row, column in ``layer``'s pixels; its
        first image when it holds a stack), then explain it on the photo with the attribution panel's method."""
        if self.busy or self.model is None:
            self.show_message("Load a model and wait for running jobs to finish before probing.")
            return None
        try:
            photo = self.attribution_panel.images(layer)[0]
            with self._lock:
                found = probe(self.model, photo.to(self.model.device), self.render_panel.layer.value, point)
        except StudioError as error:
            self.show_message(str(error), error=True)
            return None
        self.fill(found.target.name)
        self.attribution_panel.explain.value = "visualised unit"

        def explain_when_rendered(frame) -> None:
            self.render_panel.finished.disconnect(explain_when_rendered)
            if frame is not None and frame.done:
                self.attribute(layer)
        self.render_panel.finished.connect(explain_when_rendered)
        self.run()
        if self.render_panel.worker is None and self.load_worker is None:  # the render did not start
            self.render_panel.finished.disconnect(explain_when_rendered)
        return found

    def activation_grid(self, layer: Image | None = None) -> None:
        """Render the activation grid of ``layer`` (default: the attribution panel's image layer) at the render
        panel's layer and settings, in a worker; the renders arrive as one layer laid over the photo."""
        layer = self._idle_photo_layer(layer)
        if layer is None:
            return
        if self.model.spec.dims != 2:
            self.show_message("The activation grid lays 2D renders over a photo; this model takes volumes.", error=True)
            return
        try:
            photo = self.attribution_panel.images(layer)[0]
            settings = self.render_panel.request().settings
        except StudioError as error:
            self.show_message(str(error), error=True)
            return
        worker = create_worker(_grid_job, self.model, photo.to(self.model.device), self.render_panel.layer.value,
                               self.grid_stride.value, settings, self._lock, _ignore_errors=True,
                               _progress={"desc": f"activation grid of {layer.name}"})
        worker.returned.connect(partial(self._add_grid, layer))
        worker.errored.connect(lambda error: self.show_message(error_message(error), error=True))
        worker.finished.connect(self._on_grid_finished)
        self.grid_worker = worker
        self.show_message(f"rendering the activation grid of {layer.name} ...")
        self._update_buttons()
        worker.start()

    def accentuate(self, layer: Image | None = None) -> AccentuationPlan | None:
        """Render the render panel's unit starting from ``layer`` (default: the attribution panel's image layer),
        kept close to it in the model's early features (:func:`studio.accentuate`, weight from the closeness
        field); once done, the message says how far the unit rose and how close the render stayed."""
        layer = self._idle_photo_layer(layer)
        if layer is None:
            return None
        try:
            photo = self.attribution_panel.images(layer)[0]
            request = self.render_panel.request()
            targets = request.targets(self.model)
            if len(targets) != 1:
                raise StudioError(f"Accentuate one unit at a time, not {len(targets)}: set the count to 1.")
            with self._lock:
                plan = plan_accentuation(self.model, photo.to(self.model.device), targets[0].name,
                                         size=request.settings.side, weight=self.accent_weight.value)
        except StudioError as error:
            self.show_message(str(error), error=True)
            return None

        def report_when_rendered(frame: Frame | None) -> None:
            self.render_panel.finished.disconnect(report_when_rendered)
            if frame is not None and frame.done:
                with self._lock:
                    found = measure_accentuation(self.model, plan, frame.result)
                self.show_message(f"{plan.target.short} accentuated in {layer.name}: {found.value:.3g} "
                                  f"(the photo {found.photo_value:.3g}, x{found.gain:.3g}); distance to the photo "
                                  f"{found.pixel_distance:.3g} in pixels, {found.feature_distance:.3g} in "
                                  f"{plan.layer}'s features")
        self.render_panel.finished.connect(report_when_rendered)
        self.run(CustomRender(plan.objective, plan.target, f"{plan.target.short} · accentuated in {layer.name}",
                              plan.start))
        if self.render_panel.worker is None:  # the render did not start
            self.render_panel.finished.disconnect(report_when_rendered)
        return plan

    def caricature(self, layer: Image | None = None) -> None:
        """Render what the render panel's layer sees in ``layer`` (default: the attribution panel's image layer):
        Lucid's caricature (:func:`studio.objectives.caricature`), streamed like any render."""
        layer = self._idle_photo_layer(layer)
        if layer is None:
            return
        try:
            photo = self.attribution_panel.images(layer)[0]
            whole = layer_target(self.model, self.render_panel.layer.value)
        except StudioError as error:
            self.show_message(str(error), error=True)
            return
        self.run(CustomRender(caricature(photo, whole.key), whole, f"caricature of {layer.name} · {whole.layer_name}"))

    def _idle_photo_layer(self, layer: Image | None) -> Image | None:
        """``layer`` (default: the attribution panel's image layer) when a model is loaded and nothing runs; else
        None, with a message saying what to do."""
        layer = layer if layer is not None else self.attribution_panel.source.value
        if self.busy or self.model is None or layer is None:
            self.show_message("Load a model, pick a photo as the image layer and wait for running jobs first.")
            return None
        return layer

    def _add_grid(self, source: Image, grid: ActivationGrid) -> None:
        """The grid's renders as one layer over ``source``, each render on the cells it stands for."""
        rows, columns = image_shape(source)
        step_y, step_x = (float(v) for v in source.scale[-2:])
        scale_y, scale_x = mosaic_scale(grid, (rows, columns))
        top, left = (float(v) - step / 2 for v, step in zip(source.translate[-2:], (step_y, step_x)))
        scale = (scale_y * step_y, scale_x * step_x)
        mosaic = grid_mosaic(grid).permute(1, 2, 0).clamp(0, 1).numpy()
        name = f"{source.name} · activation grid · {grid.targets[0].layer_name}"
        self.viewer.add_image(mosaic if mosaic.shape[-1] == 3 else mosaic[..., 0], rgb=mosaic.shape[-1] == 3,
                              name=name, scale=scale, translate=(top + scale[0] / 2, left + scale[1] / 2),
                              opacity=0.85, metadata={GRID_KEY: [t.name for t in grid.targets]})
        self.show_message(f"{name}: {len(grid.targets)} renders")

    def _on_grid_finished(self) -> None:
        self.grid_worker = None
        self._update_buttons()

    def _on_probe_click(self, layer: Image, event) -> None:
        """A click on a photo layer while probing: the point in the layer's pixels (its last axes)."""
        if event.type == "mouse_press" and shows_model_images(layer):
            dims = self.model.spec.dims if self.model is not None else 2
            # napari centres pixel i at i; grid_cell reads pixel i as [i, i + 1)
            self.probe_at(layer, tuple(float(v) + 0.5 for v in layer.world_to_data(event.position)[-dims:]))

    def _update_probe_callbacks(self, *_) -> None:
        """Photo and render layers take clicks while the probe box is ticked, and only then."""
        for layer in self.viewer.layers:
            wanted = self.probe.value and shows_model_images(layer)
            hooked = self._on_probe_click in getattr(layer, "mouse_drag_callbacks", [])
            if wanted and not hooked:
                layer.mouse_drag_callbacks.append(self._on_probe_click)
            elif hooked and not wanted:
                layer.mouse_drag_callbacks.remove(self._on_probe_click)

    # ---------------------------------------------------------------- common

    def reset_choices(self, *_) -> None:
        """Refresh every choice list (napari calls this when layers change; the sections are not children)."""
        self.sections.reset_choices()

    def show_message(self, text: str, error: bool = False) -> None:
        """Show a message under the widget (errors in red, and as a napari notification)."""
        self.message.value = text
        self.message.native.setStyleSheet(f"color: {ERROR_COLOUR};" if error else "")
        if error:
            self.failed.emit(text)
            show_error(text)

    def _update_buttons(self, *_) -> None:
        loading = self.load_worker is not None
        self.load_button.enabled = not loading and self.render_panel.worker is None
        self.render_panel.update_buttons(loading)
        self.grid_button.enabled = self.grid_worker is None and not loading
        idle = self.render_panel.worker is None and not loading
        self.accentuate_button.enabled = self.caricature_button.enabled = idle
        self.attribution_panel.update_buttons(loading)
        self.blocks_panel.update_buttons(loading)
