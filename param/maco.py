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
from studio.param.fourier import power_law_scale, spatial_axes


def power_law_magnitude(*size: int, decay_power: float = 1.0, channels: int = 3) -> torch.Tensor:
    """``[C, *size[:-1], size[-1]//2+1]`` magnitude ``1 / max(f, 1/max(size)) ** decay_power``, the same for
    each channel."""
    scale = power_law_scale(*size, decay_power=decay_power)
    return scale.expand(channels, *scale.shape).clone()


def natural_magnitude(photos: torch.Tensor, *size: int) -> torch.Tensor:
    """The mean Fourier magnitude ``[C, *size[:-1], size[-1]//2+1]`` of ``photos`` (``[N, C, *spatial]``)
    resized to ``size`` (``H, W`` or ``D, H, W``)."""
    resized = resample(photos.float(), size, antialias=True)
    axes = spatial_axes(len(size))
    return torch.fft.rfftn(resized - resized.mean(axes, keepdim=True), dim=axes, norm="ortho").abs().mean(0)


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
