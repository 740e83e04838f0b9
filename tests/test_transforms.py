"""The fused random affine: a pure resize when randomness is off, independent draws per image."""

import torch
import torch.nn.functional as F

from studio.transforms import TransformSettings, counter_uniform, random_affine


def test_no_randomness_is_a_plain_resize():
    images = torch.rand(2, 3, 16, 16)
    out = random_affine(images, (32, 32), TransformSettings.preset("none"))
    expected = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_each_image_gets_its_own_draw_and_seed_repeats():
    images = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1)
    settings = TransformSettings.preset("standard")
    seeds = torch.arange(6)
    out = random_affine(images, (48, 48), settings, counter_uniform(seeds, 0, 4))
    assert out.shape == (6, 3, 48, 48)
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 6))
    torch.testing.assert_close(out, random_affine(images, (48, 48), settings, counter_uniform(seeds, 0, 4)))
    alone = random_affine(images[:1], (48, 48), settings, counter_uniform(seeds[4:5], 0, 4))
    torch.testing.assert_close(alone[0], out[4])  # an image's draws do not depend on its batch mates


def test_counter_draws_are_uniform_and_uncorrelated():
    draws = counter_uniform(torch.arange(4096), 7, 4)
    assert draws.min() >= 0 and draws.max() < 1
    assert abs(draws.mean().item() - 0.5) < 0.01 and abs(draws.std().item() - 12 ** -0.5) < 0.01
    neighbours = torch.corrcoef(torch.stack([draws[:-1, 0], draws[1:, 0]]))[0, 1]
    assert abs(neighbours) < 0.05
    over_steps = torch.stack([counter_uniform(torch.tensor([5]), step, 1)[0, 0] for step in range(2000)])
    assert abs(over_steps.mean().item() - 0.5) < 0.03
    assert not torch.equal(counter_uniform(torch.tensor([2 ** 40]), 0, 4), counter_uniform(torch.tensor([0]), 0, 4))


def test_padding_is_grey_and_gradients_flow():
    images = torch.zeros(4, 3, 20, 20, requires_grad=True)
    settings = TransformSettings(pad=12, jitter=(), scale=(0.5, 0.5), degrees=0.0)
    out = random_affine(images, (44, 44), settings)
    assert torch.allclose(out[:, :, 0, 0], torch.tensor(0.5))  # corner shows the grey pad
    assert out[:, :, 22, 22].abs().max() < 1e-6                 # centre shows the image
    out.sum().backward()
    assert images.grad.abs().sum() > 0
