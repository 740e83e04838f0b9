"""The fused random affine: a pure resize when randomness is off, independent draws per image."""

import torch
import torch.nn.functional as F

from studio.transforms import TransformSettings, random_affine


def test_no_randomness_is_a_plain_resize():
    images = torch.rand(2, 3, 16, 16)
    out = random_affine(images, (32, 32), TransformSettings.preset("none"))
    expected = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_each_image_gets_its_own_draw_and_seed_repeats():
    images = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1)
    settings = TransformSettings.preset("standard")
    out = random_affine(images, (48, 48), settings, torch.Generator().manual_seed(1))
    assert out.shape == (6, 3, 48, 48)
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 6))
    again = random_affine(images, (48, 48), settings, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, again)


def test_padding_is_grey_and_gradients_flow():
    images = torch.zeros(4, 3, 20, 20, requires_grad=True)
    settings = TransformSettings(pad=12, jitter=(), scale=(0.5, 0.5), degrees=0.0)
    out = random_affine(images, (44, 44), settings)
    assert torch.allclose(out[:, :, 0, 0], torch.tensor(0.5))  # corner shows the grey pad
    assert out[:, :, 22, 22].abs().max() < 1e-6                 # centre shows the image
    out.sum().backward()
    assert images.grad.abs().sum() > 0
