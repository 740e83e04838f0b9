"""Parameterisations match their math: 1/f spectrum, exact round trips, invertible colour."""

import math

import pytest
import torch

from studio import param
from studio.param import ColourSpace, FourierLatent, rfft_frequencies


def radial_amplitude_slope(images: torch.Tensor) -> float:
    """Least-squares slope of log mean |FFT| against log frequency (excluding DC and the lowest band)."""
    spectrum = torch.fft.rfft2(images).abs().pow(2).mean((0, 1)).sqrt()
    freqs = rfft_frequencies(*images.shape[-2:])
    bands = torch.linspace(0.03, 0.5, 16)
    xs, ys = [], []
    for lo, hi in zip(bands[:-1], bands[1:]):
        inside = (freqs >= lo) & (freqs < hi)
        xs.append(math.log((lo + hi) / 2))
        ys.append(math.log(spectrum[inside].mean().item()))
    x, y = torch.tensor(xs), torch.tensor(ys)
    return (((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()


@pytest.mark.parametrize("decay", [1.0, 1.5])
def test_fourier_latent_has_power_law_spectrum(decay):
    latent = FourierLatent(32, 3, 64, 64, sd=1.0, decay_power=decay, generator=torch.Generator().manual_seed(0))
    slope = radial_amplitude_slope(latent().detach())
    assert slope == pytest.approx(-decay, abs=0.08)


def test_fourier_round_trip_is_exact():
    latent = FourierLatent(2, 3, 24, 31, decay_power=1.2)
    target = torch.randn(2, 3, 24, 31)
    latent.set_from(target)
    torch.testing.assert_close(latent(), target, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decorrelate", [True, False])
def test_colour_space_is_invertible(decorrelate):
    colour = ColourSpace(decorrelate)
    latent = torch.randn(3, 3, 5, 5)
    torch.testing.assert_close(colour.inverse(colour(latent)), latent, atol=1e-4, rtol=1e-4)
    rgb = torch.rand(2, 3, 4, 4) * 0.98 + 0.01
    torch.testing.assert_close(colour(colour.inverse(rgb)), rgb, atol=1e-5, rtol=1e-5)


def test_decorrelated_colour_uses_lucid_matrix():
    colour = ColourSpace(True)
    expected = param.COLOR_CORRELATION_SVD_SQRT / param.COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
    latent = torch.zeros(1, 3, 1, 1)
    latent[0, 1] = 1.0
    torch.testing.assert_close(torch.logit(colour(latent))[0, :, 0, 0], expected[:, 1])


@pytest.mark.parametrize("kind", ["fourier", "pixel"])
def test_image_param_shapes_range_seed_and_init(kind):
    a = param.image(40, batch=3, kind=kind, seed=5)()
    assert a.shape == (3, 3, 40, 40) and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, param.image(40, batch=3, kind=kind, seed=5)())
    assert not torch.equal(a, param.image(40, batch=3, kind=kind, seed=6)())
    torch.testing.assert_close(param.image(40, batch=1, kind=kind, seed=[6])()[0], a[1])  # image 1 has seed 6
    photo = torch.rand(3, 40, 40) * 0.9 + 0.05
    started = param.image(40, batch=2, kind=kind, init=photo)()
    torch.testing.assert_close(started, photo.expand(2, -1, -1, -1), atol=1e-4, rtol=1e-4)


def test_unknown_kind_is_clear():
    with pytest.raises(ValueError, match="fourier, pixel, maco, cppn"):
        param.image(8, kind="wavelet")


def test_maco_keeps_its_magnitude_and_learns_only_phase():
    from studio.param import MacoLatent, natural_magnitude

    photos = torch.rand(4, 3, 50, 40)
    magnitude = natural_magnitude(photos, 32, 32)
    assert magnitude.shape == (3, 32, 17)
    latent = MacoLatent(2, 3, 32, 32, magnitude=magnitude, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(latent.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        latent()[:, 0, :16].mean().neg().backward()
        optimizer.step()
    assert [name for name, _ in latent.named_parameters()] == ["phase"]
    torch.testing.assert_close(latent.spectrum().abs(), magnitude.expand(2, -1, -1, -1), rtol=1e-5, atol=1e-6)
    out = latent()
    torch.testing.assert_close(out.mean((2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std((2, 3)), torch.ones(2, 3), atol=1e-4, rtol=0)
    # An image with MACO's magnitude comes back from its phase; only the self-conjugate DC and Nyquist
    # columns, whose phase irfft2 projects away, differ (measured correlation 0.992).
    source = MacoLatent(1, 3, 32, 32, magnitude=magnitude, generator=torch.Generator().manual_seed(9))()
    latent.set_from(source)
    correlation = torch.corrcoef(torch.stack([latent()[1].flatten(), source[0].flatten()]))[0, 1]
    assert correlation > 0.98
    with pytest.raises(ValueError, match="natural_magnitude"):
        MacoLatent(1, 3, 16, 16, magnitude=magnitude)


def test_cppn_is_per_image_and_resolution_independent():
    from studio.param import CppnLatent

    small = CppnLatent(2, 3, 33, 33, generator=torch.Generator().manual_seed(0))
    torch.nn.init.normal_(small.out)
    large = CppnLatent(2, 3, 65, 65, generator=torch.Generator().manual_seed(0))
    large.load_state_dict(small.state_dict())
    # The same function sampled twice as densely: every other pixel of the large image is the small one.
    torch.testing.assert_close(large()[:, :, ::2, ::2], small(), atol=1e-5, rtol=1e-5)
    before = small()[1].clone()
    with torch.no_grad():
        for weight in small.weights:
            weight[0].mul_(-1)
    torch.testing.assert_close(small()[1], before)  # image 1's network is its own
    assert not torch.allclose(small()[0], large()[0, :, ::2, ::2])
    with pytest.raises(ValueError, match="cannot start from an image"):
        param.image(16, kind="cppn", init=torch.rand(3, 16, 16))


def test_maco_magnitude_for_a_canvas_larger_than_the_photos_is_measured_at_their_scale():
    from studio.param import natural_magnitude
    from studio.param.fourier import rfft_frequencies

    # stand-ins for photos: 1/f noise (a natural image's spectrum), 256 px; the "photos" are their 128 px corners
    generator = torch.Generator().manual_seed(0)
    spectrum = torch.polar(1 / rfft_frequencies(256, 256).clamp(min=1 / 256),
                           torch.rand(8, 3, 256, 129, generator=generator) * 6.2832)
    images = torch.fft.irfftn(spectrum, s=(256, 256), dim=(-2, -1), norm="ortho")
    direct = natural_magnitude(images, 256, 256)
    carried = natural_magnitude(images[..., :128, :128], 256, 256)
    assert carried.shape == direct.shape == (3, 256, 129)
    radius = rfft_frequencies(256, 256)
    for low, high in ((0.005, 0.015), (0.03, 0.06), (0.1, 0.2), (0.3, 0.45)):
        shell = (radius >= low) & (radius < high)
        ratio = carried[:, shell].mean() / direct[:, shell].mean()
        assert 0.8 < ratio < 1.25, (low, ratio)
    # upsampling the corners instead (what resizing would do) loses the fine detail a canvas is for
    upsampled = torch.nn.functional.interpolate(images[..., :128, :128], size=(256, 256), mode="bilinear")
    fine = radius > 0.3
    assert natural_magnitude(upsampled, 256, 256)[:, fine].mean() < 0.5 * direct[:, fine].mean()
