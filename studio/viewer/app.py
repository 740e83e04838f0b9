"""``studio view``: napari with the studio docked and filled in; with a screenshot path, a reproducible
figure (render, attributions of each photo, the whole window saved as PNG) made without a person."""

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
from studio.io import to_uint8, write_image, write_json
from studio.models import StudioModel
from studio.settings import RenderSettings
from studio.viewer.streaming import HEATMAP_KEY, METHODS, TARGETS_KEY
from studio.viewer.widget import StudioWidget

#: Gap between tiles in the screenshot layout, as a fraction of the tile height.
GAP = 0.06


def open_studio(model: StudioModel, *, target: str | None = None, images: Sequence[tuple[str, torch.Tensor]] = (),
                settings: RenderSettings | None = None, fields: dict | None = None, screenshot: str | None = None,
                method: str = METHODS[0], window_size: tuple[int, int] = (1600, 1000), timeout: float = 1800) -> int:
    """Open napari with the studio docked, its fields filled (``target``, ``settings``, the viewer's own
    ``fields`` by name) and ``images`` (``(name, [3, H, W])``) as layers. Without ``screenshot``, run napari's
    event loop until the window closes.

    With ``screenshot``: render, attribute each image for the rendered unit and for its top class
    (``method``), lay the layers out side by side, save the whole window to ``screenshot`` with a JSON
    record of the settings beside it, close, and return 0.
    """
    viewer = napari.Viewer(title="Feature Studio", show=True)
    try:
        viewer.window._qt_window.resize(*window_size)
        widget = StudioWidget(viewer, model=model, autoload=False)
        viewer.window.add_dock_widget(widget, name="Feature Studio", area="right")
        widget.fill(target, method=method, **(settings.as_dict() if settings else {}), **(fields or {}))
        photos = [viewer.add_image(to_uint8(image), rgb=True, name=name) for name, image in images]
        if photos:
            widget.attribution_panel.source.value = photos[0]
        arrange(viewer, [[photo] for photo in photos])
        if screenshot is None:
            napari.run()
            return 0
        return _make_figure(viewer, widget, photos, screenshot, timeout)
    finally:
        if screenshot is not None:
            viewer.close()


def _make_figure(viewer, widget: StudioWidget, photos: list[Image], path: str, timeout: float) -> int:
    errors: list[str] = []
    widget.failed.connect(errors.append)
    renderer, explainer = widget.render_panel, widget.attribution_panel
    _run_and_wait(widget.run, renderer.finished, lambda: renderer.worker is not None, timeout)
    frame = renderer.last_frame
    if errors or frame is None or not frame.done:
        raise StudioError(errors[0] if errors else f"The render did not finish within {timeout:g} seconds.")
    render = renderer.image_layer
    groups = [[render]]
    for photo in photos:
        pairs = [(photo, "visualised unit"),
                 (viewer.add_image(photo.data, rgb=True, name=f"{photo.name} (top class)"), "top class")]
        for layer, choice in pairs:
            explainer.explain.value = choice
            added: list[Image] = []
            explainer.added.connect(added.append)
            _run_and_wait(lambda layer=layer: widget.attribute(layer), explainer.finished,
                          lambda: explainer.worker is not None, timeout)
            explainer.added.disconnect(added.append)
            if errors:
                raise StudioError(errors[0])
            groups.append([layer, *added])
    arrange(viewer, groups)
    viewer.text_overlay.visible = True
    viewer.text_overlay.text = f"{render.name} · {frame.step} steps · objective {frame.values.mean():.3g}"
    viewer.text_overlay.font_size = 10
    viewer.layers.selection.active = render
    _close_notifications(viewer)
    _settle()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    written = write_image(path, np.ascontiguousarray(shot[..., :3]))
    record = {"screenshot": str(written), "model": widget.model.name, "targets": render.metadata.get(TARGETS_KEY),
              "settings": frame.result.settings, "steps_done": frame.step,
              "objective": [float(v) for v in frame.values], "device": str(widget.model.device),
              "layers": {layer.name: {"box": window_box(viewer, layer, shot.shape),
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


def arrange(viewer, groups: Sequence[Sequence[Image]]) -> None:
    """Lay groups of layers out as equal-height tiles in the grid (1 to N columns) that shows them largest on
    the canvas; a group is a base image and the overlays that share its placement (heat maps)."""
    groups = [group for group in groups if group]
    if not groups:
        return
    height = max(_spatial_shape(group[0])[0] for group in groups)
    widths = [height * _spatial_shape(group[0])[1] / _spatial_shape(group[0])[0] for group in groups]
    cell, gap = max(widths), GAP * height
    canvas = viewer.window._qt_viewer.canvas.native

    def zoom(columns: int) -> float:
        rows = -(-len(groups) // columns)
        return min(canvas.width() / (columns * cell + (columns - 1) * gap),
                   canvas.height() / (rows * height + (rows - 1) * gap))
    columns = max(range(1, len(groups) + 1), key=zoom)
    for index, (group, width) in enumerate(zip(groups, widths)):
        row, column = divmod(index, columns)
        scale = height / _spatial_shape(group[0])[0]
        top, left = row * (height + gap), column * (cell + gap) + (cell - width) / 2
        for layer in group:
            lead = layer.ndim - 2
            layer.scale = (*([1.0] * lead), scale, scale)
            layer.translate = (*([0.0] * lead), top, left)
    viewer.reset_view()


def _spatial_shape(layer: Image) -> tuple[int, int]:
    shape = layer.data.shape
    return tuple(shape[-3:-1]) if layer.rgb else tuple(shape[-2:])


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
