"""Make docs/probe.png and docs/blocks-panel.png: the studio in napari on scikit-image's chelsea, after a click at
the cat's left eye (the blocks.5 neuron under it rendered, then its Grad-CAM on the photo), and after the
building-blocks panel ranked blocks.5's channels for "Egyptian cat" (the top channel's map over the photo and
its render). Needs a display: ``xvfb-run -a``.

    xvfb-run -a -s "-screen 0 1600x1200x24" .venv/bin/python docs/make_viewer_figures.py --steps 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QScrollArea
from skimage import data

import studio
from studio.viewer.app import arrange
from studio.viewer.widget import StudioWidget

DOCS = Path(__file__).resolve().parent
#: Where the click lands: the cat's left eye, in chelsea's pixels (row, column).
EYE = (120.0, 140.0)


def wait_for(signal, start, seconds: float = 1800) -> None:
    """Call ``start`` and spin Qt's event loop until ``signal`` fires."""
    loop = QEventLoop()

    def quit_loop(*_) -> None:
        loop.quit()
    signal.connect(quit_loop)
    start()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()
    signal.disconnect(quit_loop)


def settle(seconds: float = 0.5) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def open_studio(model: studio.StudioModel, photo: np.ndarray, steps: int, size: int):
    viewer = napari.Viewer(title="Feature Studio", show=True)
    viewer.window._qt_window.resize(1500, 900)
    widget = StudioWidget(viewer, model=model, autoload=False)
    viewer.window.add_dock_widget(widget, name="Feature Studio", area="right")
    layer = viewer.add_image(photo, rgb=True, name="chelsea")
    widget.render_panel.layer.value = "blocks.5"
    widget.fill(steps=steps, size=size, method="gradcam")
    return viewer, widget, layer


def save(viewer, widget: StudioWidget, groups, path: Path, text: str, scroll_to_end: bool) -> None:
    arrange(viewer, groups, 2)
    viewer.text_overlay.visible, viewer.text_overlay.text, viewer.text_overlay.font_size = True, text, 10
    if scroll_to_end:
        bar = widget.native.findChild(QScrollArea).verticalScrollBar()
        bar.setValue(bar.maximum())
    settle()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    print("wrote", studio.write_image(path, np.ascontiguousarray(shot[..., :3])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    model = studio.load_model(device="cpu")
    photo = data.chelsea()  # uint8 [H, W, 3], as napari opens a photo

    viewer, widget, layer = open_studio(model, photo, args.steps, args.size)
    found = []
    wait_for(widget.attribution_panel.finished, lambda: found.append(widget.probe_at(layer, EYE)))
    heat = [other for other in viewer.layers if other.metadata.get("studio_heatmap")]
    save(viewer, widget, [[layer, *heat], widget.render_panel.image_layers], DOCS / "probe.png",
         f"clicked at row {EYE[0]:.0f}, column {EYE[1]:.0f}:\n{found[0].target.name} rendered, then its Grad-CAM",
         scroll_to_end=False)
    viewer.close()

    viewer, widget, layer = open_studio(model, photo, args.steps, args.size)
    panel = widget.blocks_panel
    panel.class_name.value = "Egyptian cat"
    wait_for(widget.render_panel.finished, lambda: panel.start(layer))
    maps = [other for other in viewer.layers if other.metadata.get("studio_heatmap")]
    save(viewer, widget, [[layer, *maps], widget.render_panel.image_layers], DOCS / "blocks-panel.png",
         panel.summary.value.replace(" · ", "\n"), scroll_to_end=True)
    viewer.close()


if __name__ == "__main__":
    main()
