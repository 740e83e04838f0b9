"""The dataset-examples row of the model section: an optional index (``studio index``) whose top crops of the
units being rendered appear as a montage layer, ``examples · <unit>``, right of the render (one montage per unit
of a stack, on the render's slider axis), with the unit's map over each crop in a montage just below it,
``maps · <unit>`` (for units with positions), and whose numbers join the render's status when it finishes: its
clean value as a multiple of the dataset maximum, and the path check (in red when flagged).

Crops load, maps and path checks run in workers (maps and path checks hold the model lock); layers are touched
only in the main thread. A bad index is one sentence in the widget's message; the render goes on without examples.
"""

from __future__ import annotations

import threading
from functools import partial
from html import escape

from magicgui.widgets import Container, LineEdit, PushButton
from napari.layers import Image
from napari.qt.threading import create_worker
from psygnal import Signal
from qtpy.QtWidgets import QFileDialog

from studio.engine import unit_values
from studio.errors import StudioError
from studio.exemplars import IndexInfo, check_index
from studio.targets import Target
from studio.viewer.layers import (GAP, add_image_layers, find_image_layers, image_shape, place, place_right_of,
                                  update_image_layers)
from studio.viewer.render_panel import RenderPanel
from studio.viewer.streaming import (EXAMPLES_KEY, Frame, Montages, UnitNumbers, check_paths,
                                     dataset_numbers, error_message, indexed_units, load_montages, render_label)


class ExamplesPanel(Container):
    """The examples-index field and File… button; follows ``render_panel``'s renders (their start, frames and
    end) to show each render's dataset examples and numbers. ``lock`` is the model lock the panels share."""

    #: A message for the user, and whether it is an error.
    message = Signal(str, bool)
    #: Emitted when the last running job (crops, path checks) has ended.
    settled = Signal()

    def __init__(self, napari_viewer, render_panel: RenderPanel, lock: threading.Lock) -> None:
        super().__init__(layout="horizontal", labels=False)
        self.viewer = napari_viewer
        self.render_panel = render_panel
        self._lock = lock
        self.index = LineEdit(name="examples", value="",
                              tooltip="a dataset-example index (studio index): the top images of each rendered "
                                      "unit beside the render, and its numbers beside the dataset's")
        self.index.native.setPlaceholderText("examples index (.sqlite, optional)")
        self.browse_button = PushButton(text="File…", tooltip="pick a dataset-example index (.sqlite)")
        self.extend([self.index, self.browse_button])
        #: The running jobs, the layers showing the current render's examples and the maps over them (none
        #: for units without positions), and its dataset numbers.
        self.workers: list = []
        self.layers: list[Image] = []
        self.map_layers: list[Image] = []
        self.numbers: list[UnitNumbers] = []
        #: The current render: its number (results of an earlier one are dropped), its units in the index (None:
        #: no examples) or why it has none, whether its image is shown, its examples montage still to be placed
        #: (making room) and a new montage still to be brought into view.
        self._render = 0
        self._info: IndexInfo | None = None
        self._none_because = ""
        self._render_shown = False
        self._unplaced = False
        self._unseen = False

        self.browse_button.changed.connect(self._browse)
        self.index.native.editingFinished.connect(lambda: self.set_index(self.index.value))
        render_panel.started.connect(self._on_started)
        render_panel.frame_shown.connect(self._on_frame_shown)
        render_panel.finished.connect(self._on_render_finished)

    @property
    def busy(self) -> bool:
        """Whether crops or maps are loading or a path check is running."""
        return bool(self.workers)

    def set_index(self, path: str) -> None:
        """Use the index at ``path`` (empty: none); the message says what it holds, or in one sentence why not."""
        self.index.value = str(path).strip()
        info = self.check()
        if info is not None:
            layers = ", ".join(f"{name} ({channels} channels)" for name, channels in info.layers.items())
            self.message.emit(f"Dataset examples from {info.path.name}: {info.images} images, {layers}.", False)

    def check(self) -> IndexInfo | None:
        """The index in the field, checked against the model; None when there is none or it cannot be used (then
        one sentence in the message)."""
        if not self.index.value.strip():
            return None
        try:
            return check_index(self.index.value.strip(), self.render_panel.model)
        except StudioError as error:
            self.message.emit(str(error), True)
            return None

    def _browse(self, *_) -> None:
        path, _ = QFileDialog.getOpenFileName(self.native, "Dataset-example index", "",
                                              "Example indexes (*.sqlite);;All files (*)")
        if path:
            self.set_index(path)

    # ---------------------------------------------------------------- a render

    def _on_started(self, targets: list[Target]) -> None:
        self._render += 1
        self._render_shown, self.numbers, self.layers, self.map_layers = False, [], [], []
        self._info, self._none_because = self.check(), ""
        if self._info is None:
            return
        try:
            units = indexed_units(self._info, targets)
        except StudioError as error:
            self._info, self._none_because = None, str(error)
            return
        label = render_label(targets)
        worker = create_worker(load_montages, self._info.path, units, self.render_panel.model, label,
                               lock=self._lock, _ignore_errors=True, _progress={"desc": f"Loading examples · {label}"})
        worker.yielded.connect(partial(self._show, self._render))
        self._start(worker)

    def _start(self, worker) -> None:
        """Run a job, its errors as one sentence in the message."""
        worker.errored.connect(lambda error: self.message.emit(error_message(error), True))
        worker.finished.connect(partial(self._on_worker_finished, worker))
        self.workers.append(worker)
        worker.start()

    def _on_worker_finished(self, worker) -> None:
        self.workers.remove(worker)
        if not self.workers:
            self.settled.emit()

    def _show(self, render: int, montages: Montages) -> None:
        """Put a montage in its layers (updated in place, or added and placed): the examples beside the render,
        the maps below the examples (following them wherever they are placed)."""
        if render != self._render:
            return
        layers = find_image_layers(self.viewer, montages.images, montages.rgb, montages.name)
        added = layers is None
        if added:
            layers = add_image_layers(self.viewer, montages.images, montages.rgb, montages.name)
            for layer in layers:
                layer.metadata[EXAMPLES_KEY] = True
        else:
            update_image_layers(layers, montages.images, montages.rgb, montages.name)
        self._unseen = self._unseen or added
        if montages.maps:
            self.map_layers = layers
        else:
            self.layers, self._unplaced = layers, added
            if added:
                for event in (layers[0].events.scale, layers[0].events.translate):
                    event.connect(self._place_maps)
        self._place()

    def _on_frame_shown(self, _frame: Frame) -> None:
        self._render_shown = True
        self._place()

    def _place(self) -> None:
        """Keep the examples right of the render and the maps below them once both are shown (a new examples
        montage first makes room); a new montage brings the whole into view."""
        render = self.render_panel.image_layers
        if not (self._render_shown and self.layers and self.layers[0] in self.viewer.layers):
            return
        place_right_of(self.layers, render, self.render_panel.model.spec.dims, make_room=self._unplaced)
        self._place_maps()
        self._unplaced = False
        if self._unseen:
            self._unseen = False
            self.viewer.reset_view()

    def _place_maps(self, *_) -> None:
        """Put the maps just below the examples, at their scale and left edge."""
        if not (self.map_layers and self.layers and self.layers[0] in self.viewer.layers):
            return
        examples = self.layers[0]
        step = float(examples.scale[-1])
        top, left = (float(offset) - step / 2 for offset in examples.translate[-2:])  # pixel edges, not centres
        rows = image_shape(examples)[0]
        for layer in self.map_layers:
            place(layer, step, top + (1 + GAP) * rows * step + step / 2, left + step / 2,
                  self.render_panel.model.spec.dims)

    def _on_render_finished(self, frame: Frame | None) -> None:
        """Add the finished render's dataset numbers to its status (or why it has none), then check its path."""
        if frame is None or not frame.done or frame.result is None or not (self._info or self._none_because):
            return
        base = escape(self.render_panel.status.value)
        if self._info is None:
            self.render_panel.status.value = f"{base}<br>{escape(self._none_because)}"
            return
        result, model = frame.result, self.render_panel.model
        targets = self.render_panel.current_targets()
        try:  # a render of an objective of its own (an accentuation) is judged by its unit's value
            if result.targets is not None:
                values = result.clean_values.tolist()
            else:
                with self._lock:
                    values = unit_values(model, targets, result.images).tolist()
            numbers = dataset_numbers(self._info.path, targets, values, model)
        except StudioError as error:
            self.message.emit(str(error), True)
            return
        self._show_numbers(self._render, base, numbers)
        worker = create_worker(check_paths, model, self._info.path, numbers, targets, result.images,
                               self._lock, _ignore_errors=True, _progress={"desc": "Checking the render's path"})
        worker.returned.connect(partial(self._show_numbers, self._render, base))
        self._start(worker)

    def _show_numbers(self, render: int, base: str, numbers: list[UnitNumbers]) -> None:
        if render == self._render:
            self.numbers = numbers
            more = ["..."] if len(self.render_panel.current_targets()) > len(numbers) else []
            self.render_panel.status.value = "<br>".join([base, *(number.html() for number in numbers), *more])
