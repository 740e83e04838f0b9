"""Fourier latent: images (or volumes) as a 1/f^decay-scaled real spectrum (Olah et al. 2017, Lucid's
``fft_image``), over two or three spatial frequencies.

Scaling each frequency by ``1 / max(f, 1/max(size)) ** decay_power`` makes equal steps in the latent
change all spatial frequencies by equal energy, which whitens the gradient and avoids high-frequency noise (in 3D the energy is equal per radial
shell of frequencies rather than per frequency).
"""

from __future__ import annotations

import torch
from torch import nn

#: Lucid's empirical normaliser, kept so learning rates transfer from Lucid/lucent.
SPECTRUM_DIVISOR = 4.0


def rfft_frequencies(*size: int) -> torch.Tensor:
    """Radial frequency (cycles per pixel) of every bin of ``torch.fft.rfftn`` over a ``size`` grid
    (``H, W`` or ``D, H, W``): ``[*size[:-1], size[-1]//2+1]``."""
    axes = [torch.fft.fftfreq(n) for n in size[:-1]] + [torch.fft.rfftfreq(size[-1])]
    return torch.sqrt(sum(axis * axis for axis in torch.meshgrid(*axes, indexing="ij")))


def spatial_axes(dims: int) -> tuple[int, ...]:
    """The last ``dims`` axes of a ``[B, C, *spatial]`` tensor, where the spectrum lives."""
    return tuple(range(-dims, 0))


def power_law_scale(*size: int, decay_power: float = 1.0) -> torch.Tensor:
    """Factors ``1 / max(f, 1/max(size)) ** decay_power`` for the rfftn bins of a ``size`` grid."""
    return 1.0 / torch.clamp(rfft_frequencies(*size), min=1.0 / max(size)) ** decay_power


class FourierLatent(nn.Module):
    """A ``[B, C, *size]`` latent stored as a scaled complex spectrum ``[B, C, *size[:-1], size[-1]//2+1]``."""

    def __init__(self, batch: int, channels: int, *size: int, sd: float = 0.01, decay_power: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.size = size
        self.decay_power = decay_power
        self.register_buffer("scale", power_law_scale(*size, decay_power=decay_power), persistent=False)
        shape = (batch, channels, *size[:-1], size[-1] // 2 + 1, 2)
        self.spectrum = nn.Parameter(torch.randn(shape, generator=generator) * sd)

    @property
    def axes(self) -> tuple[int, ...]:
        return spatial_axes(len(self.size))

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum.float()) * self.scale
        image = torch.fft.irfftn(spectrum, s=self.size, dim=self.axes, norm="ortho")
        return image / SPECTRUM_DIVISOR

    @torch.no_grad()
    def set_from(self, values: torch.Tensor) -> None:
        """Set the spectrum so that ``forward()`` returns ``values`` (exact inverse of the forward map)."""
        spectrum = torch.fft.rfftn(values.float() * SPECTRUM_DIVISOR, dim=self.axes, norm="ortho") / self.scale
        self.spectrum.copy_(torch.view_as_real(spectrum).to(self.spectrum))
