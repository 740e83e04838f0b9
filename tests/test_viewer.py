"""The napari studio: renders stream into one layer, Stop, attribution overlays, errors, `studio view`.

GUI tests need an X server with OpenGL (``make test`` runs pytest under ``xvfb-run``) and use napari's
``make_napari_viewer`` fixture (napari's pytest plugin) with pytest-qt's ``qtbot``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import studio
from studio.io import from_uint8, to_uint8
from tests.conftest import hook_count

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
gui = pytest.mark.gui
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X server (run under xvfb-run)")


def expected_image(model, target, **settings) -> np.ndarray:
    """The engine's final image for the same settings, as napari shows it (``H x W x 3`` float32)."""
    return studio.render(model, target, **settings).images[0].permute(1, 2, 0).numpy()


def attribute_and_wait(qtbot, widget, start=None):
    """Start an attribution (``start()``, default the widget's Attribute) and return the heat-map layer
    once the job has finished (so the next one is not refused as busy)."""
    added = []
    widget.attribution_added.connect(added.append)
    with qtbot.waitSignal(widget.attribution_finished, timeout=120_000):
        (start or widget.attribute)()
    widget.attribution_added.disconnect(added.append)
    assert added, widget.message.value
    return added[-1]


@pytest.fixture
def studio_widget(make_napari_viewer, qtbot, lite0):
    pytest.importorskip("napari")
    from studio.viewer.widget import StudioWidget

    viewer = make_napari_viewer()
    widget = StudioWidget(viewer, model=lite0)
    viewer.window.add_dock_widget(widget, name="Feature Studio")
    yield viewer, widget
    widget.stop()
    qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)


@gui
@needs_display
def test_render_streams_into_one_layer_and_ends_on_the_engine_image(studio_widget, qtbot, lite0):
    viewer, widget = studio_widget
    widget.fill("blocks.4:12", steps=12, size=48, every=3, seed=3)
    shown = []
    widget.frame_shown.connect(lambda f: shown.append((f.step, f.done, widget.render_layer, widget.render_layer.data.copy())))
    with qtbot.waitSignal(widget.render_finished, timeout=120_000):
        widget.run()
        worker = widget.render_worker
    assert [step for step, *_ in shown] == [3, 6, 9, 12]
    assert len(viewer.layers) == 1 and all(layer is widget.render_layer for _, _, layer, _ in shown)  # one layer, in place
    while_running = [data for _, done, _, data in shown if not done]
    assert len(while_running) >= 2 and not np.array_equal(while_running[0], while_running[-1])
    final = widget.render_layer.data
    assert final.shape == (48, 48, 3) and not np.array_equal(while_running[-1], final)
    np.testing.assert_array_equal(final, expected_image(lite0, "blocks.4:12", steps=12, size=48, seed=3))
    assert widget.progress_bar.n == 12 and not worker.is_running  # napari's progress bar reached the end
    assert "12/12" in widget.status.value and "objective" in widget.status.value
    assert hook_count(lite0.module) == 0


@gui
@needs_display
def test_a_channel_range_renders_as_a_stack_and_its_units_can_be_attributed(studio_widget, qtbot, lite0):
    viewer, widget = studio_widget
    widget.fill("blocks.3:5", steps=2, size=32, count=3, every=1)
    with qtbot.waitSignal(widget.render_finished, timeout=120_000):
        widget.run()
    layer = widget.render_layer
    assert layer.name == "blocks.3:5-7" and layer.data.shape == (3, 32, 32, 3) and layer.rgb
    assert viewer.dims.nsteps[0] == 3  # the channel is on the slider axis
    assert layer.metadata["studio_targets"] == ["blocks.3:5", "blocks.3:6", "blocks.3:7"]
    widget.method.value, widget.attribution_target.value = "gradcam", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    assert heat.data.shape == (3, 32, 32)
    images = torch.from_numpy(layer.data).permute(0, 3, 1, 2)
    expected = studio.attribute(lite0, images, target=["blocks.3:5", "blocks.3:6", "blocks.3:7"], method="gradcam")
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)


@gui
@needs_display
@pytest.mark.parametrize("how", ["stop button", "napari cancel"])
def test_stop_ends_the_worker_keeps_the_last_image_and_leaves_no_hooks(studio_widget, qtbot, lite0, how):
    viewer, widget = studio_widget
    flags = [p.requires_grad for p in lite0.module.parameters()]
    widget.fill("blocks.4:12", steps=5000, size=48, every=2)
    asked = []

    def stop_after_a_few(frame) -> None:
        if frame.step >= 4 and not asked:
            asked.append(widget._last_frame.step)
            widget.stop_button.changed.emit(True) if how == "stop button" else widget.render_worker.quit()
    widget.frame_shown.connect(stop_after_a_few)
    with qtbot.waitSignal(widget.render_finished, timeout=120_000) as finished:
        widget.run()
        worker = widget.render_worker
    last = finished.args[0]
    assert widget.render_worker is None and not worker.is_running
    assert last.step <= asked[0] + 2  # cancelled within a step or two
    shown = widget.render_layer.data
    assert shown.shape == (48, 48, 3) and shown.std() > 0  # the last image stays
    if how == "stop button":
        assert last.stopped and np.array_equal(shown, last.images[0])
    assert hook_count(lite0.module) == 0
    assert [p.requires_grad for p in lite0.module.parameters()] == flags  # the engine's frozen() was exited
    assert widget.run_button.enabled and not widget.stop_button.enabled


@gui
@needs_display
def test_attribution_adds_an_aligned_heat_map_equal_to_studio_attribute(studio_widget, qtbot, lite0, photos):
    viewer, widget = studio_widget
    photo = to_uint8(photos["chelsea"])
    layer = viewer.add_image(photo, rgb=True, name="chelsea", scale=(2, 2), translate=(10, -5))
    assert widget.source.value is layer
    widget.method.value, widget.attribution_target.value = "gradcam", "top class"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute_button.changed.emit(True))
    assert heat.data.shape == photo.shape[:2]
    expected = studio.attribute(lite0, from_uint8(photo)[None], target=None, method="gradcam")[0]
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert "gradcam" in heat.name and "Egyptian cat" in heat.name
    assert heat.colormap.name == "turbo" and str(heat.blending) in ("translucent", "additive")
    assert heat.opacity == pytest.approx(0.5)
    np.testing.assert_array_equal(heat.scale, layer.scale)
    np.testing.assert_array_equal(heat.translate, layer.translate)
    assert [entry[1] for entry in widget.source._default_choices()] == [layer]  # heat maps are not sources

    widget.fill("blocks.4:12")
    widget.method.value, widget.attribution_target.value = "saliency", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    expected = studio.attribute(lite0, from_uint8(photo)[None], target="blocks.4:12", method="saliency")[0]
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert heat.name == "chelsea · saliency · blocks.4:12"
    assert hook_count(lite0.module) == 0


@gui
@needs_display
def test_errors_reach_the_user_and_leave_the_widget_usable(studio_widget, qtbot, lite0, monkeypatch):
    viewer, widget = studio_widget
    import studio.viewer.streaming as streaming

    real = streaming.optimize

    def out_of_memory(model, targets, **settings):
        engine = real(model, targets, **settings)
        yield next(engine)
        engine.close()
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(streaming, "optimize", out_of_memory)
    widget.fill("blocks.4:12", steps=50, size=32)
    with qtbot.waitSignal(widget.failed, timeout=120_000) as failed, \
            qtbot.waitSignal(widget.render_finished, timeout=120_000):
        widget.run()
    assert "Out of memory" in failed.args[0] and "Out of memory" in widget.message.value
    assert widget.run_button.enabled and widget.render_worker is None and hook_count(lite0.module) == 0

    widget.fill(count=200)  # a user error is reported before any worker starts
    widget.run()
    assert widget.render_worker is None and "channels 0 to 111" in widget.message.value

    monkeypatch.setattr(streaming, "optimize", real)
    widget.fill(count=1, steps=3, every=1)
    with qtbot.waitSignal(widget.render_finished, timeout=120_000):
        widget.run()
    assert widget._last_frame.done and widget.render_layer.data.shape == (32, 32, 3)


@gui
@needs_display
def test_the_plugin_menu_entry_opens_the_widget_and_loads_the_default_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("feature-studio", "Feature Studio")
    qtbot.waitUntil(lambda: widget.load_worker is None, timeout=120_000)
    assert widget.model is not None and widget.model.name == "efficientnet_lite0"
    assert "blocks.4" in widget.layer.choices and widget.layer.value == "blocks.4"
    assert widget.channel.max == 111


@gui
@needs_display
def test_studio_view_screenshot_shows_the_rendered_image(tmp_path, lite0, photos):
    import imageio.v3 as iio

    photo = tmp_path / "chelsea.png"
    iio.imwrite(photo, to_uint8(photos["chelsea"]))
    out = tmp_path / "figure.png"
    command = [sys.executable, "-m", "studio", "view", "--device", "cpu", "--target", "blocks.4:12", "--steps", "6",
               "--size", "64", "--image", str(photo), "--screenshot", str(out), "--window-size", "1200x800"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    shot = iio.imread(out)[..., :3]
    record = json.loads(out.with_suffix(".json").read_text())
    assert shot.shape[1] == 1200 and shot.shape[0] >= 800 and shot.std() > 20
    assert set(record["layers"]) >= {"blocks.4:12", "chelsea", "chelsea · gradcam · blocks.4:12",
                                     "chelsea (top class) · gradcam · top class Egyptian cat"}
    x0, y0, x1, y1 = record["layers"]["blocks.4:12"]["box"]
    assert x1 - x0 > 64 and y1 - y0 > 64
    crop = torch.from_numpy(shot[y0 + 2:y1 - 2, x0 + 2:x1 - 2].astype(np.float32) / 255).permute(2, 0, 1)
    rendered = torch.from_numpy(expected_image(lite0, "blocks.4:12", steps=6, size=64)).permute(2, 0, 1)
    scaled = torch.nn.functional.interpolate(rendered[None], size=(y1 - y0, x1 - x0), mode="nearest")[0, :, 2:-2, 2:-2]
    assert (crop - scaled).abs().mean() < 0.03  # the visualisation's pixels are what the window shows there


def test_studio_view_without_napari_says_to_install_the_viewer_extra(tmp_path):
    code = ("import sys; sys.modules['napari'] = None; from studio.cli import main; "
            f"sys.exit(main(['view', '--screenshot', {str(tmp_path / 'x.png')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=SUBPROCESS_ENV)
    assert done.returncode == 2
    assert "pip install 'feature-studio[viewer]'" in done.stderr and "Traceback" not in done.stderr


def test_import_studio_imports_neither_qt_nor_napari():
    code = ("import studio, studio.cli, studio.viewer, studio.viewer.streaming, sys; studio.cli.build_parser(); "
            "bad = [m for m in sys.modules if m.startswith(('PyQt5', 'PyQt6', 'PySide', 'qtpy', 'napari', 'magicgui'))]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=SUBPROCESS_ENV)
    assert done.returncode == 0, done.stderr


def test_studio_view_checks_field_ranges_before_opening_a_window(capsys):
    from studio.cli import main

    assert main(["view", "--size", "8", "--device", "cpu"]) == 2
    assert "--size must be between 16 and 2048, not 8" in capsys.readouterr().err
