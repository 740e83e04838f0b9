"""The napari studio: renders stream into one layer (grey, one per channel, 3D for volumes), Stop, attribution
overlays, errors, `studio view`, dataset examples, concept dictionaries among the layers.

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
from studio.cli import main
from studio.io import from_uint8, to_uint8
from tests.conftest import hook_count
from tests.synthetic import PatternNet, pattern_images, sphere_net, stripe_net

SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
gui = pytest.mark.gui
needs_display = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X server (run under xvfb-run)")


def expected_image(model, target, **settings) -> np.ndarray:
    """The engine's final image for the same settings, as napari shows it (``H x W x 3`` float32)."""
    return studio.render(model, target, **settings).images[0].permute(1, 2, 0).numpy()


def attribute_and_wait(qtbot, widget, start=None):
    """Start an attribution (``start()``, default the widget's Attribute) and return the heat-map layer
    once the job has finished (so the next one is not refused as busy)."""
    panel, added = widget.attribution_panel, []
    panel.added.connect(added.append)
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        (start or widget.attribute)()
    panel.added.disconnect(added.append)
    assert added, widget.message.value
    return added[-1]


@pytest.fixture
def open_studio_widget(make_napari_viewer, qtbot):
    """Open napari with the studio docked for a model: ``(viewer, widget)``; renders are stopped at the end."""
    pytest.importorskip("napari")
    from studio.viewer.widget import StudioWidget

    opened = []

    def open_widget(model):
        viewer = make_napari_viewer()
        widget = StudioWidget(viewer, model=model)
        viewer.window.add_dock_widget(widget, name="Feature Studio")
        opened.append(widget)
        return viewer, widget
    yield open_widget
    for widget in opened:
        widget.stop()
        qtbot.waitUntil(lambda: not widget.busy, timeout=60_000)


@pytest.fixture
def studio_widget(open_studio_widget, lite0):
    return open_studio_widget(lite0)


@gui
@needs_display
def test_render_streams_into_one_layer_and_ends_on_the_engine_image(studio_widget, qtbot, lite0):
    viewer, widget = studio_widget
    panel = widget.render_panel
    widget.fill("blocks.4:12", steps=12, size=48, every=3, seed=3)
    shown = []
    panel.frame_shown.connect(lambda f: shown.append((f.step, f.done, panel.image_layer, panel.image_layer.data.copy())))
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        widget.run()
        worker = panel.worker
    assert [step for step, *_ in shown] == [3, 6, 9, 12]
    assert len(viewer.layers) == 1 and all(layer is panel.image_layer for _, _, layer, _ in shown)  # one layer, in place
    while_running = [data for _, done, _, data in shown if not done]
    assert len(while_running) >= 2 and not np.array_equal(while_running[0], while_running[-1])
    final = panel.image_layer.data
    assert final.shape == (48, 48, 3) and not np.array_equal(while_running[-1], final)
    np.testing.assert_array_equal(final, expected_image(lite0, "blocks.4:12", steps=12, size=48, seed=3))
    assert panel.progress_bar.n == 12 and not worker.is_running  # napari's progress bar reached the end
    assert "12/12" in panel.status.value and "objective" in panel.status.value
    assert hook_count(lite0.module) == 0


@gui
@needs_display
def test_a_channel_range_renders_as_a_stack_and_its_units_can_be_attributed(studio_widget, qtbot, lite0):
    viewer, widget = studio_widget
    widget.fill("blocks.3:5", steps=2, size=32, count=3, every=1)
    with qtbot.waitSignal(widget.render_panel.finished, timeout=120_000):
        widget.run()
    layer = widget.render_panel.image_layer
    assert layer.name == "blocks.3:5-7" and layer.data.shape == (3, 32, 32, 3) and layer.rgb
    assert viewer.dims.nsteps[0] == 3  # the channel is on the slider axis
    assert layer.metadata["studio_targets"] == ["blocks.3:5", "blocks.3:6", "blocks.3:7"]
    explainer = widget.attribution_panel
    explainer.method.value, explainer.explain.value = "gradcam", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    assert heat.data.shape == (3, 32, 32) and heat.name == "blocks.3:5-7 · gradcam · blocks.3:5 ..."
    images = torch.from_numpy(layer.data).permute(0, 3, 1, 2)
    expected = studio.attribute(lite0, images, target=["blocks.3:5", "blocks.3:6", "blocks.3:7"], method="gradcam")
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)


@gui
@needs_display
@pytest.mark.parametrize("how", ["stop button", "napari cancel"])
def test_stop_ends_the_worker_keeps_the_last_image_and_leaves_no_hooks(studio_widget, qtbot, lite0, how):
    viewer, widget = studio_widget
    panel = widget.render_panel
    flags = [p.requires_grad for p in lite0.module.parameters()]
    widget.fill("blocks.4:12", steps=5000, size=48, every=2)
    asked = []

    def stop_after_a_few(frame) -> None:
        if frame.step >= 4 and not asked:
            asked.append(panel.last_frame.step)
            panel.stop_button.changed.emit(True) if how == "stop button" else panel.worker.quit()
    panel.frame_shown.connect(stop_after_a_few)
    with qtbot.waitSignal(panel.finished, timeout=120_000) as finished:
        widget.run()
        worker = panel.worker
    last = finished.args[0]
    assert panel.worker is None and not worker.is_running
    assert last.step <= asked[0] + 2  # cancelled within a step or two
    shown = panel.image_layer.data
    assert shown.shape == (48, 48, 3) and shown.std() > 0  # the last image stays
    if how == "stop button":
        assert last.stopped and np.array_equal(shown, last.images[0])
    assert hook_count(lite0.module) == 0
    assert [p.requires_grad for p in lite0.module.parameters()] == flags  # the engine's frozen() was exited
    assert panel.run_button.enabled and not panel.stop_button.enabled


@gui
@needs_display
def test_attribution_adds_an_aligned_heat_map_equal_to_studio_attribute(studio_widget, qtbot, lite0, photos):
    viewer, widget = studio_widget
    photo = to_uint8(photos["chelsea"])
    explainer = widget.attribution_panel
    layer = viewer.add_image(photo, rgb=True, name="chelsea", scale=(2, 2), translate=(10, -5))
    assert explainer.source.value is layer
    explainer.method.value, explainer.explain.value = "gradcam", "top class"
    heat = attribute_and_wait(qtbot, widget, lambda: explainer.attribute_button.changed.emit(True))
    assert heat.data.shape == photo.shape[:2]
    expected = studio.attribute(lite0, from_uint8(photo)[None], target=None, method="gradcam")[0]
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert "gradcam" in heat.name and "Egyptian cat" in heat.name
    assert heat.colormap.name == "turbo" and str(heat.blending) in ("translucent", "additive")
    assert heat.opacity == pytest.approx(0.5)
    # the map's faithfulness comes with it: the same deletion and insertion AUCs as studio.deletion_insertion
    scored = studio.deletion_insertion(lite0, from_uint8(photo)[None], expected[None], steps=16)
    np.testing.assert_allclose(heat.metadata["deletion_auc"], scored.deletion_auc.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(heat.metadata["insertion_auc"], scored.insertion_auc.numpy(), rtol=1e-4, atol=1e-6)
    assert "deletion AUC" in widget.message.value and "insertion AUC" in widget.message.value
    np.testing.assert_array_equal(heat.scale, layer.scale)
    np.testing.assert_array_equal(heat.translate, layer.translate)
    assert [entry[1] for entry in explainer.source._default_choices()] == [layer]  # heat maps are not sources

    widget.fill("blocks.4:12")
    explainer.method.value, explainer.explain.value = "saliency", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    expected = studio.attribute(lite0, from_uint8(photo)[None], target="blocks.4:12", method="saliency")[0]
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert heat.name == "chelsea · saliency · blocks.4:12"
    assert hook_count(lite0.module) == 0


@gui
@needs_display
def test_clicking_a_photo_renders_the_neuron_under_the_point_and_explains_it(studio_widget, qtbot, lite0, photos,
                                                                           tmp_path):
    viewer, widget = studio_widget
    photo = to_uint8(photos["chelsea"])
    layer = viewer.add_image(photo, rgb=True, name="chelsea")
    widget.render_panel.layer.value = "blocks.5"
    widget.fill(steps=4, size=32, method="gradcam")
    assert widget._on_probe_click not in layer.mouse_drag_callbacks  # only while the box is ticked
    widget.probe.value = True
    assert widget._on_probe_click in layer.mouse_drag_callbacks

    class Click:  # what napari hands a mouse callback: the press, at the cat's left eye (world = data here)
        type, position = "mouse_press", (120.0, 140.0)

    expected = studio.probe(lite0, from_uint8(photo), "blocks.5", (120, 140)).target.name
    with qtbot.waitSignal(widget.attribution_panel.finished, timeout=180_000):
        widget._on_probe_click(layer, Click())
    assert widget.render_panel.image_layer.name == expected  # the neuron under the point, rendered
    heat = [other for other in viewer.layers if other.metadata.get("studio_heatmap")]
    assert heat and heat[-1].name == f"chelsea · gradcam · {expected}" and heat[-1].data.shape == photo.shape[:2]
    viewer.window.show()
    viewer.reset_view()
    qtbot.wait(300)
    picture = viewer.screenshot(canvas_only=True, flash=False)
    studio.write_image(tmp_path / "probe.png", picture[..., :3])
    assert picture[..., :3].std() > 10  # the photo, its render and the map are on the canvas
    widget.probe.value = False
    assert widget._on_probe_click not in layer.mouse_drag_callbacks

    widget.grid_stride.value = 6  # the activation grid: 2 x 2 of blocks.5's 7 x 7 cells, laid over the photo
    widget.fill(steps=2, size=16)
    before = len(viewer.layers)
    widget.activation_grid(layer)
    qtbot.waitUntil(lambda: widget.grid_worker is None, timeout=120_000)
    grid = viewer.layers[-1]
    assert len(viewer.layers) == before + 1 and grid.name == "chelsea · activation grid · blocks.5"
    assert grid.data.shape == (19, 19, 3) and len(grid.metadata["studio_activation_grid"]) == 4  # cut at 7 cells
    # the first render covers cells 0-5 of 7 from the photo's top-left corner: rows 0-257.1, columns 0-386.6
    top, left = (grid.translate - grid.scale / 2)[-2:]
    np.testing.assert_allclose((top, left), (-0.5, -0.5), atol=1e-6)
    np.testing.assert_allclose(grid.scale[-2:] * 16, (6 * 300 / 7, 6 * 451 / 7), rtol=1e-6)
    np.testing.assert_allclose(grid.scale[-2:] * 19, (300, 451), rtol=0.03)  # it ends where the photo does
    assert hook_count(lite0.module) == 0


@gui
@needs_display
def test_a_finished_render_can_show_its_transparency_as_its_opacity(studio_widget, qtbot, lite0):
    viewer, widget = studio_widget
    panel = widget.render_panel
    widget.fill("blocks.4:3@3,3", steps=12, size=48)
    panel.transparency.value = True
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        widget.run()
    data = panel.image_layer.data
    expected = studio.render(lite0, "blocks.4:3@3,3", steps=12, size=48)
    assert data.shape == (48, 48, 4) and panel.image_layer.rgb  # RGBA: napari draws the alpha as opacity
    np.testing.assert_allclose(data[..., 3], expected.alpha[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(data[..., :3], expected.images[0].permute(1, 2, 0).numpy())
    assert data[..., 3].min() < 0.2 < 0.9 < data[..., 3].max()  # a neuron's alpha: opaque over its field only
    panel.transparency.value = False
    assert panel.image_layer.data.shape == (48, 48, 3)


@gui
@needs_display
def test_errors_reach_the_user_and_leave_the_widget_usable(studio_widget, qtbot, lite0, monkeypatch):
    viewer, widget = studio_widget
    import studio.viewer.streaming as streaming

    real = streaming.optimize

    def out_of_memory(model, targets, settings=None, **options):
        engine = real(model, targets, settings, **options)
        yield next(engine)
        engine.close()
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
    monkeypatch.setattr(streaming, "optimize", out_of_memory)
    panel = widget.render_panel
    widget.fill("blocks.4:12", steps=50, size=32)
    with qtbot.waitSignal(widget.failed, timeout=120_000) as failed, \
            qtbot.waitSignal(panel.finished, timeout=120_000):
        widget.run()
    assert "Out of memory" in failed.args[0] and "Out of memory" in widget.message.value
    assert panel.run_button.enabled and panel.worker is None and hook_count(lite0.module) == 0

    widget.fill(count=200)  # user errors are reported before any worker starts
    widget.run()
    assert panel.worker is None and "channels are 0 to 111" in widget.message.value
    widget.fill(count=1, lr=0.0)
    widget.run()
    assert panel.worker is None and widget.message.value == "lr must be positive, not 0.0."

    monkeypatch.setattr(streaming, "optimize", real)
    widget.fill(lr=0.05, steps=3, every=1)
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        widget.run()
    assert panel.last_frame.done and panel.image_layer.data.shape == (32, 32, 3)


@gui
@needs_display
def test_the_render_fields_are_the_render_settings_and_what_is_chosen_reaches_the_engine(studio_widget, qtbot):
    from studio.param import PARAM_KINDS
    from studio.settings import RenderSettings, setting_fields
    from studio.viewer.streaming import VIEWER_FIELDS, field_range

    viewer, widget = studio_widget
    panel = widget.render_panel
    assert list(panel.fields) == [spec.name for spec in (*VIEWER_FIELDS, *setting_fields())]
    assert tuple(panel.fields["param"].choices) == PARAM_KINDS  # every parameterisation the engine has
    for spec in setting_fields():
        field = panel.fields[spec.name]
        if spec.choices is None and spec.kind in (int, float):
            assert (field.min, field.max) == field_range(spec)
    assert panel.request().settings == RenderSettings()  # the fields start at the settings' defaults

    chosen = {"param": "pixel", "steps": 2, "size": 40, "lr": 0.0125, "transforms": "none", "decorrelate": False,
              "decay_power": 1.5, "precision": "bfloat16", "canvas": 120, "crops": 2, "crop_size": 0.5}
    assert set(chosen) == {spec.name for spec in setting_fields()}
    assert all(chosen[spec.name] != spec.default for spec in setting_fields())
    widget.fill("blocks.4:12", **chosen)
    with qtbot.waitSignal(panel.finished, timeout=120_000) as finished:
        widget.run()
    record = finished.args[0].result.settings
    assert {name: record[name] for name in chosen} == chosen
    assert panel.image_layer.data.shape == (120, 120, 3)  # the canvas


@gui
@needs_display
def test_a_canvas_streams_whole_with_its_crop_boxes_in_a_shapes_layer_to_turn_on(studio_widget, qtbot):
    viewer, widget = studio_widget
    panel = widget.render_panel
    widget.fill("blocks.3:5", steps=4, size=32, canvas=192, crops=3, crop_size=0.25, count=2, every=2)
    boxes = []
    panel.frame_shown.connect(lambda frame: boxes.append(frame.boxes))
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        widget.run()
    layer = panel.image_layer
    assert layer.data.shape == (2, 192, 192, 3)
    crops = viewer.layers["blocks.3:5-6 · crops"]
    assert not crops.visible and len(crops.data) == 2 * 3  # three boxes per unit, on its slider position
    step = boxes[0]  # the step-2 frame's boxes: [units, crops, (rows, columns), (start, stop)]
    assert step.shape == (2, 3, 2, 2) and (step[..., 1] - step[..., 0] == 48).all()
    first = crops.data[0]
    assert first[0, 0] == 0 and np.allclose(first[:, 1:].min(0), step[0, 0, :, 0] - 0.5)
    assert np.allclose(crops.scale, layer.scale) and np.allclose(crops.translate, layer.translate)


@gui
@needs_display
def test_the_plugin_menu_entry_opens_the_widget_and_loads_the_default_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("feature-studio", "Feature Studio")
    qtbot.waitUntil(lambda: widget.load_worker is None, timeout=120_000)
    assert widget.model is not None and widget.model.name == "efficientnet_lite0"
    panel = widget.render_panel
    assert "blocks.4" in panel.layer.choices and panel.layer.value == "blocks.4"
    assert panel.channel.max == 111


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
    assert shot.shape[1] == 1200 and shot.shape[0] >= 800 and shot.std() > 20 and record["ndisplay"] == 2
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


def test_studio_view_checks_its_settings_before_loading_a_model_or_opening_a_window(capsys, monkeypatch):
    from studio.cli import main
    from studio.commands import view

    monkeypatch.setattr(view, "model_from_args", lambda args: pytest.fail("the model loaded before the check"))
    assert main(["view", "--size", "4", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "studio: error: size must be at least 8, not 4."
    assert main(["view", "--count", "0", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == "studio: error: count must be at least 1, not 0."


def test_the_viewer_offers_every_attribution_method_and_takes_no_setting_limits_of_its_own():
    from studio.attribution import METHODS as LIBRARY_METHODS
    from studio.settings import setting_fields
    from studio.viewer.streaming import METHODS, UNBOUNDED, VIEWER_FIELDS, field_range

    assert sorted(METHODS) == sorted(LIBRARY_METHODS) and METHODS[0] == "gradcam"
    assert not {spec.name for spec in VIEWER_FIELDS} & {spec.name for spec in setting_fields()}
    limits = {spec.name: field_range(spec) for spec in setting_fields() if spec.kind in (int, float)}
    assert limits == {"steps": (1, 100_000), "size": (8, 2048), "lr": (0, 10.0), "decay_power": (0.0, UNBOUNDED),
                      "canvas": (0, 8192), "crops": (1, 64), "crop_size": (0, 1.0)}


def test_render_requests_build_their_targets_with_the_target_grammar(lite0):
    from studio.viewer.streaming import RenderRequest, render_label

    classes = RenderRequest("logits", "channel", "tabby", count=2).targets(lite0)
    assert [t.name for t in classes] == ["logits:281", "logits:282"] and render_label(classes) == "logits:281-282"
    assert render_label(RenderRequest("logits", "channel", "285").targets(lite0)) == "Egyptian cat"
    neurons = RenderRequest("blocks.4", "neuron", 3, position=(2, 5), count=2).targets(lite0)
    assert [t.name for t in neurons] == ["blocks.4:3@2,5", "blocks.4:4@2,5"]
    assert render_label(neurons) == "blocks.4:3-4@2,5"
    assert [t.name for t in RenderRequest("blocks.4", "layer", 7, count=5).targets(lite0)] == ["blocks.4"]
    with pytest.raises(studio.StudioError, match="valid channels are 0 to 111"):
        RenderRequest("blocks.4", "channel", 12, count=200).targets(lite0)
    with pytest.raises(studio.StudioError, match="needs a position"):
        RenderRequest("blocks.4", "neuron", 12).targets(lite0)


def test_studio_view_offers_every_render_setting_with_its_default(capsys):
    from studio.cli import build_parser
    from studio.commands.common import render_settings_from_args
    from studio.param import PARAM_KINDS

    parser = build_parser()
    args = parser.parse_args(["view", "--param", "cppn", "--decay-power", "0.5", "--no-decorrelate", "--count", "3"])
    assert render_settings_from_args(args) == studio.RenderSettings(param="cppn", decay_power=0.5, decorrelate=False)
    assert (args.count, args.seed, args.method) == (3, 0, "gradcam")
    with pytest.raises(SystemExit):
        parser.parse_args(["view", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join(PARAM_KINDS) + "}" in text and "optimisation steps (default: 512)" in text


@pytest.fixture(scope="module")
def vit() -> studio.StudioModel:
    torch.manual_seed(0)
    return studio.load_model("timm:deit_tiny_distilled_patch16_224", pretrained=False, device="cpu")


def test_render_requests_reach_prefix_tokens(vit):
    from studio.viewer.streaming import RenderRequest, render_label

    tokens = RenderRequest("blocks.6", "token", 12, token=1, count=2).targets(vit)
    assert [t.name for t in tokens] == ["blocks.6:12@token1", "blocks.6:13@token1"]
    assert render_label(tokens) == "blocks.6:12-13@token1"
    assert RenderRequest("blocks.6", "token", 12).targets(vit)[0].name == "blocks.6:12@cls"
    with pytest.raises(studio.StudioError, match="2 prefix token"):
        RenderRequest("blocks.6", "token", 12, token=2).targets(vit)


@gui
@needs_display
def test_token_layers_are_listed_with_their_grid_and_attention_arrives_as_an_overlay(open_studio_widget, qtbot, vit,
                                                                                       photos):
    viewer, widget = open_studio_widget(vit)
    panel = widget.render_panel
    labels = dict((value, label) for label, value in panel.layer._default_choices())
    assert labels["blocks.6.mlp.act"].endswith("tokens: 2 prefix + 14x14 grid, 768 channels")
    assert labels["blocks.0.attn.qkv"].endswith("tokens: 2 prefix + 14x14 grid, 576 channels")
    widget.fill("blocks.6:12@token1")
    assert (panel.kind.value, panel.token.value, panel.token.max) == ("token", 1, 1)
    assert not panel.token.native.isHidden() and panel.row.native.isHidden()  # only the token field is offered
    assert [t.name for t in panel.request().targets(vit)] == ["blocks.6:12@token1"]
    widget.fill("blocks.6.mlp.act:3@4,5")
    assert (panel.kind.value, panel.row.value, panel.column.value, panel.row.max) == ("neuron", 4, 5, 13)
    photo = to_uint8(photos["coffee"])
    layer = viewer.add_image(photo, rgb=True, name="coffee")
    widget.attribution_panel.method.value, widget.attribution_panel.explain.value = "attention_rollout", "top class"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    expected = studio.attribute(vit, from_uint8(photo)[None], None, "attention_rollout")[0]
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert heat.data.shape == photo.shape[:2] and "attention_rollout" in heat.name
    assert hook_count(vit.module) == 0


# ---------------------------------------------------------------- beyond RGB: grey, N channels, volumes

MONO_2D = studio.InputSpec((24, 24), mean=(0.0,), std=(1.0,), channels=1)
FIVE_2D = studio.InputSpec((16, 16), channels=5)
MONO_3D = studio.InputSpec((12, 12, 12), mean=(0.0,), std=(1.0,), channels=1)


def five_channel_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(5, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 2))


def tiny_model(net, spec: studio.InputSpec) -> studio.StudioModel:
    """A tiny network with random weights (seeded) for ``spec``."""
    torch.manual_seed(0)
    return studio.load_model(net(), device="cpu", input=spec)


@pytest.fixture(scope="module")
def mono2d() -> studio.StudioModel:
    return tiny_model(stripe_net, MONO_2D)


@pytest.fixture(scope="module")
def five2d() -> studio.StudioModel:
    return tiny_model(five_channel_net, FIVE_2D)


@pytest.fixture(scope="module")
def mono3d() -> studio.StudioModel:
    return tiny_model(sphere_net, MONO_3D)


def render_and_watch(qtbot, widget, target: str, on_frame=None, **fields) -> list[tuple]:
    """Render ``target`` in the widget; per shown frame: its step, the layers showing it and their data."""
    panel, shown = widget.render_panel, []

    def watch(frame) -> None:
        shown.append((frame.step, list(panel.image_layers), [layer.data.copy() for layer in panel.image_layers]))
        if on_frame is not None:
            on_frame(frame)
    panel.frame_shown.connect(watch)
    widget.fill(target, **fields)
    with qtbot.waitSignal(panel.finished, timeout=120_000):
        widget.run()
    panel.frame_shown.disconnect(watch)
    return shown


def assert_streamed_in_place(shown, viewer, count: int) -> None:
    """Every frame went into the same ``count`` layers (no new layer per frame), and the images changed."""
    assert len(shown) >= 2 and all(layers == shown[0][1] for _, layers, _ in shown)
    assert len(shown[0][1]) == count and len(viewer.layers) == count
    assert not np.array_equal(shown[0][2][0], shown[-1][2][0])


def test_napari_data_has_one_layer_per_channel_and_goes_back_to_the_model_images():
    from studio.viewer.streaming import images_from_layer, layer_arrays, overlay, to_napari

    rgb = to_napari(torch.rand(2, 3, 8, 10))
    assert rgb.shape == (2, 8, 10, 3) and [a.shape for a in layer_arrays(rgb, True)] == [(2, 8, 10, 3)]
    grey = torch.rand(1, 1, 6, 8, 10)  # one volume: one 3D layer
    assert [a.shape for a in layer_arrays(to_napari(grey), False)] == [(6, 8, 10)]
    channels = torch.rand(2, 4, 6, 8, 10)  # two 4-channel volumes: four layers with the unit first
    arrays = layer_arrays(to_napari(channels), False)
    assert len(arrays) == 4 and np.array_equal(arrays[2], channels[:, 2].numpy())
    volume = studio.InputSpec((6, 8, 10), channels=1)
    assert torch.equal(images_from_layer(grey[0, 0].numpy(), False, (0, 1), volume), grey)
    assert images_from_layer((grey[0, 0].numpy() * 255).astype(np.uint8), False, None, volume).shape == (1, 1, 6, 8, 10)
    four = studio.InputSpec((6, 8, 10), channels=4)
    assert torch.equal(images_from_layer(channels.numpy(), False, (0, 1), four), channels)
    with pytest.raises(studio.StudioError, match=r"takes 4-channel volumes: pick a layer of shape \[\.\.\., 4, D, H, W"):
        images_from_layer(grey[0].numpy(), False, (0, 1), four)
    with pytest.raises(studio.StudioError, match="not an RGB layer"):
        images_from_layer(rgb[0], True, None, volume)
    maps = np.random.default_rng(0).random((2, 6, 8, 10))
    assert overlay(maps[:1], (6, 8, 10)).shape == (6, 8, 10) and overlay(maps, (2, 6, 8, 10)).shape == (2, 6, 8, 10)
    repeated = overlay(maps, (2, 4, 6, 8, 10))  # a layer with the channels on an axis: the map on every channel
    assert repeated.shape == (2, 4, 6, 8, 10) and np.array_equal(repeated[1, 3], maps[1])


@gui
@needs_display
def test_a_one_channel_render_streams_into_one_grey_layer_and_its_map_matches(open_studio_widget, qtbot, mono2d):
    viewer, widget = open_studio_widget(mono2d)
    assert "input 1x24x24" in widget.model_info.value
    shown = render_and_watch(qtbot, widget, "logits:1", steps=6, size=24, every=2, seed=1)
    assert [step for step, *_ in shown] == [2, 4, 6]
    assert_streamed_in_place(shown, viewer, 1)
    layer = widget.render_panel.image_layer
    assert not layer.rgb and layer.colormap.name == "gray" and tuple(layer.contrast_limits) == (0, 1)
    expected = studio.render(mono2d, "logits:1", steps=6, size=24, seed=1).images
    np.testing.assert_array_equal(layer.data, expected[0, 0].numpy())
    widget.attribution_panel.method.value, widget.attribution_panel.explain.value = "saliency", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    np.testing.assert_allclose(heat.data, studio.attribute(mono2d, expected, "logits:1", "saliency")[0].numpy(),
                               rtol=1e-5, atol=1e-7)
    assert heat.name == "logits:1 · saliency · logits:1" and hook_count(mono2d.module) == 0


@gui
@needs_display
def test_five_channels_stream_into_additive_channel_layers_and_are_attributed_together(open_studio_widget, qtbot,
                                                                                         five2d):
    viewer, widget = open_studio_widget(five2d)
    shown = render_and_watch(qtbot, widget, "logits:0", steps=6, size=16, every=2, count=2)
    assert_streamed_in_place(shown, viewer, 5)
    layers = widget.render_panel.image_layers
    assert [layer.name for layer in layers] == [f"logits:0-1 · channel {c}" for c in range(5)]
    assert all(str(layer.blending) == "additive" and not layer.rgb for layer in layers)
    assert len({layer.colormap.name for layer in layers}) == 5  # napari's channel colours
    assert viewer.dims.nsteps[0] == 2 and viewer.dims.axis_labels[0] == "unit"  # the unit on the slider axis
    expected = studio.render(five2d, ["logits:0", "logits:1"], steps=6, size=16).images
    for channel, layer in enumerate(layers):
        assert layer.data.shape == (2, 16, 16)
        np.testing.assert_array_equal(layer.data, expected[:, channel].numpy())
    widget.attribution_panel.method.value, widget.attribution_panel.explain.value = "gradcam", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layers[3]))
    maps = studio.attribute(five2d, expected, ["logits:0", "logits:1"], "gradcam")
    assert heat.data.shape == (2, 16, 16) and heat.name == "logits:0-1 · gradcam · logits:0 ..."
    np.testing.assert_allclose(heat.data, maps.numpy(), rtol=1e-5, atol=1e-7)
    assert len(viewer.layers) == 6 and hook_count(five2d.module) == 0


@gui
@needs_display
def test_a_volume_streams_into_a_3d_layer_while_turning_and_its_map_is_an_aligned_volume(open_studio_widget, qtbot,
                                                                                          mono3d):
    viewer, widget = open_studio_widget(mono3d)
    angles = []

    def turn(frame) -> None:  # the user turns the 3D view while the render streams
        viewer.camera.angles = (0.0, 10.0 * frame.step, 90.0)
        angles.append(viewer.camera.angles)
    shown = render_and_watch(qtbot, widget, "logits:1", on_frame=turn, steps=6, size=12, every=2)
    assert_streamed_in_place(shown, viewer, 1)
    layer = widget.render_panel.image_layer
    assert viewer.dims.ndisplay == 3 and layer.ndim == 3 and layer.data.shape == (12, 12, 12)
    assert len(set(angles)) == 3
    expected = studio.render(mono3d, "logits:1", steps=6, size=12).images
    np.testing.assert_array_equal(layer.data, expected[0, 0].numpy())
    layer.scale, layer.translate = (2, 2, 2), (0, 5, -3)
    widget.attribution_panel.method.value, widget.attribution_panel.explain.value = "gradcam", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    expected_map = studio.attribute(mono3d, expected, "logits:1", "gradcam")[0].numpy()
    assert heat.data.shape == (12, 12, 12) and heat.ndim == 3 and expected_map.max() > 0
    assert heat.colormap.name == "inferno" and str(heat.blending) == "additive"  # black where cold: the data shows
    np.testing.assert_allclose(heat.data, expected_map, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(heat.scale, layer.scale)
    np.testing.assert_array_equal(heat.translate, layer.translate)
    assert hook_count(mono3d.module) == 0


@gui
@needs_display
def test_studio_view_screenshot_of_a_volume_model_is_a_3d_view(tmp_path, mock_app_model):
    # studio view runs in this process (no second interpreter to start); mock_app_model gives its napari window
    # a fresh app, so the plugin's menu entry is registered once per test, as make_napari_viewer does
    import imageio.v3 as iio

    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\nfrom tests.synthetic import sphere_net\n\ndef model():\n"
                       "    torch.manual_seed(0)\n    return sphere_net()\n")
    volume = (np.random.default_rng(0).random((12, 12, 12)) * 255).astype(np.uint8)
    iio.imwrite(tmp_path / "noise.tif", volume)
    out = tmp_path / "figure.png"
    assert main(["view", f"{factory}:model", "--input", "1x12x12x12", "--mean", "0", "--std", "1",
                 "--device", "cpu", "--target", "logits:1", "--steps", "4", "--size", "12",
                 "--image", str(tmp_path / "noise.tif"), "--screenshot", str(out), "--window-size", "1000x700"]) == 0
    shot = iio.imread(out)[..., :3]
    record = json.loads(out.with_suffix(".json").read_text())
    assert shot.shape[1] == 1000 and shot.std() > 20 and record["ndisplay"] == 3
    assert set(record["layers"]) >= {"logits:1", "noise", "noise · gradcam · logits:1", "noise (top class)"}


@gui
@needs_display
def test_a_model_file_that_runs_code_needs_the_trust_box_ticked(open_studio_widget, qtbot, mono2d, tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\nfrom torch import nn\n\ndef make():\n    torch.manual_seed(0)\n"
                       "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    viewer, widget = open_studio_widget(mono2d)
    widget.model_name.value = f"{factory}:make"
    widget.load()
    assert widget.load_worker is None and widget.model is mono2d  # refused before any worker, the old model kept
    assert widget.message.value.startswith(f"Model '{factory}:make' runs code from its file when loaded")
    assert "tick 'run code from this model file'" in widget.message.value
    widget.trust.value = True
    with qtbot.waitSignal(widget.model_loaded, timeout=60_000) as loaded:
        widget.load()
    assert loaded.args[0].name == f"{factory}:make" and widget.model.spec.channels == 3
    widget.model_name.value = f"{factory}:other"
    assert not widget.trust.value  # trust was given to that file, not to the next one named


# ---------------------------------------------------------------- dataset examples beside the render


@pytest.fixture(scope="module")
def stripe_index(mono2d, tmp_path_factory):
    """A dataset-example index of layer 3 of ``mono2d`` over 8 stripe PNGs, the top 4 of each channel (some
    files are not square, so crops at their borders are not either)."""
    import imageio.v3 as iio
    from tests.synthetic import stripes

    from studio.exemplars import build_index

    folder = tmp_path_factory.mktemp("stripes")
    images, _ = stripes(8, size=40, generator=torch.Generator().manual_seed(0))
    for number, image in enumerate(images):
        width = 40 - 8 * (number % 2)
        iio.imwrite(folder / f"stripes{number}.png", (image[0, :, :width].numpy() * 255).round().astype(np.uint8))
    path = tmp_path_factory.mktemp("index") / "stripes.sqlite"
    build_index(mono2d, folder, "3", path, top_k=4, workers=0, progress=False)
    return path


def fitted(picture: torch.Tensor, size: int = 64) -> torch.Tensor:
    """A picture ``[C, h, w]`` as a montage tile should show it: fitted into ``size`` (aspect kept), centred on
    white."""
    height, width = picture.shape[1:]
    fit = (round(height * size / max(height, width)), round(width * size / max(height, width)))
    resized = torch.nn.functional.interpolate(picture[None], size=fit, mode="bilinear", antialias=True)[0].clamp(0, 1)
    tile = torch.ones(picture.shape[0], size, size)
    top, left = (size - fit[0]) // 2, (size - fit[1]) // 2
    tile[:, top:top + fit[0], left:left + fit[1]] = resized
    return tile


def expected_tile(example, size: int = 64) -> torch.Tensor:
    """An example's crop as a montage tile should show it."""
    return fitted(example.crop(), size)


def expected_map_tiles(model, top, unit: str) -> list[np.ndarray]:
    """The unit's map over each of its ``top`` examples as the maps montage should show it (``h x w x 3``): the
    crop's picture with the map blended over it, every map on the colour scale of the top example's score,
    fitted; and a check that the maps show something (they are not the crops' pictures alone)."""
    from studio.display import overlay
    from studio.exemplars.maps import example_maps
    from studio.io import preview

    maps = example_maps(model, top, unit)
    assert maps[0].max() > 0.2 * top[0].score and maps[0].shape == top[0].crop().shape[1:]
    return [fitted(overlay(preview(example.crop()), heat, scale=top[0].score)).permute(1, 2, 0).numpy()
            for example, heat in zip(top, maps)]


def other_stripe_net() -> studio.StudioModel:
    """``mono2d``'s network and input with other weights."""
    torch.manual_seed(1)
    return studio.load_model(stripe_net(), device="cpu", input=MONO_2D)


def test_examples_units_montages_and_index_checks_work_without_a_display(mono2d, stripe_index, tmp_path):
    from studio.display import overlay
    from studio.exemplars import examples
    from studio.exemplars.scores import compare_with_dataset
    from studio.targets import parse_targets
    from studio.exemplars import check_index
    from studio.exemplars.maps import map_picture
    from studio.viewer.streaming import (UnitNumbers, dataset_numbers, example_tile, indexed_units,
                                         load_montages, montage)

    info = check_index(stripe_index, mono2d)
    assert info.layers == {"3": 16} and info.images == 8
    assert indexed_units(info, parse_targets("3:5-7", mono2d)) == ["3:5", "3:6", "3:7"]
    assert indexed_units(info, parse_targets("3:5@2,3", mono2d)) == ["3:5"]  # a neuron shows its channel's examples
    with pytest.raises(studio.StudioError, match="4:1 is not in the index stripes.sqlite"):
        indexed_units(info, parse_targets("4:1", mono2d))
    with pytest.raises(studio.StudioError, match="per channel"):
        indexed_units(info, [studio.Target("3")])  # a whole layer

    montages, maps = load_montages(stripe_index, ["3:5", "3:6"], mono2d, "3:5-6")
    assert montages.name == "examples · 3:5-6" and not montages.rgb and not montages.maps
    assert montages.images.shape == (2, 1, 130, 130)  # 4 tiles of 64 in a 2 x 2 grid, 2 px gaps
    assert maps.name == "maps · 3:5-6" and maps.rgb and maps.maps and maps.images.shape == (2, 130, 130, 3)
    top = examples(stripe_index, "3:6", mono2d)
    crops = [example.crop() for channel in range(16) for example in examples(stripe_index, f"3:{channel}", mono2d)]
    assert len({crop.shape for crop in crops}) > 1  # crops of several shapes, each fitted into a tile
    for place, example in enumerate(top):
        row, column = divmod(place, 2)
        shown = montages.images[1, :, row * 66:row * 66 + 64, column * 66:column * 66 + 64]
        np.testing.assert_allclose(shown, expected_tile(example).numpy(), atol=1e-6)
    for place, tile in enumerate(expected_map_tiles(mono2d, top, "3:6")):  # in the same places, on one scale
        row, column = divmod(place, 2)
        np.testing.assert_allclose(maps.images[1, row * 66:row * 66 + 64, column * 66:column * 66 + 64], tile,
                                   atol=1e-6)
    sheet = montage([top[0].crop()], 3, 1)  # fewer crops than places: blank after the last
    assert sheet.shape == (1, 130, 130) and (sheet[:, 66:, :64] == 1).all()

    volume = torch.rand(1, 4, 6, 10)  # a volume's crop: its maximum along depth, fitted
    tile = example_tile(volume)
    assert tile.shape == (1, 64, 64) and (tile[:, :13] == 1).all() and (tile[:, 51:] == 1).all()
    np.testing.assert_allclose(tile[:, 13:51], torch.nn.functional.interpolate(
        volume.amax(1)[None], size=(38, 64), mode="bilinear", antialias=True)[0].clamp(0, 1), atol=1e-6)
    heat = torch.rand(4, 6, 10)  # and the map over it: its maximum along depth over the crop's projection
    np.testing.assert_allclose(map_picture(volume, heat, 0.5),
                               overlay(volume.amax(1).expand(3, -1, -1), heat.amax(0), scale=0.5), atol=1e-6)

    target = parse_targets("3:5", mono2d)[0]
    numbers = dataset_numbers(stripe_index, [target], [0.7], mono2d)
    assert numbers == [UnitNumbers("3:5", compare_with_dataset(stripe_index, target, 0.7, mono2d).describe())]
    flagged = UnitNumbers("3:5", "2.00x dataset max (of 8 images)", "path -0.100 (UNNATURAL PATH; ...)", True)
    assert flagged.text() == "3:5: 2.00x dataset max (of 8 images) · path -0.100 (UNNATURAL PATH; ...)"
    assert '<span style="color: #ff6b6b;">path -0.100' in flagged.html()
    assert "checking the path" in numbers[0].text()

    not_an_index = tmp_path / "notes.sqlite"
    not_an_index.write_text("not a database")
    for path, sentence in [(tmp_path / "missing.sqlite", "No dataset-example index at"),
                           (not_an_index, "is not a dataset-example index")]:
        with pytest.raises(studio.StudioError, match=sentence):
            check_index(path, mono2d)
    with pytest.raises(studio.StudioError, match="was built for Sequential with other weights"):
        check_index(stripe_index, other_stripe_net())


def wait_for_examples(qtbot, widget) -> None:
    """Wait until the examples panel's jobs (crops, path checks) have ended."""
    qtbot.waitUntil(lambda: not widget.examples_panel.busy, timeout=120_000)


def world_box(layer) -> np.ndarray:
    """A layer's ``[[top, left], [bottom, right]]`` pixel edges on the canvas."""
    half = np.asarray(layer.scale[-2:]) / 2
    return np.asarray(layer.extent.world)[:, -2:] + np.array([-half, half])


def assert_just_below(layer, above) -> None:
    """``layer`` lies just below ``above`` on the canvas: the same left and right edges and height, a small gap."""
    (top, left), (bottom, right) = world_box(layer)
    (above_top, above_left), (above_bottom, above_right) = world_box(above)
    assert (left, right) == (pytest.approx(above_left), pytest.approx(above_right))
    assert bottom - top == pytest.approx(above_bottom - above_top)
    assert above_bottom < top < above_bottom + 0.1 * (above_bottom - above_top)


@gui
@needs_display
def test_examples_appear_beside_the_render_with_the_crops_pixels_and_its_dataset_numbers(open_studio_widget, qtbot,
                                                                                        mono2d, stripe_index):
    from studio.exemplars import examples
    from studio.exemplars.scores import compare_with_dataset, path_check
    from studio.viewer.layers import place_right_of
    from studio.viewer.streaming import EXAMPLES_KEY

    viewer, widget = open_studio_widget(mono2d)
    widget.examples_panel.set_index(str(stripe_index))
    assert widget.message.value == "Dataset examples from stripes.sqlite: 8 images, 3 (16 channels)."
    render_and_watch(qtbot, widget, "3:5", steps=6, size=24, every=2)
    wait_for_examples(qtbot, widget)
    panel, render = widget.render_panel, widget.render_panel.image_layer
    shown, maps = viewer.layers["examples · 3:5"], viewer.layers["maps · 3:5"]
    assert len(viewer.layers) == 3 and shown.metadata[EXAMPLES_KEY] and not shown.rgb
    assert shown.data.shape == (130, 130) and shown.colormap.name == "gray"
    (top, left), (bottom, right) = world_box(render)
    (shown_top, shown_left), (shown_bottom, _) = world_box(shown)
    assert shown_left > right and shown_top == pytest.approx(top)  # to its right, level with it
    assert shown_bottom == pytest.approx(bottom)
    top_examples = examples(stripe_index, "3:5", mono2d)
    np.testing.assert_allclose(shown.data[:64, :64], expected_tile(top_examples[0])[0].numpy(), atol=1e-6)

    assert maps.metadata[EXAMPLES_KEY] and maps.rgb and maps.data.shape == (130, 130, 3)  # the maps: same tiles
    assert_just_below(maps, shown)
    np.testing.assert_allclose(maps.data[:64, :64], expected_map_tiles(mono2d, top_examples, "3:5")[0], atol=1e-6)
    render.scale = (3, 3)  # the render laid out anew and the examples placed beside it (as studio view's figure)
    place_right_of([shown], [render], 2, make_room=True)
    assert np.diff(world_box(shown)[:, 0])[0] == pytest.approx(3 * (bottom - top))  # the examples moved
    assert_just_below(maps, shown)  # the maps follow the examples

    result = panel.last_frame.result
    multiple = compare_with_dataset(stripe_index, result.targets[0], float(result.clean_values[0]), mono2d)
    path = path_check(mono2d, stripe_index, "3:5", result.images[0])
    status = panel.status.value
    assert f"3:5: {multiple.describe()} · " in status and path.describe() in status
    assert ("color: #ff6b6b" in status) == path.flagged
    assert [entry[1] for entry in widget.attribution_panel.source._default_choices()] == [render]

    render_and_watch(qtbot, widget, "3:5", steps=2, size=24, every=1, count=3)  # a stack: one montage per unit
    wait_for_examples(qtbot, widget)
    stack, montages = widget.render_panel.image_layer, viewer.layers["examples · 3:5-7"]
    stack_maps = viewer.layers["maps · 3:5-7"]
    assert montages.data.shape == (3, 130, 130) and viewer.dims.nsteps[0] == 3  # on the render's slider
    assert stack_maps.data.shape == (3, 130, 130, 3)
    second = examples(stripe_index, "3:6", mono2d)
    np.testing.assert_allclose(montages.data[1, :64, :64], expected_tile(second[0])[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(stack_maps.data[1, :64, :64], expected_map_tiles(mono2d, second, "3:6")[0], atol=1e-6)
    assert world_box(stack)[1, 1] < world_box(montages)[0, 1] < world_box(montages)[1, 1] < left
    assert_just_below(stack_maps, montages)
    assert widget.render_panel.status.value.count("x dataset max") == 3 and hook_count(mono2d.module) == 0


@gui
@needs_display
def test_a_bad_examples_index_is_one_sentence_and_units_it_lacks_say_so_once(open_studio_widget, qtbot, mono2d,
                                                                            stripe_index, tmp_path):
    not_an_index = tmp_path / "notes.sqlite"
    not_an_index.write_text("not a database")
    viewer, widget = open_studio_widget(other_stripe_net())
    for path, start in [(tmp_path / "missing.sqlite", "No dataset-example index at"),
                        (not_an_index, f"{str(not_an_index)!r} is not a dataset-example index"),
                        (stripe_index, f"Index {str(stripe_index)!r} was built for Sequential with other weights")]:
        widget.examples_panel.set_index(str(path))
        message = widget.message.value
        assert message.startswith(start) and message.endswith(".") and "\n" not in message
        assert len(viewer.layers) == 0 and not widget.examples_panel.busy
    render_and_watch(qtbot, widget, "3:5", steps=2, size=24, every=1)  # the render goes on, without examples
    assert [layer.name for layer in viewer.layers] == ["3:5"] and "dataset max" not in widget.render_panel.status.value

    viewer, widget = open_studio_widget(mono2d)
    widget.examples_panel.set_index(str(stripe_index))
    render_and_watch(qtbot, widget, "logits:1", steps=2, size=24, every=1)
    wait_for_examples(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["logits:1"]
    assert widget.render_panel.status.value.count("not in the index") == 1


@gui
@needs_display
def test_studio_view_screenshot_shows_the_examples_beside_the_render(tmp_path, stripe_index, mock_app_model):
    import imageio.v3 as iio

    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\nfrom tests.synthetic import stripe_net\n\ndef model():\n"
                       "    torch.manual_seed(0)\n    return stripe_net()\n")
    out = tmp_path / "figure.png"
    assert main(["view", f"{factory}:model", "--input", "1x24x24", "--mean", "0", "--std", "1", "--device", "cpu",
                 "--target", "3:5", "--steps", "4", "--size", "24", "--examples", str(stripe_index),
                 "--screenshot", str(out), "--window-size", "1000x700"]) == 0
    shot = iio.imread(out)[..., :3].astype(np.float32)
    assert shot.shape[:2] == (700, 1000)  # the dock scrolls: the window keeps the size asked for
    record = json.loads(out.with_suffix(".json").read_text())
    render, examples = record["layers"]["3:5"]["box"], record["layers"]["examples · 3:5"]["box"]
    maps = record["layers"]["maps · 3:5"]["box"]
    assert render[2] <= examples[0] and abs(render[1] - examples[1]) <= 2  # side by side, tops level
    assert examples[3] <= maps[1] and abs(examples[0] - maps[0]) <= 2 and abs(examples[2] - maps[2]) <= 2  # below
    background = shot[2, render[0]]  # the canvas above the images
    for x0, y0, x1, y1 in (render, examples, maps):
        region = shot[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
        assert (np.abs(region - background).max(-1) > 30).mean() > 0.3 and region.std() > 10
    assert len(record["dataset"]) == 1 and "x dataset max" in record["dataset"][0] and "path" in record["dataset"][0]


@gui
@needs_display
def test_building_blocks_rank_the_channels_and_a_picked_one_shows_its_map_render_and_examples(
        open_studio_widget, qtbot, mono2d, stripe_index, tmp_path):
    from studio.building_blocks import signed_units
    from tests.synthetic import stripes

    viewer, widget = open_studio_widget(mono2d)
    widget.examples_panel.set_index(str(stripe_index))
    image = stripes(1, size=40, generator=torch.Generator().manual_seed(3))[0][0]
    photo = viewer.add_image(image[0].numpy(), name="stripes", colormap="gray")
    widget.render_panel.layer.value = "3"
    widget.fill(steps=4, size=24)
    panel, renders = widget.blocks_panel, widget.render_panel
    panel.class_name.value, panel.top.value = "1", 3
    with qtbot.waitSignal(renders.finished, timeout=120_000):  # ranked, then the first channel rendered
        panel.start(photo)
    wait_for_examples(qtbot, widget)  # its path check runs the model in a worker: the model is ours only after
    expected = studio.blocks(mono2d, image, "3", "1", top=3, render_channels=False)
    assert [choice[1] for choice in panel.channel._default_choices()] == [0, 1, 2]
    assert panel.channel.choices and panel.result.channels == expected.channels
    assert "zeroing these 3" in panel.summary.value and "3 random channels" in panel.summary.value
    for rank in (0, 1):
        if rank:
            with qtbot.waitSignal(renders.finished, timeout=120_000):
                panel.channel.value = rank  # picking a channel: its map and its render
            wait_for_examples(qtbot, widget)
        unit, direction = expected.units[rank], expected.directions[rank]
        heat = viewer.layers[f"stripes · building block {unit}"]
        np.testing.assert_allclose(heat.data, expected.maps[rank].numpy(), atol=1e-5)
        assert heat.data.shape == photo.data.shape
        render = renders.image_layer
        assert render.name == (unit if direction > 0 else f"{unit} (lowered)")
        engine = studio.render(mono2d, signed_units("3", [expected.channels[rank]], [direction]), steps=4, size=24)
        np.testing.assert_array_equal(render.data, engine.images[0, 0].numpy())
        assert f"examples · {unit}" in viewer.layers  # the examples panel follows the render
    viewer.window.show()
    qtbot.wait(200)
    picture = viewer.screenshot(canvas_only=True, flash=False)
    studio.write_image(tmp_path / "blocks.png", picture[..., :3])
    assert picture[..., :3].std() > 10
    assert hook_count(mono2d.module) == 0


@gui
@needs_display
def test_accentuation_and_caricature_in_the_viewer_are_the_python_renders(open_studio_widget, qtbot, mono2d):
    from tests.synthetic import stripes

    viewer, widget = open_studio_widget(mono2d)
    image = stripes(1, size=32, generator=torch.Generator().manual_seed(1))[0][0]
    photo = viewer.add_image(image[0].numpy(), name="stripes", colormap="gray")
    widget.attribution_panel.source.value = photo
    widget.fill("3:5", steps=8, size=24)
    widget.accent_weight.value = 5.0
    with qtbot.waitSignal(widget.render_panel.finished, timeout=120_000):
        widget.accentuate()
    expected = studio.accentuate(mono2d, image, "3:5", weight=5.0, steps=8, size=24)
    render = widget.render_panel.image_layer
    assert render.name == "3:5 · accentuated in stripes"
    np.testing.assert_array_equal(render.data, expected.result.images[0, 0].numpy())
    assert f"x{expected.gain:.3g}" in widget.message.value and f"{expected.pixel_distance:.3g} in pixels" \
        in widget.message.value
    widget.fill(count=2)
    widget.accentuate()
    assert "one unit at a time" in widget.message.value and widget.render_panel.worker is None

    widget.fill(count=1)  # the caricature: what layer 3 (the render panel's) sees in the photo
    with qtbot.waitSignal(widget.render_panel.finished, timeout=120_000):
        widget.caricature()
    drawn = studio.render(mono2d, studio.objectives.caricature(image, "3"), steps=8, size=24)
    assert widget.render_panel.image_layer.name == "caricature of stripes · 3"
    np.testing.assert_array_equal(widget.render_panel.image_layer.data, drawn.images[0, 0].numpy())
    assert hook_count(mono2d.module) == 0


# ---------------------------------------------------------------- concept dictionaries among the layers


PATTERN_LAYERS = ["detect", "gate", "mix", "head.0", "head.1", "head.2", "head", "logits"]


def pattern_model(channels: int = 24) -> studio.StudioModel:
    """The planted-concept network (:class:`PatternNet`) on 3x32x32 images."""
    return studio.load_model(PatternNet(channels=channels), device="cpu",
                             input=studio.models.parse_input("3x32x32", "0.5", "0.25"))


@pytest.fixture(scope="module")
def pattern() -> studio.StudioModel:
    return pattern_model()


@pytest.fixture(scope="module")
def toy_concepts(pattern, tmp_path_factory):
    """A 16-concept top-2 dictionary of ``pattern``'s layer ``mix``, learned from 40 pattern images (in the
    ``images`` folder beside it)."""
    folder = tmp_path_factory.mktemp("concepts")
    (folder / "images").mkdir()
    for number, image in enumerate(pattern_images(pattern.module, 40)):
        studio.io.write_image(folder / "images" / f"{number}.png", image)
    return studio.learn_concepts(pattern, folder / "images", "mix", folder / "toy.concepts", concepts=16, top_k=2,
                                 workers=0, progress=False, epochs=20).path


@pytest.fixture(scope="module")
def pattern_index(pattern, toy_concepts):
    """A dataset-example index of ``toy_concepts`` and of ``pattern``'s logits over its images, the top 4 of each."""
    from studio.exemplars import build_index

    index = toy_concepts.parent / "concepts.sqlite"
    build_index(pattern, toy_concepts.parent / "images", [str(toy_concepts), "logits"], index, top_k=4, workers=0,
                progress=False)
    return index


@pytest.fixture
def pattern_studio(open_studio_widget, pattern, toy_concepts):
    """The studio with ``pattern`` loaded: ``(viewer, widget, the dictionary's absolute path)``."""
    return (*open_studio_widget(pattern), str(toy_concepts))


def layer_labels(panel) -> dict[str, str]:
    """The render panel's layer choices: label by value, in the order offered."""
    return {value: label for label, value in panel.layer._default_choices()}


def test_render_requests_and_examples_read_a_dictionary_from_any_folder(pattern, toy_concepts, pattern_index,
                                                                       tmp_path, monkeypatch):
    from studio.exemplars import check_index
    from studio.viewer.streaming import RenderRequest, full_name, indexed_units, load_montages, render_label

    index = pattern_index
    monkeypatch.chdir(tmp_path)  # the dictionary is not in the working folder: it is found by its absolute path
    stack = RenderRequest(str(toy_concepts), "neuron", 3, position=(1, 2), count=3).targets(pattern)
    assert [t.name for t in stack] == ["toy.concepts:3@1,2", "toy.concepts:4@1,2", "toy.concepts:5@1,2"]
    assert all(t.concepts == str(toy_concepts) for t in stack) and render_label(stack) == "toy.concepts:3-5@1,2"
    assert [studio.parse_target(full_name(t), pattern) for t in stack] == stack
    units = indexed_units(check_index(index, pattern), stack)
    assert units == [f"{toy_concepts}:{concept}" for concept in (3, 4, 5)]
    montages, maps = load_montages(index, units, pattern, "toy.concepts:3-5")
    assert montages.images.shape == maps.images.shape == (3, 130, 130, 3)
    top = studio.examples(index, units[1], pattern)
    np.testing.assert_allclose(montages.images[1, :64, :64], expected_tile(top[0]).permute(1, 2, 0).numpy(), atol=1e-6)
    np.testing.assert_allclose(maps.images[1, :64, :64], expected_map_tiles(pattern, top, units[1])[0], atol=1e-6)
    assert [m.name for m in load_montages(index, ["logits:1"], pattern, "1")] == ["examples · 1"]  # no positions


@gui
@needs_display
def test_a_loaded_dictionary_is_a_layer_of_concepts_that_renders_and_attributes(pattern_studio, qtbot, pattern):
    viewer, widget, path = pattern_studio
    panel = widget.render_panel
    panel.concepts.value = path  # as the file dialog sets it
    labels = layer_labels(panel)
    assert list(labels)[-1] == path and labels[path] == "toy.concepts   map 4x4, 16 concepts of mix"
    assert list(labels)[:-1] == PATTERN_LAYERS
    assert panel.layer.value == path and panel.dictionaries == [path] and panel.concepts.line_edit.value == ""
    dictionary = studio.load_dictionary(path)
    assert widget.message.value == f"Concepts from toy.concepts: {dictionary.describe()}."
    assert panel.channel.max == 15 and not panel.channel.native.isHidden() and panel.class_name.native.isHidden()
    panel.kind.value = "neuron"
    assert (panel.row.max, panel.column.max) == (3, 3)
    panel.kind.value, panel.layer.value = "channel", "mix"
    assert panel.channel.max == 23
    panel.layer.value = path
    assert panel.channel.max == 15

    panel.channel.value = 3
    shown = render_and_watch(qtbot, widget, None, steps=4, size=32, every=2, seed=1)
    layer = panel.image_layer
    assert [step for step, *_ in shown] == [2, 4] and layer.name == "toy.concepts:3"
    np.testing.assert_array_equal(layer.data, expected_image(pattern, f"{path}:3", steps=4, size=32, seed=1))
    assert "4/4" in panel.status.value and panel.status.value.endswith(f" · {dictionary.line(3)}")
    assert layer.metadata["studio_targets"] == [f"{path}:3"]

    explainer = widget.attribution_panel
    explainer.method.value, explainer.explain.value = "gradcam", "visualised unit"
    heat = attribute_and_wait(qtbot, widget, lambda: widget.attribute(layer))
    images = torch.from_numpy(layer.data).permute(2, 0, 1)[None]
    expected = studio.attribute(pattern, images, target=f"{path}:3", method="gradcam")[0]
    assert heat.name == "toy.concepts:3 · gradcam · toy.concepts:3" and expected.abs().max() > 0
    np.testing.assert_allclose(heat.data, expected.numpy(), rtol=1e-5, atol=1e-7)
    assert hook_count(pattern.module) == 0


@gui
@needs_display
def test_fill_with_a_concept_target_lists_and_selects_its_dictionary(pattern_studio, pattern, monkeypatch):
    _, widget, path = pattern_studio
    panel = widget.render_panel
    assert path not in layer_labels(panel)
    monkeypatch.chdir(os.path.dirname(path))
    widget.fill("toy.concepts:5@1,2")  # as written beside the file: listed by its absolute path
    assert panel.dictionaries == [path] and list(layer_labels(panel))[-1] == path and panel.layer.value == path
    assert (panel.kind.value, panel.channel.value, panel.row.value, panel.column.value) == ("neuron", 5, 1, 2)
    assert [t.name for t in panel.request().targets(pattern)] == ["toy.concepts:5@1,2"]
    widget.fill(f"{path}:7")  # the same file again: listed once
    assert panel.dictionaries == [path] and panel.layer.value == path and panel.channel.value == 7
    widget.fill("mix:2")
    assert panel.layer.value == "mix" and panel.dictionaries == [path]


@gui
@needs_display
def test_a_dictionary_of_another_model_is_refused_and_a_model_change_drops_it(studio_widget, open_studio_widget,
                                                                              pattern, toy_concepts):
    viewer, widget = studio_widget  # EfficientNet-Lite0 has no layer mix
    panel, path = widget.render_panel, str(toy_concepts)
    panel.concepts.value = path
    assert widget.message.value == ("Dictionary 'toy.concepts' reads layer 'mix' of PatternNet, which "
                                    "efficientnet_lite0 does not have; load the model it was learned on.")
    assert path not in layer_labels(panel) and panel.dictionaries == [] and panel.layer.value == "blocks.4"
    assert panel.concepts.line_edit.value == ""  # ready for the next pick, the same file too
    not_a_dictionary = toy_concepts.parent / "notes.concepts"
    not_a_dictionary.write_text("not a dictionary")
    panel.concepts.value = str(not_a_dictionary)
    assert "is not a concept dictionary" in widget.message.value and panel.dictionaries == []

    viewer, widget = open_studio_widget(pattern)
    panel = widget.render_panel
    panel.concepts.value = path
    assert panel.layer.value == path
    widget.set_model(pattern_model(channels=12))  # a mix layer of 12 channels, not 24
    assert widget.message.value == ("Dropped toy.concepts from the layers: Dictionary 'toy.concepts' reads 24 "
                                    "channels of 'mix', but PatternNet has 12 there; load the model it was "
                                    "learned on (PatternNet).")
    assert list(layer_labels(panel)) == PATTERN_LAYERS and panel.dictionaries == []  # in order, without it
    assert layer_labels(panel)["mix"].endswith("12 channels") and panel.layer.value in PATTERN_LAYERS
    panel.concepts.value = path
    assert "PatternNet has 12 there" in widget.message.value and panel.dictionaries == []
    widget.set_model(pattern)
    assert list(layer_labels(panel)) == PATTERN_LAYERS  # dropped, not hidden
    panel.concepts.value = path  # picked again, it fits again
    assert list(layer_labels(panel)) == [*PATTERN_LAYERS, path] and panel.layer.value == path


@gui
@needs_display
def test_a_concept_shows_its_maps_below_its_examples_and_logits_without_positions_show_none(pattern_studio, qtbot,
                                                                                          pattern, pattern_index):
    viewer, widget, path = pattern_studio
    errors = []
    widget.examples_panel.message.connect(lambda text, error: errors.append(text) if error else None)
    widget.examples_panel.set_index(str(pattern_index))
    render_and_watch(qtbot, widget, f"{path}:4", steps=2, size=32, every=1)
    wait_for_examples(qtbot, widget)
    maps, shown = viewer.layers["maps · toy.concepts:4"], viewer.layers["examples · toy.concepts:4"]
    assert_just_below(maps, shown)
    top = studio.examples(pattern_index, f"{path}:4", pattern)
    np.testing.assert_allclose(maps.data[:64, :64], expected_map_tiles(pattern, top, f"{path}:4")[0], atol=1e-6)

    render_and_watch(qtbot, widget, "logits:1", steps=2, size=32, every=1)
    wait_for_examples(qtbot, widget)
    assert {layer.name for layer in viewer.layers} == {"toy.concepts:4", "examples · toy.concepts:4",
                                                       "maps · toy.concepts:4", "logits:1", "examples · logits:1"}
    assert widget.examples_panel.map_layers == [] and errors == [] and hook_count(pattern.module) == 0
