"""The building-blocks panel (:func:`studio.blocks`): the channels of the render panel's layer that made a decision
on the attribution panel's image layer, ranked by activation x gradient, with the ablation check beside them.
Picking a channel shows its map over the photo and renders it (pushed the way that raises the decision), so the
examples panel puts its dataset examples beside the render when an index is loaded."""

from __future__ import annotations

import threading
from functools import partial

import torch
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from psygnal import Signal

from studio.building_blocks import BuildingBlocks, blocks, random_control, signed_units
from studio.errors import StudioError
from studio.models import StudioModel
from studio.targets import layer_key, parse_target
from studio.viewer.attribution_panel import AttributionPanel
from studio.viewer.fields import complete_classes
from studio.viewer.render_panel import RenderPanel
from studio.viewer.streaming import CustomRender, WorkerError, error_message

#: Random channel sets zeroed beside the top ones: the check that the ranking beats chance.
CONTROL_DRAWS = 8


def _blocks_job(model: StudioModel, photo: torch.Tensor, layer: str, target: str | None, top: int,
                lock: threading.Lock) -> tuple[BuildingBlocks, tuple[float, torch.Tensor]]:
    """The ranking and its ablation check, off the main thread, while holding the model."""
    try:
        with lock:
            result = blocks(model, photo, layer, target, top=top, render_channels=False)
            return result, random_control(model, photo, result, CONTROL_DRAWS)
    except RuntimeError as error:
        raise WorkerError(error_message(error)) from error


class BlocksPanel(Container):
    """A class (empty: the photo's top class) and how many channels; Find ranks them; picking one in the list
    shows its map and emits ``picked`` with its render for the widget to run."""

    #: Emitted with the channel's render (a :class:`CustomRender`) when a channel is picked.
    picked = Signal(object)
    #: Emitted when a ranking job ends, successfully or not.
    finished = Signal()
    #: A message for the user, and whether it is an error.
    message = Signal(str, bool)

    def __init__(self, napari_viewer, lock: threading.Lock, render_panel: RenderPanel,
                 attribution_panel: AttributionPanel) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.model: StudioModel | None = None
        self._lock = lock
        self.render_panel, self.attribution_panel = render_panel, attribution_panel
        self.worker = None
        #: The last ranking and the photo layer it was made on.
        self.result: BuildingBlocks | None = None
        self.photo_layer: Image | None = None

        self.class_name = LineEdit(name="blocks_class", label="class", value="",
                                   tooltip="the decision to explain: a class label (with completion) or index; "
                                           "empty: the photo's top class")
        self.top = SpinBox(name="top", min=1, max=64, value=6, tooltip="channels to rank and list")
        self.find_button = PushButton(text="Find building blocks",
                                      tooltip="rank the channels of the render panel's layer on the attribution "
                                              "panel's image layer")
        self.channel = ComboBox(name="block", label="channel", choices=self._channel_choices,
                                tooltip="pick a channel: its map over the photo and its render")
        self.summary = Label(value="")
        self.summary.native.setWordWrap(True)
        self.extend([self.class_name, self.top, self.find_button, self.channel, self.summary])
        self.find_button.changed.connect(lambda: self.start())
        self.channel.changed.connect(self._on_pick)

    def set_model(self, model: StudioModel) -> None:
        """Rank with ``model``; complete its class labels; forget a ranking made with another model."""
        self.model = model
        complete_classes(self.class_name, model)
        self.result = self.photo_layer = None
        self.channel.reset_choices()
        self.summary.value = ""

    def update_buttons(self, loading: bool) -> None:
        """Find while idle and no model is loading."""
        self.find_button.enabled = self.worker is None and not loading

    def start(self, layer: Image | None = None) -> None:
        """Rank the channels of the render panel's layer for the class on ``layer`` (default: the attribution
        panel's image layer), in a worker; the list fills when it is done and its first channel is shown."""
        layer = layer if layer is not None else self.attribution_panel.source.value
        if layer is None or self.model is None:
            self.message.emit("Load a model and pick a photo as the attribution panel's image layer.", True)
            return
        try:
            photo = self.attribution_panel.images(layer)[0]
        except StudioError as error:
            self.message.emit(str(error), True)
            return
        target = self.class_name.value.strip().strip("\"'") or None
        worker = create_worker(_blocks_job, self.model, photo.to(self.model.device), self.render_panel.layer.value,
                               target, self.top.value, self._lock, _ignore_errors=True,
                               _progress={"desc": f"building blocks of {layer.name}"})
        worker.returned.connect(partial(self._on_found, layer))
        worker.errored.connect(lambda error: self.message.emit(error_message(error), True))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.message.emit(f"ranking the channels of {self.render_panel.layer.value} on {layer.name} ...", False)
        worker.start()

    def _on_finished(self) -> None:
        self.worker = None
        self.finished.emit()

    def _on_found(self, layer: Image, found: tuple[BuildingBlocks, tuple[float, torch.Tensor]]) -> None:
        result, (chosen, drawn) = found
        self.result, self.photo_layer = result, layer
        top = len(result.channels)
        self.summary.value = (f"{result.target.short}: score {result.score:.3g} · zeroing these {top}: {chosen:.3g} · "
                              f"{top} random channels: {drawn.mean():.3g} (mean of {len(drawn)})")
        with self.channel.changed.blocked():
            self.channel.reset_choices()
            self.channel.value = 0
        self._on_pick()

    def _channel_choices(self, *_) -> list[tuple[str, int]]:
        """The ranked channels with their attribution and share (a callable: magicgui resets static choices
        when the widget is docked)."""
        if self.result is None:
            return []
        result = self.result
        return [(f"{rank}. {unit}   {value:.3g} ({100 * share:.0f} %)", rank - 1) for rank, (unit, value, share)
                in enumerate(zip(result.units, result.attributions.tolist(), result.shares.tolist()), 1)]

    def _on_pick(self, *_) -> None:
        """Show the picked channel's map over the photo and ask for its render."""
        if self.result is None or self.channel.value is None or self.photo_layer not in self.viewer.layers:
            return
        rank, result = self.channel.value, self.result
        unit, direction = result.units[rank], result.directions[rank]
        self.attribution_panel.show_map(self.photo_layer, result.maps[rank][None].numpy(),
                                        f"{self.photo_layer.name} · building block {unit}",
                                        {"target": result.target.short, "unit": unit})
        objective = signed_units(layer_key(self.model, result.layer), [result.channels[rank]], [direction])
        label = unit if direction > 0 else f"{unit} (lowered)"
        self.picked.emit(CustomRender(objective, parse_target(unit, self.model), label))
