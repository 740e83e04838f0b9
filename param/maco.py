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

from studio.param.fourier import power_law_scale


def power_law_magnitude(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """``[3, H, W//2+1]`` magnitude ``1 / max(f, 1/max(H, W)) ** decay_power``, the same for each channel."""
    return power_law_scale(height, width, decay_power).expand(3, -1, -1).clone()


def natural_magnitude(photos: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The mean Fourier magnitude ``[C, H, W//2+1]`` of ``photos`` (``[N, C, h, w]``) resized to ``H x W``."""
    resized = nn.functional.interpolate(photos.float(), size=(height, width), mode="bilinear", antialias=True,
                                        align_corners=False)
    return torch.fft.rfft2(resized - resized.mean((2, 3), keepdim=True), norm="ortho").abs().mean(0)


class MacoLatent(nn.Module):
    """A ``[B, C, H, W]`` latent whose spectrum is ``magnitude * exp(i * phase)``; only ``phase`` learns.

    The inverse transform is standardised per image and channel (zero mean, ``std``), as in Horama, so the
    colour space after it sees the same range whatever the magnitude's scale.
    """

    def __init__(self, batch: int, channels: int, height: int, width: int, magnitude: torch.Tensor | None = None,
                 std: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.height, self.width, self.std = height, width, std
        magnitude = power_law_magnitude(height, width) if magnitude is None else magnitude.float()
        if magnitude.shape != (channels, height, width // 2 + 1):
            raise StudioError(f"MACO magnitude must have shape {(channels, height, width // 2 + 1)}, "
                             f"not {tuple(magnitude.shape)}; build it with natural_magnitude(photos, H, W).")
        self.register_buffer("magnitude", magnitude, persistent=False)
        phase = (torch.rand(batch, channels, height, width // 2 + 1, generator=generator) * 2 - 1) * math.pi
        self.phase = nn.Parameter(phase)

    def spectrum(self) -> torch.Tensor:
        return torch.polar(self.magnitude.expand_as(self.phase), self.phase.float())

    def forward(self) -> torch.Tensor:
        image = torch.fft.irfft2(self.spectrum(), s=(self.height, self.width), norm="ortho")
        image = image - image.mean((2, 3), keepdim=True)
        return image / (image.std((2, 3), keepdim=True) + 1e-8) * self.std

    @torch.no_grad()
    def set_from(self, values: torch.Tensor) -> None:
        """Take the phase of ``values``: the result keeps their structure but has MACO's fixed magnitude
        (the phase of the self-conjugate DC and Nyquist columns is not recoverable, so this is approximate)."""
        self.phase.copy_(torch.angle(torch.fft.rfft2(values.float(), norm="ortho")).to(self.phase))
