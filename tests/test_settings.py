"""Render settings have one source of truth: every setting of ``RenderSettings`` is an option of the CLI, a
key of the gallery spec, a field of the viewer (tests/test_viewer.py) and an entry of the provenance record,
with the same default, choices and limits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import studio
from studio import gallery
from studio.cli import build_parser
from studio.param import PARAM_KINDS
from studio.settings import CANVAS_ONLY, PRECISIONS, RenderSettings, setting_fields
from studio.transforms import TRANSFORM_PRESETS

#: A value other than the default for every setting, each cheap to render with.
CHANGED = {"param": "maco", "steps": 2, "size": 24, "lr": 0.02, "transforms": "none", "decorrelate": False,
           "decay_power": 1.5, "precision": "bfloat16", "canvas": 48, "crops": 2, "crop_size": 0.5}


def test_fields_defaults_and_choices():
    assert [spec.name for spec in setting_fields()] == list(CHANGED)
    by_name = {spec.name: spec for spec in setting_fields()}
    assert by_name["param"].choices == PARAM_KINDS and by_name["transforms"].choices == TRANSFORM_PRESETS
    assert by_name["precision"].choices == PRECISIONS
    # the crop settings change nothing without a canvas, so they are recorded (and keyed) only with one
    assert RenderSettings().as_dict() == {spec.name: spec.default for spec in setting_fields()
                                          if spec.name not in CANVAS_ONLY}
    assert RenderSettings(canvas=64).as_dict() == {spec.name: spec.default for spec in setting_fields()} | {"canvas": 64}


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "steps must be at least 1, not 0."),
    ({"size": 100_000}, "size must be at most 2048, not 100000."),
    ({"lr": 0}, "lr must be positive, not 0."),
    ({"param": "fourrier"}, "param = 'fourrier' is not one of fourier, pixel, maco, cppn; did you mean 'fourier'?"),
    ({"steps": 2.5}, "steps must be a whole number, not 2.5."),
    ({"decorrelate": 1}, "decorrelate must be true or false, not 1."),
    ({"stpes": 3}, "Unknown render setting 'stpes'; did you mean 'steps'?"),
])
def test_bad_values_are_one_sentence(changes, message):
    with pytest.raises(studio.StudioError) as error:
        RenderSettings().updated(changes)
    assert str(error.value) == message


def test_every_setting_is_a_cli_option_with_its_help_and_choices():
    render = build_parser()._subparsers._group_actions[0].choices["render"]
    options = {action.dest: action for action in render._actions}
    for spec in setting_fields():
        action = options[spec.name]
        assert f"(default: {spec.default})" in action.help and action.help.startswith(spec.help)
        assert tuple(action.choices or ()) == (spec.choices or ())
    args = render.parse_args(["blocks.4:1", "--param", "maco", "--steps", "2", "--size", "24", "--lr", "0.02",
                              "--transforms", "none", "--no-decorrelate", "--decay-power", "1.5",
                              "--precision", "bfloat16", "--canvas", "48", "--crops", "2", "--crop-size", "0.5"])
    from studio.commands.common import render_settings_from_args

    assert render_settings_from_args(args) == RenderSettings(**CHANGED)


def test_provenance_records_what_ran(lite0):
    result = studio.render(lite0, "blocks.2:3", RenderSettings(**CHANGED), seed=4)
    assert {name: result.settings[name] for name in CHANGED} == CHANGED  # 'maco', not a class name
    assert result.settings["targets"] == ["blocks.2:3"] and result.settings["seeds"] == [4]
    custom = studio.param.image(24, kind="pixel")
    record = studio.render(lite0, "blocks.2:3", steps=1, size=24, param=custom).settings
    assert record["param"] == "custom PixelLatent"


def test_every_setting_is_a_gallery_key_and_reaches_the_sidecar(tmp_path, lite0):
    values = "\n".join(f"{name} = {json.dumps(value)}" for name, value in CHANGED.items())
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[settings]\n{values}\n\n[[models]]\nname = "lite0"\nmodel = "efficientnet_lite0"\n'
                    'targets = ["blocks.2:3"]\n')
    gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)
    sidecar = json.loads((tmp_path / "out/lite0/blocks.2/c03_s0.json").read_text())
    assert sidecar["settings"] == CHANGED
    assert {name: sidecar["engine"][name] for name in CHANGED} == CHANGED
    spec.write_text(spec.read_text().replace("decay_power = 1.5", "decay_power = -1"))
    with pytest.raises(studio.StudioError, match=r"spec.toml line 8, \[settings\]: decay_power must be at least 0, not -1[.]"):
        gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)


def test_custom_transform_ranges_and_init_are_recorded(lite0):
    from studio.transforms import TransformSettings

    ranges = TransformSettings(pad=4, jitter=(2,), scale=(1.0, 1.0), degrees=0.0)
    init = torch.full((3, 24, 24), 0.5)
    record = studio.render(lite0, "blocks.2:3", steps=1, size=24, transforms=ranges, init=init).settings
    assert record["transforms"] == "custom" and record["transform_ranges"]["pad"] == 4
    assert len(record["init_sha256"]) == 64
    assert RenderSettings(steps=np.int64(3)).steps == 3 and type(RenderSettings(steps=np.int64(3)).steps) is int


def test_a_grad_cam_layer_with_another_method_fails_before_rendering(tmp_path, lite0):
    spec = tmp_path / "spec.toml"
    (tmp_path / "p.png").write_bytes(b"")
    spec.write_text('[attribution]\nmethod = "saliency"\nlayer = "blocks.5"\n\n[[models]]\nmodel = "efficientnet_lite0"\n'
                    'targets = ["blocks.2:3"]\n')
    with pytest.raises(studio.StudioError, match=r"line 3, \[attribution\]: layer applies to Grad-CAM only"):
        gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)
    assert not (tmp_path / "out").exists()
