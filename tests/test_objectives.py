"""The objective algebra equals the math, computed by hand on hand-made activations."""

import pytest
import torch
import torch.nn.functional as F

from studio import objectives as obj
from studio.objectives import IMAGE


@pytest.fixture
def acts():
    g = torch.Generator().manual_seed(0)
    return {"conv": torch.randn(4, 6, 5, 7, generator=g), "logits": torch.randn(4, 10, generator=g),
            IMAGE: torch.rand(4, 3, 8, 9, generator=g)}


def test_channel_neuron_layer_class(acts):
    a = acts["conv"]
    torch.testing.assert_close(obj.channel("conv", 2)(acts), a[:, 2].mean((1, 2)))
    torch.testing.assert_close(obj.neuron("conv", 3, 1, 4)(acts), a[:, 3, 1, 4])
    torch.testing.assert_close(obj.neuron("conv", 3)(acts), a[:, 3, 2, 3])
    torch.testing.assert_close(obj.layer("conv")(acts), (a ** 2).mean((1, 2, 3)))
    torch.testing.assert_close(obj.class_logit(7)(acts), acts["logits"][:, 7])
    masked = obj.channel("conv", 2, batch=1)(acts)
    assert masked[1] == a[1, 2].mean() and masked[[0, 2, 3]].abs().sum() == 0


def test_units_give_each_image_its_own_unit(acts):
    a = acts["conv"]
    value = obj.units("conv", [5, 0, 2], [None, (4, 6), None], images=[3, 0, 1])(acts)
    expected = torch.stack([a[0, 0, 4, 6], a[1, 2].mean(), torch.tensor(0.0), a[3, 5].mean()])
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(obj.units("logits", [1, 2, 3, 4])(acts), acts["logits"][torch.arange(4), torch.tensor([1, 2, 3, 4])])


def test_direction_matches_cosine_weighted_projection(acts):
    a = acts["conv"]
    v = torch.randn(6)
    vhat = v / v.norm()
    dot = torch.einsum("bchw,c->bhw", a, vhat)
    torch.testing.assert_close(obj.direction("conv", v)(acts), dot.mean((1, 2)))
    cos = dot / a.norm(dim=1)
    expected = (dot * cos.clamp(min=0.1) ** 2).mean((1, 2))
    torch.testing.assert_close(obj.direction("conv", v, cossim_pow=2)(acts), expected, rtol=1e-4, atol=1e-5)


def test_diversity_is_mean_gram_cosine_to_other_images(acts):
    a = acts["conv"]
    grams = [F.normalize((x.flatten(1) @ x.flatten(1).T).flatten(), dim=0) for x in a]
    expected = torch.stack([-sum((grams[i] * grams[j]).sum() for j in range(4) if j != i) / 3 for i in range(4)])
    torch.testing.assert_close(obj.diversity("conv")(acts), expected, rtol=1e-5, atol=1e-6)
    assert obj.diversity("conv")({"conv": a[:1]}).tolist() == [0.0]


def test_image_penalties(acts):
    x = acts[IMAGE]
    tv = (x[:, :, 1:] - x[:, :, :-1]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    torch.testing.assert_close(obj.total_variation()(acts), tv)
    torch.testing.assert_close(obj.l1(0.2)(acts), (x - 0.2).abs().mean((1, 2, 3)))
    torch.testing.assert_close(obj.l2()(acts), ((x - 0.5) ** 2).mean((1, 2, 3)).add(1e-6).sqrt())
    flat = {IMAGE: torch.full((2, 3, 6, 6), 0.3)}
    assert obj.blur()(flat).abs().max() < 1e-10  # a flat image is its own blur
    value = obj.blur()(acts)
    assert value.shape == (4,) and (value > 0).all()


def test_algebra_values_names_and_terms(acts):
    a = acts["conv"]
    c1, c2, tv = obj.channel("conv", 1), obj.channel("conv", 2), obj.total_variation()
    combo = 2 * c1 - c2 / 4 + 1 - 0.5 * tv
    expected = 2 * a[:, 1].mean((1, 2)) - a[:, 2].mean((1, 2)) / 4 + 1 - 0.5 * tv(acts)
    total, terms = combo.evaluate(acts)
    torch.testing.assert_close(total, expected)
    assert total.shape == (4,)
    assert combo.name == "2 * conv:1 - conv:2 / 4 + 1 - 0.5 * total_variation"
    assert list(terms) == ["conv:1", "conv:2", "total_variation"]
    torch.testing.assert_close(terms["conv:2"], a[:, 2].mean((1, 2)))
    assert combo.layers == {"conv"}
    product = c1 * c2
    torch.testing.assert_close(product(acts), c1(acts) * c2(acts))
    ratio = 3 / (c1 - c2)
    torch.testing.assert_close(ratio(acts), 3 / (c1(acts) - c2(acts)))
    assert ratio.name == "3 / (conv:1 - conv:2)"
    neg = -(c1 + c2)
    torch.testing.assert_close(neg(acts), -(c1(acts) + c2(acts)))
    assert neg.name == "-(conv:1 + conv:2)"
    same = c1 + c1
    assert list(same.evaluate(acts)[1]) == ["conv:1", "conv:1 #2"]


def test_neuron_defaults_each_missing_coordinate_to_the_centre(acts):
    a = acts["conv"]
    torch.testing.assert_close(obj.neuron("conv", 3, y=1)(acts), a[:, 3, 1, 3])
    torch.testing.assert_close(obj.neuron("conv", 3, x=5)(acts), a[:, 3, 2, 5])
