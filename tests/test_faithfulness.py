"""Deletion and insertion: a map that points at what the model reads deletes its score fast and inserts it
fast; Grad-CAM on real photos beats a random map; the curves start and end where they must."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.io import fit
from tests.test_perturbation import SPEC, QuadrantNet, blocks


@pytest.fixture(scope="module")
def quadrant() -> studio.StudioModel:
    return studio.load_model(QuadrantNet(), device="cpu", input=SPEC)


def test_a_map_on_what_the_model_reads_deletes_and_inserts_the_score_fastest(quadrant):
    image = blocks(0)
    right = torch.zeros(32, 32)
    right[:16, :16] = 1.0
    result = studio.deletion_insertion(quadrant, torch.stack([image, image]), torch.stack([right, 1 - right]), 0,
                                       steps=8, baseline=0.5)
    assert result.deletion.shape == (2, 9) and torch.allclose(result.fractions, torch.linspace(0, 1, 9))
    assert result.deletion_auc[0] < result.deletion_auc[1] and result.insertion_auc[0] > result.insertion_auc[1]
    # the right map has removed everything that counts after a quarter of the pixels; the wrong one nothing
    torch.testing.assert_close(result.deletion[0, 2:], result.deletion[0, -1].expand(7))
    torch.testing.assert_close(result.deletion[1, :7], result.deletion[1, 0].expand(7))
    # both curves run between the image's and the baseline's probability
    probability = quadrant.module(image[None]).softmax(1)[0, 0]
    grey = quadrant.module(torch.full((1, 3, 32, 32), 0.5)).softmax(1)[0, 0]
    torch.testing.assert_close(result.deletion[:, 0], probability.expand(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.insertion[:, 0], grey.expand(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(result.insertion[:, -1], probability.expand(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_grad_cam_on_a_photo_inserts_faster_than_random_maps_and_deletes_faster_than_its_reverse(lite0, photos,
                                                                                               name):
    photo = fit(photos[name], lite0.spec.size)
    cam = studio.attribute(lite0, photo, method="gradcam")[0]
    generator = torch.Generator().manual_seed(1)
    fine = torch.rand(1, *cam.shape, generator=generator)  # random pixels, and random maps as coarse as Grad-CAM's
    coarse = torch.nn.functional.interpolate(torch.rand(2, 1, 7, 7, generator=generator), size=cam.shape,
                                             mode="bilinear")[:, 0]
    maps = torch.cat([cam[None], -cam[None], fine, coarse])
    result = studio.deletion_insertion(lite0, photo.expand(len(maps), -1, -1, -1), maps, steps=12)
    assert len({target.name for target in result.targets}) == 1  # the photo's top-1 class
    assert (result.insertion_auc[0] > result.insertion_auc[2:]).all(), result.insertion_auc
    assert result.deletion_auc[0] < result.deletion_auc[1]
    # removing a random scatter of pixels breaks any photo fast (the inputs leave the model's distribution), so
    # deletion alone does not rank Grad-CAM above random maps here: why ROAD and insertion are measured too
    # deleting a map's top pixels is inserting the reverse map's bottom ones: the two curves mirror
    torch.testing.assert_close(result.deletion_auc[0], result.insertion_auc[1], atol=1e-3, rtol=0)


def test_unit_targets_and_bad_maps(lite0, photos):
    photo = fit(photos["chelsea"], lite0.spec.size)
    heat = studio.attribute(lite0, photo, "blocks.4:3", method="gradcam")
    unit = studio.deletion_insertion(lite0, photo, heat, "blocks.4:3", steps=4)
    assert unit.targets[0].name == "blocks.4:3" and unit.deletion.shape == (1, 5)
    with pytest.raises(studio.StudioError, match="one map per image"):
        studio.deletion_insertion(lite0, photo, torch.zeros(2, 3, 8, 8))


def test_roads_imputation_fills_a_linear_ramp_exactly_and_adds_the_noise_asked_for():
    y, x = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    ramp = torch.stack([0.01 * x + 0.02 * y, 0.5 - 0.01 * y, 0.03 * x])
    removed = torch.zeros(24, 24, dtype=torch.bool)
    removed[6:15, 8:20] = True
    removed[3, 3] = True
    filled = studio.attribution.noisy_linear_impute(ramp, removed, noise=0.0)
    torch.testing.assert_close(filled, ramp, atol=1e-5, rtol=0)  # every removed pixel is the mean of neighbours
    noisy = studio.attribution.noisy_linear_impute(ramp, removed, noise=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy[:, ~removed], ramp[:, ~removed])  # only removed pixels change
    assert abs((noisy - ramp)[:, removed].std().item() - 0.05) < 0.01


def test_road_ranks_the_map_on_what_the_model_reads_above_its_reverse(quadrant):
    image = blocks(0)
    right = torch.zeros(32, 32)
    right[:16, :16] = 1.0
    result = studio.road(quadrant, torch.stack([image, image]), torch.stack([right, 1 - right]), 0,
                         fractions=(0.1, 0.25, 0.5, 0.75, 0.9))
    assert result.morf.shape == (2, 5)
    assert result.morf_auc[0] < result.morf_auc[1] and result.lerf_auc[0] > result.lerf_auc[1]
    with pytest.raises(studio.StudioError, match="strictly between 0 and 1"):
        studio.road(quadrant, image, right, 0, fractions=(0.0, 0.5))


def test_road_on_coffee_ranks_grad_cam_above_random_maps_and_its_reverse(lite0, photos):
    # (on chelsea Grad-CAM's MoRF ties with a coarse random map's: 0.251 against 0.246, measured)
    photo = fit(photos["coffee"], lite0.spec.size)
    cam = studio.attribute(lite0, photo, method="gradcam")[0]
    generator = torch.Generator().manual_seed(1)
    coarse = torch.nn.functional.interpolate(torch.rand(2, 1, 7, 7, generator=generator), size=cam.shape,
                                             mode="bilinear")[:, 0]
    maps = torch.cat([cam[None], -cam[None], torch.rand(1, *cam.shape, generator=generator), coarse])
    result = studio.road(lite0, photo.expand(len(maps), -1, -1, -1), maps)
    assert (result.morf_auc[0] < 0.5 * result.morf_auc[1:]).all(), result.morf_auc
