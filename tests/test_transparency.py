"""MACO's transparency map: the accumulated gradient magnitude per pixel marks where the render drives its unit
(occluding the high-alpha quarter costs the activation far more than the low-alpha quarter), for every
parameterisation, and the CLI writes it as the PNG's alpha channel."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.attribution.machinery import evaluate
from studio.cli import main
from studio.models import resize_to_input


def _occluded(model, result, which: str) -> float:
    """The render's clean objective with a quarter of its pixels (highest or lowest alpha) set to grey."""
    image = result.images[0].clone()
    order = result.alpha[0].flatten().argsort(descending=which == "high")
    image.view(image.shape[0], -1)[:, order[:order.numel() // 4]] = 0.5
    return evaluate(model, resize_to_input(image[None], model.spec), result.targets)[0].item()


@pytest.mark.parametrize("target, ratio", [("blocks.4:3@3,3", 5.0)])
def test_occluding_high_alpha_pixels_costs_the_unit_more_than_low_alpha_ones(lite0, target, ratio):
    """Measured here (96 steps, 96 px): the neuron at 3,3 falls from 55.0 to 4.1 with its high-alpha quarter
    grey and stays at 55.0 with its low-alpha quarter grey (outside its receptive field). A whole channel is
    spread over the image and so is its alpha: blocks.3:10 falls from 40.9 to 27.6 against 28.9 (measured the
    same way, with ratio 1.03; left out of the suite for time)."""
    result = studio.render(lite0, target, steps=96, size=96)
    alpha = result.alpha
    assert alpha.shape == (1, 96, 96) and alpha.min() >= 0 and alpha.max() == 1
    clean = result.clean_values[0].item()
    high, low = _occluded(lite0, result, "high"), _occluded(lite0, result, "low")
    print(f"{target}: clean {clean:.2f}, high-alpha quarter grey {high:.2f}, low-alpha quarter grey {low:.2f}")
    assert clean - high > ratio * (clean - low)


@pytest.mark.parametrize("kind", ["pixel", "fourier", "maco", "cppn"])
def test_every_parameterisation_gets_a_transparency_map(lite0, kind):
    result = studio.render(lite0, "blocks.4:3@3,3", steps=4, size=32, param=kind)
    assert result.gradient_mass.shape == (1, 32, 32) and result.gradient_mass.sum() > 0


def test_the_cli_writes_the_alpha_channel_and_refuses_formats_without_one(tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "neuron.png"
    assert main(["render", "blocks.4:3@3,3", "--steps", "8", "--size", "48", "--device", "cpu", "--transparency",
                 "--out", str(out)]) == 0
    picture = iio.imread(out)
    assert picture.shape == (48, 48, 4) and picture[..., 3].max() == 255 and picture[..., 3].min() < 128
    assert main(["render", "blocks.4:3", "blocks.4:4", "--sheet", "--transparency", "--steps", "2", "--device", "cpu",
                 "--out", str(tmp_path / "sheet.png")]) == 2
    assert "--transparency writes one PNG" in capsys.readouterr().err
    with pytest.raises(studio.StudioError, match="alpha channel"):
        studio.write_image(tmp_path / "x.jpg", torch.rand(3, 8, 8), torch.rand(8, 8))
