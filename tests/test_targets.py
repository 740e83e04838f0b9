"""Target syntax, its clear errors, and hooks that never outlive a forward pass."""

import pytest
import torch
from torch import nn

import studio
from studio.targets import Target, capture, forward_to, frozen, parse_target
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
    ("logits:1000", "valid channels are 0 to 999"),
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
