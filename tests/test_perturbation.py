"""Perturbation methods (occlusion, RISE, LIME, KernelSHAP): on a model that reads one quadrant every method's
mass lies there; KernelSHAP recovers exact Shapley values of a score linear in the superpixels; LIME, KernelSHAP
and occlusion equal captum's on the same masks, coalitions and seeds; maps do not depend on the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import studio
from studio.attribution.perturbation import (FULL_WEIGHT, lime_coalitions, lime_weights, rise_masks, shap_coalitions,
                                             superpixels)

SPEC = studio.InputSpec((32, 32), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channels=3)
OPTIONS = {"occlusion": {"window": 4, "stride": 4}, "rise": {"samples": 2000, "cells": 4},
           "lime": {"samples": 300, "segments": 16}, "kernel_shap": {"samples": 300, "segments": 16}}


class QuadrantNet(nn.Module):
    """Two logits that read only the top-left quadrant of a 32 px image (linear in its pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([[1.0, 2.0, 1.0], [-1.0, 0.5, 0.0]])[..., None, None])
            self.mix.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(x)[:, :, :16, :16].mean((2, 3))


class PixelLinear(nn.Module):
    """``f(x) = sum(v * x)``: linear in the pixels, so linear in any superpixel coalition."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("v", torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.v).sum((1, 2, 3))
        return torch.stack([score, -score], 1)


def blocks(seed: int = 0) -> torch.Tensor:
    """A 3 x 32 x 32 image of 8 px blocks of random colours (superpixels follow the blocks), bright top-left."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, 4, 4, generator=generator).repeat_interleave(8, 1).repeat_interleave(8, 2)
    image[:, :16, :16] = 0.6 + 0.4 * image[:, :16, :16]
    return image


@pytest.fixture(scope="module")
def quadrant() -> studio.StudioModel:
    return studio.load_model(QuadrantNet(), device="cpu", input=SPEC)


@pytest.mark.parametrize("method", list(OPTIONS))
def test_every_method_puts_its_mass_on_the_one_quadrant_the_model_reads(quadrant, method):
    images = torch.stack([blocks(0), blocks(1)])
    maps = studio.attribute(quadrant, images, 0, method=method, **OPTIONS[method])
    assert maps.shape == (2, 32, 32)
    if method == "rise":  # the mean score kept with each pixel: higher over the quadrant, by far more than noise
        quadrants = maps.unflatten(1, (2, 16)).unflatten(3, (2, 16)).mean((2, 4)).flatten(1)  # [B, 4], TL first
        noise = maps[:, 16:, 16:].std((1, 2))
        assert ((quadrants[:, 0] - quadrants[:, 1:].amax(1)) > 3 * noise).all(), (quadrants, noise)
        return
    mass = maps.clamp_min(0)
    inside = mass[:, :16, :16].sum((1, 2)) / mass.sum((1, 2))
    assert (inside > 0.9).all(), inside
    assert maps[:, 16:, 16:].abs().max() <= 0.05 * maps.abs().max()


class Indifferent(nn.Module):
    """Logits that ignore the image: 2 and -1 whatever it shows."""

    def __init__(self) -> None:
        super().__init__()
        self.level = nn.Parameter(torch.tensor([2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.level.expand(len(x), 2) + 0 * x.mean((1, 2, 3))[:, None]


def test_rise_of_a_model_that_ignores_the_image_is_its_constant_score():
    """The mean score as a control variate: where the score never changes, the map is that score everywhere,
    while the paper's plain sum would draw the masks' own uneven coverage (10 % noise at 64 masks, measured)."""
    model = studio.load_model(Indifferent(), device="cpu", input=SPEC)
    heat = studio.attribute(model, blocks(0), 0, method="rise", samples=64, cells=4)[0]
    torch.testing.assert_close(heat, torch.full((32, 32), 2.0))
    masks = rise_masks(64, (32, 32), 4, 0.5, torch.Generator().manual_seed(0))
    plain = 2.0 * masks[:, 0].sum(0) / (64 * 0.5)
    assert (plain.std() / plain.mean()) > 0.05  # what the control variate removes


def test_kernel_shap_recovers_the_exact_shapley_values_of_a_linear_score():
    model = studio.load_model(PixelLinear(), device="cpu", input=SPEC)
    image = blocks(5)
    result = studio.explain(model, image, 0, method="kernel_shap", samples=200, segments=16, baseline=0.5)
    labels = superpixels(image, 16, rgb=True)
    assert int(labels.max()) + 1 == 16
    contribution = (model.module.v[0] * (image - 0.5)).sum(0)  # each pixel's share of f(x) - f(baseline)
    exact = torch.zeros(int(labels.max()) + 1).index_add_(0, labels.flatten(), contribution.flatten())
    torch.testing.assert_close(result.maps[0], exact[labels], atol=1e-3, rtol=1e-4)
    baseline_score = model.module(torch.full((1, 3, 32, 32), 0.5))[0, 0]
    torch.testing.assert_close(exact.sum(), result.scores[0] - baseline_score, atol=1e-3, rtol=1e-4)


def captum_forward(model: studio.StudioModel):
    return lambda x: model.module(model.spec.normalise(x))


def test_lime_and_kernel_shap_equal_captums_fits_on_the_same_coalitions(quadrant):
    from captum._utils.models.linear_model import SkLearnLinearRegression, SkLearnRidge
    from captum.attr import KernelShap, Lime

    image = blocks(2)
    labels = superpixels(image, 16, rgb=True)
    features = int(labels.max()) + 1
    for method, draw, weigh, fit in (
            ("lime", lime_coalitions, lambda z: lime_weights(z, 0.25), SkLearnRidge(alpha=1.0)),
            ("kernel_shap", shap_coalitions, None, SkLearnLinearRegression())):
        ours = studio.attribute(quadrant, image, 0, method=method, samples=64, segments=16, seed=7)
        coalitions = draw(64, features, torch.Generator().manual_seed(7))

        def given(_original, **_kwargs):
            for row in coalitions:
                yield row[None]

        similarity = (lambda _o, _p, interpretable, **_k: weigh(interpretable)) if weigh else \
            KernelShap(captum_forward(quadrant)).kernel_shap_similarity_kernel
        theirs = Lime(captum_forward(quadrant), interpretable_model=fit, similarity_func=similarity,
                      perturb_func=given).attribute(image[None], baselines=0.5, target=0, feature_mask=labels[None, None],
                                                    n_samples=64, perturbations_per_eval=16)
        torch.testing.assert_close(ours[0], theirs[0, 0].float(), atol=2e-4, rtol=1e-3)
    assert KernelShap(captum_forward(quadrant)).inf_weight == FULL_WEIGHT


def test_occlusion_equals_captums(quadrant):
    from captum.attr import Occlusion

    image = blocks(3)
    ours = studio.attribute(quadrant, image, 1, method="occlusion", window=6, stride=3, baseline=0.2)
    theirs = Occlusion(captum_forward(quadrant)).attribute(image[None], sliding_window_shapes=(3, 6, 6),
                                                           strides=(3, 3, 3), baselines=0.2, target=1)
    torch.testing.assert_close(ours[0], theirs[0, 0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["rise", "lime"])
def test_a_maps_draws_depend_on_its_seed_not_on_its_batch(quadrant, method):
    options = {**OPTIONS[method], "samples": 64}
    pair = studio.attribute(quadrant, torch.stack([blocks(4), blocks(5)]), 0, method=method, **options)
    alone = studio.attribute(quadrant, blocks(5), 0, method=method, **options)
    torch.testing.assert_close(alone[0], pair[1], atol=1e-5, rtol=1e-5)
    other = studio.attribute(quadrant, blocks(5), 0, method=method, **{**options, "seed": 1})
    assert not torch.allclose(other, alone)


def test_perturbation_methods_take_unit_targets_and_volumes(lite0, photos):
    cat = photos["chelsea"]
    unit = studio.explain(lite0, cat, "blocks.4:3", method="occlusion", window=56, stride=56)
    assert unit.maps.shape == (1, *cat.shape[1:]) and unit.targets[0].name == "blocks.4:3"
    volume_net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.Flatten(2), nn.Unflatten(2, (8, 8, 8)))
    volume = studio.load_model(volume_net, device="cpu", input=studio.InputSpec((8, 8, 8), mean=(0.0,), std=(1.0,),
                                                                                    channels=1))
    maps = studio.attribute(volume, torch.rand(1, 8, 8, 8), "0:0@2,2,2", method="rise", samples=32, cells=2)
    assert maps.shape == (1, 8, 8, 8) and torch.isfinite(maps).all()


def test_bad_perturbation_options_are_one_sentence(quadrant):
    with pytest.raises(studio.StudioError, match="window .*larger than the model's input"):
        studio.attribute(quadrant, blocks(), 0, method="occlusion", window=64)
    with pytest.raises(studio.StudioError, match="Option keep must be at most 1"):
        studio.attribute(quadrant, blocks(), 0, method="rise", keep=2.0)
    with pytest.raises(studio.StudioError, match="do not apply to lime"):
        studio.attribute(quadrant, blocks(), 0, method="lime", window=8)
