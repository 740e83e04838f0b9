"""MACO latent (Fel et al. 2023): keep the Fourier magnitude fixed at a natural-image spectrum and
optimise only the phase, which keeps visualisations of deep networks plausible.

The default magnitude is the natural-image power law ``1 / f``; ``natural_magnitude(photos)`` estimates
it from the user's own images instead (the paper uses the ImageNet average).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from studio.errors import StudioError

from studio.models import resample
from studio.param.fourier import power_law_scale, rfft_frequencies, spatial_axes


def power_law_magnitude(*size: int, decay_power: float = 1.0, channels: int = 3) -> torch.Tensor:
    """``[C, *size[:-1], size[-1]//2+1]`` magnitude ``1 / max(f, 1/max(size)) ** decay_power``, the same for
    each channel."""
    scale = power_law_scale(*size, decay_power=decay_power)
    return scale.expand(channels, *scale.shape).clone()


def natural_magnitude(photos: torch.Tensor, *size: int) -> torch.Tensor:
    """The mean Fourier magnitude ``[C, *size[:-1], size[-1]//2+1]`` of ``photos`` (``[N, C, *spatial]``) at
    ``size`` (``H, W`` or ``D, H, W``): photos at least that large are resized to it.

    A grid larger than the photos (a canvas) is not reached by upsampling them, which would remove the fine
    detail a canvas is for: the magnitude is measured at the photos' own scale and read at the grid's
    frequencies (an ortho-normalised spectrum of natural images depends on the frequency in cycles per pixel,
    not on the image size), and below the photos' lowest frequencies it follows the power law fitted to their
    radial profile (:func:`carry_magnitude`)."""
    measured = tuple(min(want, have) for want, have in zip(size, photos.shape[2:]))
    resized = resample(photos.float(), measured, antialias=True)
    axes = spatial_axes(len(size))
    magnitude = torch.fft.rfftn(resized - resized.mean(axes, keepdim=True), dim=axes, norm="ortho").abs().mean(0)
    return magnitude if measured == tuple(size) else carry_magnitude(magnitude, measured, size)


def carry_magnitude(magnitude: torch.Tensor, measured: tuple[int, ...], size: tuple[int, ...]) -> torch.Tensor:
    """A magnitude ``[C, *bins]`` measured on a ``measured`` grid, read at the frequencies of a larger ``size``
    grid: interpolated (bi- or trilinearly, over frequency) where the measured grid has them, and below its
    lowest frequencies (twice its fundamental) the per-channel power law fitted to its radial profile."""
    dims = len(size)
    shifted = torch.fft.fftshift(magnitude, dim=tuple(range(1, dims)))  # negative frequencies first
    wanted = [torch.fft.fftfreq(n) for n in size[:-1]] + [torch.fft.rfftfreq(size[-1])]
    # grid_sample coordinates in [-1, 1], the last grid axis first (x)
    places = [(f * m + m // 2) / (m - 1) * 2 - 1 for f, m in zip(wanted[:-1], measured[:-1])]
    places.append(wanted[-1] * measured[-1] / (measured[-1] // 2) * 2 - 1)
    grid = torch.stack(torch.meshgrid(*places, indexing="ij")[::-1], -1)
    mode = "bilinear"  # trilinear for 5D inputs
    read = torch.nn.functional.grid_sample(shifted[None], grid[None], mode=mode, padding_mode="border",
                                           align_corners=True)[0]
    radius = rfft_frequencies(*size)
    low = 2.0 / min(measured)
    slope, intercept = _power_law_fit(magnitude, measured, low)
    law = torch.exp(intercept.view(-1, *[1] * dims) - slope.view(-1, *[1] * dims)
                    * torch.log(torch.clamp(radius, min=1.0 / max(size))))
    return torch.where(radius < low, law, read)


def _power_law_fit(magnitude: torch.Tensor, measured: tuple[int, ...], low: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per channel, ``log magnitude = intercept - slope * log f`` fitted by least squares over the bins with
    ``low <= f <= 0.25`` cycles per pixel."""
    radius = rfft_frequencies(*measured)
    used = (radius >= low) & (radius <= 0.25)
    x = torch.log(radius[used])
    y = torch.log(magnitude[:, used].clamp(min=1e-12))
    x_centred = x - x.mean()
    slope = -(y - y.mean(1, keepdim=True)) @ x_centred / (x_centred @ x_centred)
    return slope, y.mean(1) + slope * x.mean()


class MacoLatent(nn.Module):
    """A ``[B, C, *size]`` latent whose spectrum is ``magnitude * exp(i * phase)``; only ``phase`` learns.

    The inverse transform is standardised per image and channel (zero mean, ``std``), as in Horama, so the
    colour space after it sees the same range whatever the magnitude's scale.
    """

    def __init__(self, batch: int, channels: int, *size: int, magnitude: torch.Tensor | None = None,
                 std: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.size, self.std = size, std
        bins = (*size[:-1], size[-1] // 2 + 1)
        magnitude = power_law_magnitude(*size, channels=channels) if magnitude is None else magnitude.float()
        if tuple(magnitude.shape) != (channels, *bins):
            raise StudioError(f"MACO magnitude must have shape {(channels, *bins)}, not {tuple(magnitude.shape)}; "
                              "build it with natural_magnitude(photos, *size).")
        self.register_buffer("magnitude", magnitude, persistent=False)
        phase = (torch.rand(batch, channels, *bins, generator=generator) * 2 - 1) * math.pi
        self.phase = nn.Parameter(phase)

    @property
    def axes(self) -> tuple[int, ...]:
        return spatial_axes(len(self.size))

    def spectrum(self) -> torch.Tensor:
        return torch.polar(self.magnitude.expand_as(self.phase), self.phase.float())

    def forward(self) -> torch.Tensor:
        image = torch.fft.irfftn(self.spectrum(), s=self.size, dim=self.axes, norm="ortho")
        image = image - image.mean(self.axes, keepdim=True)
        return image / (image.std(self.axes, keepdim=True) + 1e-8) * self.std

    @torch.no_grad()
    def set_from(self, values: torch.Tensor) -> None:
        """Take the phase of ``values``: the result keeps their structure but has MACO's fixed magnitude
        (the phase of the self-conjugate DC and Nyquist columns is not recoverable, so this is approximate)."""
        self.phase.copy_(torch.angle(torch.fft.rfftn(values.float(), dim=self.axes, norm="ortho")).to(self.phase))
