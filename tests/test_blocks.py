"""Building blocks: the ranking is activation x gradient (exact for a linear head), zeroing the top channels
really costs the class more than random channels, renders push each channel the way that helps, and the CLI
writes the figure with dataset examples."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.building_blocks import ablate, blocks, channel_attribution, random_control
from studio.cli import main
from studio.io import read_image, write_image
from studio.models import resize_to_input
from tests.conftest import hook_count
from tests.test_perturbation import SPEC, QuadrantNet, blocks as block_image


def test_for_a_linear_head_the_attribution_is_the_exact_drop_when_a_channel_is_zeroed():
    model = studio.load_model(QuadrantNet(), device="cpu", input=SPEC)
    image = block_image(0)
    result = blocks(model, image, "mix", 0, top=2, render_channels=False)
    # logit 0 is the top-left mean of mix's channel 0 and nothing else
    assert result.channels == [0, 1] and result.attributions[1] == 0 and result.shares[0] == pytest.approx(1.0)
    drop = result.score - ablate(model, image, "mix", [0], 0)
    assert drop == pytest.approx(result.attributions[0].item(), rel=1e-5) and drop == pytest.approx(result.score)
    assert ablate(model, image, "mix", [1], 0) == pytest.approx(result.score)
    assert result.maps.shape == (2, 32, 32) and result.maps[0, 16:, 16:].abs().max() == 0  # only where it reads
    assert hook_count(model.module) == 0


def test_zeroing_the_top_channels_for_egyptian_cat_costs_far_more_than_random_channels(lite0, photos):
    """Measured on chelsea, blocks.5: the cat logit 10.69 falls to 4.22 with the top 6 zeroed; 6 random
    channels leave it at 10.25 on average (lowest of 8 draws 8.51)."""
    result = blocks(lite0, photos["chelsea"], "blocks.5", "Egyptian cat", top=6, render_channels=False)
    chosen, drawn = random_control(lite0, photos["chelsea"], result, draws=8)
    print(f"score {result.score:.2f}; top 6 zeroed {chosen:.2f}; random {drawn.mean():.2f} (min {drawn.min():.2f})")
    assert result.target.label == "Egyptian cat" and result.units[0].startswith("blocks.5:")
    assert chosen < drawn.min() - 2 and result.score - chosen > 3 * (result.score - drawn.mean())
    assert (result.attributions[:-1] >= result.attributions[1:]).all() and result.shares.sum() < 1
    assert result.maps.shape == (6, *photos["chelsea"].shape[1:])
    assert hook_count(lite0.module) == 0


def test_each_render_pushes_its_channel_the_way_that_raises_the_class(lite0, photos):
    result = blocks(lite0, photos["chelsea"], "blocks.5", "Egyptian cat", top=3, steps=32, size=64)
    assert result.renders.images.shape == (3, 3, 64, 64)
    # each render goes the way its summed gradient raises the class; channel 89 (third) helps by being low
    reading = channel_attribution(lite0, resize_to_input(photos["chelsea"][None], lite0.spec), "blocks.5",
                                  result.target)
    assert result.directions == [1 if reading.gradients[c] >= 0 else -1 for c in result.channels]
    assert result.directions[2] == -1 and result.activations[2] < 0
    # each render's objective is its channel's activation times its direction, far past the photo's
    assert all(value > 2 * d * mean for d, value, mean in
               zip(result.directions, result.renders.clean_values.tolist(), result.activations.tolist()))


def test_bad_layers_and_counts_are_one_sentence(lite0, photos):
    with pytest.raises(studio.StudioError, match="vector"):
        blocks(lite0, photos["chelsea"], "classifier", render_channels=False)
    with pytest.raises(studio.StudioError, match="top must be at most 192"):
        blocks(lite0, photos["chelsea"], "blocks.5", top=500, render_channels=False)
    with pytest.raises(studio.StudioError, match="one photo at a time"):
        blocks(lite0, torch.rand(2, 3, 64, 64), "blocks.5", render_channels=False)


def test_studio_blocks_writes_the_figure_with_dataset_examples(tmp_path, photos, capsys, lite0):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        write_image(folder / f"{name}.png", photos[name])
    studio.build_index(lite0, folder, "blocks.5", tmp_path / "examples.sqlite", workers=0)
    out = tmp_path / "blocks.png"
    assert main(["blocks", "efficientnet_lite0", str(folder / "chelsea.png"), "--layer", "blocks.5", "--target",
                 "Egyptian cat", "--top", "3", "--steps", "8", "--size", "32", "--device", "cpu",
                 "--examples", str(tmp_path / "examples.sqlite"), "--draws", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'logits:285 "Egyptian cat"' in printed and "zeroing these 3 channels" in printed
    assert printed.count("blocks.5:") >= 3
    figure = read_image(out)
    assert figure.shape[1] > 300 and figure.shape[2] > 400
    assert main(["blocks", "efficientnet_lite0", str(folder / "chelsea.png"), "--layer", "classifier",
                 "--no-render", "--device", "cpu", "--out", str(out)]) == 2
    assert main(["blocks", str(folder / "chelsea.png"), "--layer", "blocks.5", "--out", str(tmp_path / "b.jpg")]) == 2
    assert "must end in .png" in capsys.readouterr().err  # before any model is loaded
