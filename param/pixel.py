"""Pixel latent: the unconstrained image (or volume) itself, one value per pixel and channel."""

from __future__ import annotations

import torch
from torch import nn


class PixelLatent(nn.Module):
    """A plain ``[B, C, *size]`` latent; ``set_from`` is the identity inverse."""

    def __init__(self, batch: int, channels: int, *size: int, sd: float = 0.01,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        init = torch.randn(batch, channels, *size, generator=generator) * sd
        self.latent = nn.Parameter(init)

    def forward(self) -> torch.Tensor:
        return self.latent

    @torch.no_grad()
    def set_from(self, values: torch.Tensor) -> None:
        """Set the latent so that ``forward()`` returns ``values``."""
        self.latent.copy_(values.to(self.latent))
