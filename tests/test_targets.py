"""Target syntax, its clear errors, and hooks that never outlive a forward pass."""

import pytest
import torch
from torch import nn

import studio
from studio.hooks import capture, forward_to, frozen
from studio.targets import Target, parse_target
from tests.conftest import hook_count


@pytest.mark.parametrize("text, expected", [
    ("blocks.4", Target("blocks.4", None, None, "blocks.4")),
    ("blocks.4:12", Target("blocks.4", 12, None, "blocks.4:12")),
    ("blocks.4:12@7,3", Target("blocks.4", 12, (7, 3), "blocks.4:12@7,3")),
    ("logits:285", Target("", 285, None, "logits:285")),
    ('logits:"Egyptian cat"', Target("", 285, None, 'logits:"Egyptian cat"')),
    ("logits:Egyptian cat", Target("", 285, None, "logits:Egyptian cat")),
])
def test_target_syntax(lite0, text, expected):
    assert parse_target(text, lite0) == expected


@pytest.mark.parametrize("text, message", [
    ("blocks.44:1", "Unknown layer 'blocks.44'.*did you mean 'blocks.4'"),
    ("blocks.4:112", "valid channels are 0 to 111"),
    ("blocks.4:3@14,0", "outside the 14x14 map.*rows 0 to 13"),
    ('logits:"Egyptian kat"', "Unknown class 'Egyptian kat'.*did you mean 'Egyptian cat'"),
    ("logits:1000", "valid classes are 0 to 999"),
    ("logits:3@1,1", "no spatial map"),
    ("blocks.4:twelve", "not a number"),
    ("blocks.4@1,1", "needs a channel"),
    ("", "Cannot read target"),
])
def test_bad_targets_are_one_clear_sentence(lite0, text, message):
    with pytest.raises(studio.StudioError, match=message) as error:
        parse_target(text, lite0)
    assert "\n" not in str(error.value)


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.third = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1)
        self.calls = []

    def forward(self, x):
        self.calls.append("forward")
        x = self.first(x)
        x = self.second(x)
        self.calls.append("after second")
        return self.third(x)


def test_forward_stops_after_deepest_needed_layer_and_hooks_go():
    model = Recorder()
    acts = forward_to(model, torch.rand(1, 3, 5, 5), ["first", "second"])
    assert set(acts) == {"first", "second"} and model.calls == ["forward"]
    assert hook_count(model) == 0
    with capture(model, ["first"], stop_early=False) as acts:
        model(torch.rand(1, 3, 5, 5))
    assert "after second" in model.calls and hook_count(model) == 0


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_hooks_removed_when_forward_fails(error):
    model = Recorder()

    def explode(*_):
        raise error
    model.second.register_forward_pre_hook(explode)
    with pytest.raises(type(error)):
        forward_to(model, torch.rand(1, 3, 5, 5), ["third"])
    assert hook_count(model) == 1  # only the test's own pre-hook remains


def test_frozen_restores_flags_on_error():
    model = Recorder().train()
    model.first.weight.requires_grad_(False)
    with pytest.raises(ValueError), frozen(model):
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        raise ValueError
    assert model.training and not model.first.weight.requires_grad and model.second.weight.requires_grad


# ------------------------------------------------------------------------------- the grammar, in one place

@pytest.mark.parametrize("expression, names", [
    ("blocks.4:3-5", ["blocks.4:3", "blocks.4:4", "blocks.4:5"]),
    ("blocks.4:0, 7, 9-10", ["blocks.4:0", "blocks.4:7", "blocks.4:9", "blocks.4:10"]),
    ("blocks.4:2-3@1,2", ["blocks.4:2@1,2", "blocks.4:3@1,2"]),
    ('logits:"Egyptian cat","tabby, tabby cat"', ["logits:285", "logits:281"]),
    ("Egyptian cat", ["logits:285"]),
    ("285", ["logits:285"]),
    ("blocks.4", ["blocks.4"]),
])
def test_expressions_expand_to_canonical_units(lite0, expression, names):
    assert [t.name for t in studio.parse_targets(expression, lite0)] == names


def test_star_names_every_channel_and_ranges_are_checked_at_both_ends(lite0):
    assert [t.channel for t in studio.parse_targets("blocks.4:*", lite0)] == list(range(112))
    with pytest.raises(studio.StudioError, match="valid channels are 0 to 111"):
        studio.parse_targets("blocks.4:100-200", lite0)
    with pytest.raises(studio.StudioError, match="runs backwards; write 3-9"):
        studio.parse_targets("blocks.4:9-3", lite0)


def test_labels_file_names_and_values_come_from_the_target(lite0):
    cat = parse_target('logits:"Egyptian cat"', lite0)
    assert (cat.text, cat.name, cat.label, cat.description, cat.short) == (
        'logits:"Egyptian cat"', "logits:285", "Egyptian cat", 'logits:285 "Egyptian cat"', "Egyptian cat")
    assert cat == parse_target(285, lite0) == parse_target("logits:285", lite0)  # text is not identity
    assert cat.file_stem(1000) == "c285" and cat.unit_label == "285 Egyptian cat"
    neuron = parse_target("blocks.4:7@3,11", lite0)
    assert neuron.file_stem(112) == "c007_y3_x11" and neuron.unit_label == "7@3,11"
    assert parse_target("blocks.4", lite0).file_stem(112) == "layer"
    with pytest.raises(studio.StudioError, match="Unknown layer 'blocks4'.*did you mean 'blocks.4'"):
        parse_target("blocks4", lite0)  # a near-miss layer name is not read as a class label


def test_unit_values_read_channels_neurons_classes_and_volumes():
    """The one reader of a unit's value: channel mean, neuron, vector entry, voxel, whole layer (mean square)."""
    g = torch.Generator().manual_seed(0)
    maps, vectors, volumes = (torch.randn(3, 4, 5, 6, generator=g), torch.randn(3, 10, generator=g),
                              torch.randn(3, 2, 4, 5, 6, generator=g))
    torch.testing.assert_close(Target("m", 2)(maps), maps[:, 2].mean((1, 2)))
    torch.testing.assert_close(Target("m", 2, (4, 1))(maps), maps[:, 2, 4, 1])
    torch.testing.assert_close(Target("", 7)(vectors), vectors[:, 7])
    torch.testing.assert_close(Target("v", 1, (3, 0, 5))(volumes), volumes[:, 1, 3, 0, 5])
    torch.testing.assert_close(Target("v", 1)(volumes), volumes[:, 1].mean((1, 2, 3)))
    torch.testing.assert_close(Target("m")(maps), maps.pow(2).mean((1, 2, 3)))
    from studio.targets import unit_values

    mixed = unit_values(volumes, [0, 1], [(1, 2, 3), None], images=[2, 0])
    torch.testing.assert_close(mixed, torch.stack([volumes[0, 1].mean(), torch.tensor(0.0), volumes[2, 0, 1, 2, 3]]))


def test_volume_positions_are_validated_per_axis():
    """A 3D layer takes @z,y,x; the wrong number of coordinates or one out of range is one sentence."""
    model = studio.StudioModel(nn.Identity(), studio.InputSpec((4, 6, 6), channels=1), "volumes")
    model.__dict__["output_shapes"] = {"conv3d": (1, 8, 4, 6, 6), "": (1, 2)}  # as a Conv3d network records
    assert parse_target("conv3d:5@3,0,5", model).position == (3, 0, 5)
    with pytest.raises(studio.StudioError, match=r"4x6x6 map: give 3 coordinates \(@z,y,x\), not 2"):
        parse_target("conv3d:5@3,0", model)
    with pytest.raises(studio.StudioError, match="outside the 4x6x6 map of 'conv3d': z 0 to 3, y 0 to 5, x 0 to 5"):
        parse_target("conv3d:5@4,0,0", model)
    assert parse_target("conv3d:5@1,2,3", model).file_stem(8) == "c5_z1_y2_x3"


def test_quotes_open_only_at_an_entry_and_a_unit_named_twice_renders_once(lite0):
    assert [t.name for t in studio.parse_targets("logits:potter's wheel, tabby", lite0)] == ["logits:739", "logits:281"]
    assert [t.name for t in studio.parse_targets("logits:tabby, tabby cat", lite0)] == ["logits:281"]
    assert [t.name for t in studio.parse_targets("blocks.4:3,3,2", lite0)] == ["blocks.4:3", "blocks.4:2"]
