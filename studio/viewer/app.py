"""``studio view``: napari with the studio docked and filled in; with a screenshot path, a reproducible
figure (render, its dataset examples and numbers when an index is given, attributions of each photo, the whole
window saved as PNG; in napari's 3D view for volume models) made without a person."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import napari
import numpy as np
import torch
from napari.layers import Image
from qtpy.QtCore import QEventLoop, QPoint, QTimer
from qtpy.QtWidgets import QApplication, QWidget

from studio.errors import StudioError
from studio.io import is_rgb_image, write_image, write_json
from studio.models import StudioModel
from studio.settings import RenderSettings
from studio.viewer.layers import add_image_layers, image_shape, place, place_right_of
from studio.viewer.streaming import HEATMAP_KEY, METHODS, TARGETS_KEY, render_label, to_napari
from studio.viewer.widget import StudioWidget

#: Gap between tiles in the screenshot layout, as a fraction of the tile height, by the images' spatial
#: dimensions (volumes leave room for their depth, seen at an angle in the 3D view).
GAPS = {2: 0.06, 3: 0.4}
#: The 3D camera's angles (degrees) for a volume model's screenshot: tilted, so that the volumes read as 3D.
VOLUME_VIEW = (-20.0, 15.0, 0.0)


def open_studio(model: StudioModel, *, target: str | None = None, images: Sequence[tuple[str, torch.Tensor]] = (),
                settings: RenderSettings | None = None, fields: dict | None = None, screenshot: str | None = None,
                method: str = METHODS[0], explain: Sequence[str] = ("visualised unit", "top class"),
                examples: str | None = None, window_size: tuple[int, int] = (1600, 1000),
                timeout: float = 1800) -> int:
    """Open napari with the studio docked, its fields filled (``target``, ``settings``, the viewer's own
    ``fields`` by name, the ``examples`` index) and ``images`` (``(name, [C, *size])`` in the model's layout) as
    layers. Without ``screenshot``, run napari's event loop until the window closes.

    With ``screenshot``: render, attribute each image (``method``) for what ``explain`` names (by default the
    rendered unit, then a copy for its top class), lay the layers out side by side (in napari's 3D view for a
    volume model), save the whole window to ``screenshot`` with a JSON record of the settings beside it,
    close, and return 0.
    """
    viewer = napari.Viewer(title="Feature Studio", show=True)
    try:
        viewer.window._qt_window.resize(*window_size)
        widget = StudioWidget(viewer, model=model, autoload=False)
        viewer.window.add_dock_widget(widget, name="Feature Studio", area="right")
        widget.fill(target, method=method, **(settings.as_dict() if settings else {}), **(fields or {}))
        if examples is not None:
            widget.examples_panel.set_index(examples)
        shown = [_add_photo(viewer, name, image) for name, image in images]
        if shown:
            widget.attribution_panel.source.value = shown[0][0]
        dims = model.spec.dims
        arrange(viewer, shown, dims)
        if dims == 3:
            viewer.dims.ndisplay = 3
        if screenshot is None:
            napari.run()
            return 0
        return _make_figure(viewer, widget, list(zip(images, shown)), explain, screenshot, timeout)
    finally:
        if screenshot is not None:
            viewer.close()


def _add_photo(viewer, name: str, image: torch.Tensor) -> list[Image]:
    """Add an image ``[C, *size]`` as the layers that show the model's images (RGB, grey or one per channel)."""
    return add_image_layers(viewer, to_napari(image[None]), is_rgb_image(image), name)


def _make_figure(viewer, widget: StudioWidget, photos: list[tuple[tuple[str, torch.Tensor], list[Image]]],
                 explain: Sequence[str], path: str, timeout: float) -> int:
    errors: list[str] = []
    widget.failed.connect(errors.append)
    renderer, explainer, exemplars = widget.render_panel, widget.attribution_panel, widget.examples_panel
    _run_and_wait(widget.run, renderer.finished, lambda: renderer.worker is not None, timeout)
    _run_and_wait(lambda: None, exemplars.settled, lambda: exemplars.busy, timeout)
    frame = renderer.last_frame
    if errors or frame is None or not frame.done:
        raise StudioError(errors[0] if errors else f"The render did not finish within {timeout:g} seconds.")
    render = renderer.image_layers
    groups = [render]
    for (name, image), layers in photos:
        for index, choice in enumerate(explain):
            shown = layers if index == 0 else _add_photo(viewer, f"{name} ({choice})", image)
            explainer.explain.value = choice
            added: list[Image] = []
            explainer.added.connect(added.append)
            _run_and_wait(lambda layer=shown[0]: widget.attribute(layer), explainer.finished,
                          lambda: explainer.worker is not None, timeout)
            explainer.added.disconnect(added.append)
            if errors:
                raise StudioError(errors[0])
            groups.append([*shown, *added])
    dims = widget.model.spec.dims
    arrange(viewer, groups, dims)
    if exemplars.layers:  # right of the render, which moves left to make room: the grid stays uncovered
        place_right_of(exemplars.layers, render, dims, make_room=True)
        viewer.reset_view()
    if dims == 3:
        viewer.camera.angles = VOLUME_VIEW
        viewer.fit_to_view()  # the turned volumes, whole
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = "\n".join([f"{render_label(frame.result.targets)} · {frame.step} steps · "
                                          f"objective {frame.values.mean():.3g}",
                                          *(number.text() for number in exemplars.numbers)])
    viewer.text_overlay.font_size = 10
    viewer.layers.selection.active = render[0]
    _close_notifications(viewer)
    _settle()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    written = write_image(path, np.ascontiguousarray(shot[..., :3]))
    flat = viewer.dims.ndisplay == 2  # where a layer appears is known for the 2D view's camera
    record = {"screenshot": str(written), "model": widget.model.name, "targets": render[0].metadata.get(TARGETS_KEY),
              "settings": frame.result.settings, "steps_done": frame.step,
              "objective": [float(v) for v in frame.values], "device": str(widget.model.device),
              "dataset": [number.text() for number in exemplars.numbers],
              "ndisplay": viewer.dims.ndisplay,
              "layers": {layer.name: {"box": window_box(viewer, layer, shot.shape) if flat else None,
                                      "heatmap": bool(layer.metadata.get(HEATMAP_KEY))}
                         for layer in viewer.layers if layer.visible}}
    write_json(Path(path).with_suffix(".json"), record)
    print(f"wrote {written} ({shot.shape[1]}x{shot.shape[0]}) and {Path(path).with_suffix('.json')}")
    return 0


def _run_and_wait(start: Callable[[], None], signal, started: Callable[[], bool], timeout: float) -> None:
    """Call ``start`` and spin Qt's event loop until ``signal`` fires (or ``timeout`` seconds pass)."""
    loop = QEventLoop()

    def quit_loop(*_) -> None:
        loop.quit()
    signal.connect(quit_loop)
    try:
        start()
        if started():
            QTimer.singleShot(int(timeout * 1000), loop.quit)
            loop.exec_()
    finally:
        signal.disconnect(quit_loop)


def _settle(seconds: float = 0.3) -> None:
    """Let Qt lay out and paint (the canvas draws on the next event-loop passes)."""
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec_()
    QApplication.processEvents()


def _close_notifications(viewer) -> None:
    """Close napari's notification toasts (start-up notices, say) so they do not cover the canvas."""
    for child in viewer.window._qt_window.findChildren(QWidget):
        if type(child).__name__ == "NapariQtNotification":
            child.close()


def arrange(viewer, groups: Sequence[Sequence[Image]], dims: int) -> None:
    """Lay groups of layers out as equal-height tiles in the grid (1 to N columns) that shows them largest on
    the canvas; a group is a base image (one layer or one per channel) and the overlays that share its
    placement (heat maps); ``dims`` is the images' spatial dimensions (3: volumes, scaled in depth too)."""
    groups = [group for group in groups if group]
    if not groups:
        return
    height = max(image_shape(group[0])[0] for group in groups)
    widths = [height * image_shape(group[0])[1] / image_shape(group[0])[0] for group in groups]
    cell, gap = max(widths), GAPS[dims] * height
    canvas = viewer.window._qt_viewer.canvas.native

    def zoom(columns: int) -> float:
        rows = -(-len(groups) // columns)
        return min(canvas.width() / (columns * cell + (columns - 1) * gap),
                   canvas.height() / (rows * height + (rows - 1) * gap))
    columns = max(range(1, len(groups) + 1), key=zoom)
    for index, (group, width) in enumerate(zip(groups, widths)):
        row, column = divmod(index, columns)
        scale = height / image_shape(group[0])[0]
        top, left = row * (height + gap), column * (cell + gap) + (cell - width) / 2
        for layer in group:
            place(layer, scale, top, left, dims)
    viewer.reset_view()


def window_box(viewer, layer: Image, shot_shape: Sequence[int]) -> list[int]:
    """Where ``layer`` appears in a whole-window screenshot of shape ``shot_shape``: ``[x0, y0, x1, y1]``
    pixels (from the camera's centre and zoom and the canvas's place in the window)."""
    qt_viewer = viewer.window._qt_viewer
    canvas = qt_viewer.canvas.native
    offset = canvas.mapTo(viewer.window._qt_window, QPoint(0, 0))
    ratio = shot_shape[1] / viewer.window._qt_window.width()
    corners = np.asarray(layer.extent.world)[:, -2:]  # [[top, left], [bottom, right]] in world units
    center = np.asarray(viewer.camera.center)[-2:]
    half = np.array([canvas.height(), canvas.width()]) / 2
    screen = (corners - center) * viewer.camera.zoom + half + np.array([offset.y(), offset.x()])
    (y0, x0), (y1, x1) = np.round(screen * ratio).astype(int)
    return [int(x0), int(y0), int(x1), int(y1)]
