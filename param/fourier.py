"""Fourier latent: images as a 1/f^decay-scaled real spectrum (Olah et al. 2017, Lucid's ``fft_image``).

Scaling each frequency by ``1 / max(f, 1/max(H, W)) ** decay_power`` makes equal steps in the latent
change all spatial frequencies by equal energy, which whitens the gradient and avoids high-frequency noise.
"""

from __future__ import annotations

import torch
from torch import nn

#: Lucid's empirical normaliser, kept so learning rates transfer from Lucid/lucent.
SPECTRUM_DIVISOR = 4.0


def rfft_frequencies(height: int, width: int) -> torch.Tensor:
    """Radial frequency (cycles per pixel) of every bin of ``torch.fft.rfft2`` on an ``H x W`` image."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def power_law_scale(height: int, width: int, decay_power: float = 1.0) -> torch.Tensor:
    """``[H, W//2+1]`` factors ``1 / max(f, 1/max(H, W)) ** decay_power`` for the rfft2 bins."""
    freqs = rfft_frequencies(height, width)
    return 1.0 / torch.clamp(freqs, min=1.0 / max(height, width)) ** decay_power


class FourierLatent(nn.Module):
    """A ``[B, C, H, W]`` latent stored as a scaled complex spectrum of shape ``[B, C, H, W//2+1]``."""

    def __init__(self, batch: int, channels: int, height: int, width: int, sd: float = 0.01,
                 decay_power: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.decay_power = decay_power
        self.register_buffer("scale", power_law_scale(height, width, decay_power), persistent=False)
        shape = (batch, channels, height, width // 2 + 1, 2)
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator) * sd)

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum.float()) * self.scale
        image = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")
        return image / SPECTRUM_DIVISOR

    @torch.no_grad()
    def set_from(self, values: torch.Tensor) -> None:
        """Set the spectrum so that ``forward()`` returns ``values`` (exact inverse of the forward map)."""
        spectrum = torch.fft.rfft2(values.float() * SPECTRUM_DIVISOR, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum).to(self.spectrum))
