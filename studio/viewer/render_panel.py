"""The feature-visualisation panel: the unit to render (of a layer, or of a concept dictionary added to the
layers), the viewer's fields and one field per render setting, Run and Stop, and the image forming live in
napari: one RGB or grey layer, or one layer per channel, 3D for volumes (napari switches to its 3D view, which
the user can turn while the render streams).

The render runs :func:`studio.viewer.streaming.stream` (the engine's generator) in a napari generator
worker; every step yields, so Stop and napari's cancel take effect within a step, and every few steps the
layers' data is replaced in place. Layers are only touched in the main thread (signal handlers).
"""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils import progress
from psygnal import Signal

from studio.concepts.dictionary import SUFFIX, is_dictionary_name, load_dictionary
from studio.errors import StudioError
from studio.models import StudioModel
from studio.settings import RenderSettings, setting_fields
from studio.targets import OUTPUT, LayerInfo, Target, display_layer, layer_info, layer_key, parse_target
from studio.viewer.fields import complete_classes, set_value, setting_widget
from studio.viewer.layers import (GAP, add_image_layers, find_image_layers, image_shape, place, show_boxes,
                                  shows_model_images, update_image_layers)
from studio.viewer.streaming import (DEFAULT_LAYER, KINDS, TARGETS_KEY, VIEWER_FIELDS, CustomRender, Frame,
                                     RenderRequest, error_message, full_name, render_label, stream, with_alpha)

#: Seconds between status-text and progress-bar refreshes for steps that bring no image.
STATUS_INTERVAL = 0.25


def _drive(frames):
    """Generator function the worker runs (a generator *function*, so napari makes a GeneratorWorker)."""
    return (yield from frames)


def _concept_status(target: Target) -> str:
    """What a concept's dictionary says of it, for the status (`` · concept 3: active at ...``); empty otherwise."""
    if target.concepts is None:
        return ""
    dictionary = load_dictionary(target.concepts)
    return f" · {dictionary.describe() if target.whole_layer else dictionary.line(target.channel)}"


class RenderPanel(Container):
    """Pick a layer (or a loaded concept dictionary), a unit and settings; :meth:`start` streams the render into
    image layers.

    The model comes from :meth:`set_model`; ``lock`` is shared with the attribution panel, so the two never
    run the model at once. Messages for the user go out through ``message``.
    """

    #: Emitted when a render starts, with its targets.
    started = Signal(object)
    #: Emitted (main thread) after a frame's images are shown in the image layers.
    frame_shown = Signal(object)
    #: Emitted when a render ends (finished, stopped or failed), with the last frame or None.
    finished = Signal(object)
    #: A message for the user, and whether it is an error.
    message = Signal(str, bool)

    def __init__(self, napari_viewer, lock: threading.Lock) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model: StudioModel | None = None
        self._lock = lock
        self._stop: threading.Event | None = None
        self._status_time = 0.0
        self._name = ""
        self._about = ""
        self._targets: list[Target] = []
        #: The loaded concept dictionaries (absolute paths), listed after the model's layers.
        self.dictionaries: list[str] = []
        self.last_frame: Frame | None = None
        self.worker = None
        #: The layers showing the render: one, or one per channel.
        self.image_layers: list[Image] = []
        self.progress_bar: progress | None = None

        self.layer = ComboBox(name="layer", choices=self._layer_choices, tooltip="module path, with its layout and shape")
        self.concepts = FileEdit(name="concepts", filter=f"*{SUFFIX}",
                                 tooltip="add a concept dictionary (studio concepts) to the layers: its concepts "
                                         "render like channels")
        self.kind = ComboBox(name="objective", choices=list(KINDS), value=KINDS[0])
        self.channel = SpinBox(name="channel", min=0, max=0, value=0)
        self.class_name = LineEdit(name="class_label", label="class", value="",
                                   tooltip="class label (with completion) or index")
        self.row = SpinBox(name="row", min=0, max=0)
        self.column = SpinBox(name="column", min=0, max=0)
        self.token = SpinBox(name="token", min=0, max=0, tooltip="prefix token: 0 is the class token (@cls)")
        #: Every named field by its name: the viewer's own, then one per render setting.
        self.fields = {spec.name: setting_widget(spec) for spec in (*VIEWER_FIELDS, *setting_fields())}
        self.transparency = CheckBox(name="transparency", text="transparency when done", value=False,
                                     tooltip="show the finished render with MACO's alpha as its opacity: opaque where "
                                             "its pixels drove the unit most")
        self.run_button = PushButton(text="Run")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        self.extend([self.layer, self.concepts, self.kind, self.channel, self.class_name, self.row, self.column,
                     self.token, *self.fields.values(), self.transparency,
                     Container(layout="horizontal", labels=False, widgets=[self.run_button, self.stop_button]),
                     self.status])

        self.layer.changed.connect(self._update_unit_fields)
        self.concepts.changed.connect(self._on_concepts_picked)
        self.kind.changed.connect(self._update_unit_fields)
        self.stop_button.changed.connect(self.stop)
        self.transparency.changed.connect(self._reshow_last)
        self._update_unit_fields()

    # ------------------------------------------------------------------ fields

    def set_model(self, model: StudioModel) -> None:
        """List the model's layers (keeping the chosen one when it has it) and complete its class labels."""
        self.model = model
        current = self.layer.value
        self._drop_unfitting()
        self.layer.choices = ()  # magicgui keeps the items it has in place: start over, in the model's order
        self.layer.reset_choices()
        names = list(self.layer.choices)
        self.layer.value = current if current in names else (DEFAULT_LAYER if DEFAULT_LAYER in names
                                                             else names[len(names) // 2])
        complete_classes(self.class_name, model)
        if model.class_names and not self.class_name.value:
            self.class_name.value = model.class_label(0)
        if model.spec.dims == 3:  # a volume costs the cube of its side: start at the model's own input size
            set_value(self.fields["size"], max(model.spec.size))
        self._update_unit_fields()

    def _layer_choices(self, *_) -> list[tuple[str, str]]:
        """Every layer of the loaded model with its layout (a token layer with its prefix and grid; choices of a
        combo box must come from a callable: magicgui resets static choices when the widget is docked)."""
        if self.model is None:
            return []
        choices = []
        for name, shape in self.model.layer_shapes.items():
            info = self._info(display_layer(name))
            what = info.describe() if info is not None else f"{'×'.join(map(str, shape))} (not a target)"
            choices.append((f"{display_layer(name)}   {what}", display_layer(name)))
        for path in self.dictionaries:
            info = self._info(path)
            if info is not None:
                choices.append((f"{Path(path).name}   {info.describe()}", path))
        return choices

    def _on_concepts_picked(self, *_) -> None:
        """Add the file the concepts field names once it names an existing dictionary file (typing passes
        through partial paths), then clear the field, so that picking the same file again adds it again."""
        text = self.concepts.line_edit.value.strip()
        if is_dictionary_name(text) and Path(text).expanduser().is_file():
            self.concepts.line_edit.value = ""
            self.add_dictionary(text)

    def add_dictionary(self, path: str | Path) -> None:
        """List a concept dictionary with the layers and choose it; one that does not fit the model (or is no
        dictionary) is refused with one sentence in ``message``."""
        if self.model is None:
            self.message.emit("Load a model before adding a concept dictionary.", True)
            return
        try:
            dictionary = load_dictionary(path)
            layer_key(self.model, str(dictionary.path))
        except StudioError as error:
            self.message.emit(str(error), True)
            return
        self._offer(str(dictionary.path))
        self.layer.value = str(dictionary.path)
        self.message.emit(f"Concepts from {dictionary.name}: {dictionary.describe()}.", False)

    def _offer(self, path: str) -> None:
        """Offer a dictionary (absolute path) in the layer choices, once."""
        if path not in self.dictionaries:
            self.dictionaries.append(path)
            self.layer.reset_choices()

    def _drop_unfitting(self) -> None:
        """Drop the dictionaries that do not fit the model (another model's layer), saying which and why."""
        dropped = {}
        for path in self.dictionaries:
            try:
                layer_key(self.model, path)
            except StudioError as error:
                dropped[path] = str(error)
        if dropped:
            self.dictionaries = [path for path in self.dictionaries if path not in dropped]
            self.message.emit(" ".join(f"Dropped {Path(path).name} from the layers: {error}"
                                       for path, error in dropped.items()), True)

    def _is_output(self, layer: str) -> bool:
        info = self._info(layer)
        return info is not None and info.path == OUTPUT

    def _update_unit_fields(self, *_) -> None:
        layer, kind = self.layer.value, self.kind.value
        is_output = self._is_output(layer)
        self.class_name.visible = is_output and kind != "layer"
        self.channel.visible = not is_output and kind != "layer"
        self.row.visible = self.column.visible = kind == "neuron"
        self.token.visible = kind == "token"
        self.fields["count"].enabled = kind != "layer"
        info = self._info(layer)
        if info is not None:
            self.channel.max = max(0, info.channels - 1)
            self.token.max = max(0, info.prefix - 1)
            if len(info.spatial) == 2:
                (rows, columns) = info.spatial
                self.row.max, self.column.max = rows - 1, columns - 1
                self.row.value, self.column.value = rows // 2, columns // 2

    def _info(self, layer: str) -> LayerInfo | None:
        """What the layer holds (channels, grid), or None for no model or a layer that is no target."""
        if self.model is None or not layer:
            return None
        try:
            return layer_info(self.model, layer_key(self.model, layer))
        except StudioError:
            return None

    def request(self) -> RenderRequest:
        """The render the fields describe (``StudioError`` when a setting is out of range)."""
        layer = self.layer.value or DEFAULT_LAYER
        unit = self.class_name.value if self._is_output(layer) else self.channel.value
        position = (self.row.value, self.column.value) if self.kind.value == "neuron" else None
        settings = RenderSettings(**{spec.name: self.fields[spec.name].value for spec in setting_fields()})
        viewer = {spec.name: self.fields[spec.name].value for spec in VIEWER_FIELDS}
        return RenderRequest(layer, self.kind.value, unit, position, self.token.value, settings=settings, **viewer)

    def current_targets(self) -> list[Target]:
        """The units of the last render, or else of the fields."""
        return self._targets or self.request().targets(self.model)

    def fill(self, target: str | None = None, **values) -> None:
        """Fill the unit fields from a target string (``blocks.4:12``, ``blocks.4:3@7,7``, ``blocks.6:12@cls``,
        ``logits:"tabby"``)
        and fields by name (any render setting, ``count``, ``every``, ``seed``; ``None`` leaves one as is)."""
        unknown = sorted(set(values) - set(self.fields))
        if unknown:
            raise StudioError(f"The render panel has no field {unknown[0]!r}; its fields are {', '.join(self.fields)}.")
        for name, value in values.items():
            if value is not None:
                set_value(self.fields[name], value)
        if target is None:
            return
        if self.model is None:
            raise StudioError("Load a model before filling in a target.")
        parsed = parse_target(target, self.model)
        if parsed.concepts is not None:
            self._offer(parsed.concepts)
        self.layer.value = parsed.concepts or parsed.layer_name
        self.kind.value = ("layer" if parsed.whole_layer else "neuron" if parsed.position
                           else "token" if parsed.prefix_token is not None else "channel")
        self._update_unit_fields()
        if parsed.layer == OUTPUT and not parsed.whole_layer:
            self.class_name.value = parsed.label or str(parsed.channel)
        elif not parsed.whole_layer:
            self.channel.value = parsed.channel
        if parsed.position is not None:
            self.row.value, self.column.value = parsed.position
        if parsed.prefix_token is not None:
            self.token.value = parsed.prefix_token

    def update_buttons(self, loading: bool) -> None:
        """Run while idle (and no model is loading), Stop while rendering."""
        self.run_button.enabled = self.worker is None and not loading
        self.stop_button.enabled = self.worker is not None

    # ------------------------------------------------------------------ render

    def start(self, custom: CustomRender | None = None) -> None:
        """Start a render of the fields with the panel's model, or of ``custom`` with the fields' settings (errors
        in the fields go to ``message``)."""
        try:
            request = self.request()
            targets = [custom.target] if custom is not None else request.targets(self.model)
        except StudioError as error:
            self.message.emit(str(error), True)
            return
        self._targets, self.last_frame = targets, None
        self._name = custom.label if custom is not None else render_label(targets)
        self._about = _concept_status(targets[0])
        self._stop = threading.Event()
        frames = stream(self.model, custom.objective if custom is not None else targets, request.settings,
                        seed=request.seed, every=request.every, lock=self._lock, stop=self._stop,
                        init=custom.init if custom is not None else None)
        # Our own napari progress bar, advanced at most a few times a second: with software OpenGL every
        # repaint of the window costs a full composite, and a per-step bar slowed renders several-fold.
        self.progress_bar = progress(total=request.settings.steps, desc=f"Rendering {self._name}")
        worker = create_worker(_drive, frames, _ignore_errors=True)
        worker.yielded.connect(self._on_frame)
        worker.returned.connect(self._on_returned)
        worker.errored.connect(lambda error: self.message.emit(error_message(error), True))
        worker.finished.connect(partial(self._on_finished, frames))
        self.worker = worker
        self.status.value = f"rendering {self._name} ..."
        self.message.emit("", False)
        self.started.emit(targets)
        worker.start()

    def stop(self, *_) -> None:
        """Stop the render after the current step; the last image stays."""
        if self._stop is not None:
            self._stop.set()

    def _on_frame(self, frame: Frame) -> None:
        self.last_frame = frame
        now = time.perf_counter()
        if frame.images is None and now - self._status_time < STATUS_INTERVAL:
            return  # a step without images: refresh the text at most a few times a second
        self._status_time = now
        values = ", ".join(f"{v:.3g}" for v in frame.values[:4]) + (" ..." if len(frame.values) > 4 else "")
        state = "stopped at" if frame.stopped else ("done," if frame.done else "step")
        self.status.value = (f"{self._name}: {state} {frame.step}/{frame.steps} · objective {values} · "
                             f"{frame.steps_per_second:.1f} steps/s{self._about}")
        if frame.images is not None:
            self._show(frame)
            self.frame_shown.emit(frame)
        if self.progress_bar is not None:  # last: napari's Qt bar processes events, which may bring the next frame
            self.progress_bar.update(frame.step - self.progress_bar.n)

    def _on_returned(self, frame: Frame | None) -> None:
        if frame is not None and frame.stopped:
            self._on_frame(frame)

    def _on_finished(self, frames) -> None:
        frames.close()  # after a napari cancel (quit) the generator is suspended: close it, restoring the model
        if self.progress_bar is not None:
            self.progress_bar.close()
        self.worker = None
        self._stop = None
        self.finished.emit(self.last_frame)

    @property
    def image_layer(self) -> Image | None:
        """The render's (first) layer: its only one unless it shows one layer per channel."""
        return self.image_layers[0] if self.image_layers else None

    def _reshow_last(self, *_) -> None:
        """Show the finished render again, with or without its transparency."""
        if self.last_frame is not None and self.last_frame.done and self.image_layers:
            self._show(self.last_frame)

    def _shown_images(self, frame: Frame) -> np.ndarray:
        """A frame's images as its layers show them: a finished 2D RGB render with its alpha as a fourth
        channel when the transparency box is ticked."""
        if (self.transparency.value and frame.done and frame.rgb and frame.images.ndim == 4
                and frame.result is not None and frame.result.alpha is not None):
            return with_alpha(frame.images, frame.result.alpha.numpy())
        return frame.images

    def _show(self, frame: Frame) -> None:
        """Put a frame's images in the render's layers: replace their data, or add them once (beside the other
        images; a volume switches napari to its 3D view)."""
        images = self._shown_images(frame)
        layers = find_image_layers(self.viewer, images, frame.rgb, self._name)
        if layers is None:
            layers = add_image_layers(self.viewer, images, frame.rgb, self._name)
            self._place_beside_others(layers)
            if self.model.spec.dims == 3:
                self.viewer.dims.ndisplay = 3
            if len(frame.images) > 1 and self.viewer.dims.ndim == layers[0].ndim:
                self.viewer.dims.axis_labels = ("unit", *self.viewer.dims.axis_labels[1:])
        else:
            update_image_layers(layers, images, frame.rgb, self._name)
        for layer in layers:
            layer.metadata[TARGETS_KEY] = [full_name(target) for target in self._targets]
        self.image_layers = layers
        if frame.boxes is not None and self.model.spec.dims == 2:
            show_boxes(self.viewer, frame.boxes, layers[0], f"{self._name} · crops")

    def _place_beside_others(self, layers: list[Image]) -> None:
        """Scale a new render to the height of the other images and put it to their left."""
        others = [other for other in self.viewer.layers if other not in layers and shows_model_images(other)]
        if not others:
            return
        extents = np.array([other.extent.world[:, -2:] for other in others])
        top, left = extents[:, 0, 0].min(), extents[:, 0, 1].min()
        height = extents[:, 1, 0].max() - top
        rows, cols = image_shape(layers[0])
        scale = height / rows
        for layer in layers:
            place(layer, scale, top, left - cols * scale - GAP * height, self.model.spec.dims)
        self.viewer.reset_view()
