"""CPPN latent (Lucid's ``cppn``): a small per-image network maps pixel coordinates ``(x, y, r)`` to colour.

Images are smooth, resolution-independent patterns. Each image of the batch has its own weights, applied
in one batched ``einsum`` per layer. Lucid optimises it with a smaller learning rate (about 0.005).
"""

from __future__ import annotations

import torch
from torch import nn

from studio.errors import StudioError


def composite_atan(x: torch.Tensor) -> torch.Tensor:
    """Lucid's composite activation: ``atan(x)`` and ``atan(x)^2`` side by side, normalised to unit scale."""
    x = torch.atan(x)
    return torch.cat([x / 0.67, x * x / 0.6], dim=1)


class CppnLatent(nn.Module):
    """``depth`` 1x1 layers of ``width`` units with the composite activation, then a linear map to ``channels``."""

    def __init__(self, batch: int, channels: int, height: int, width: int, depth: int = 8, units: int = 24,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-3 ** 0.5, 3 ** 0.5, height),
                                torch.linspace(-3 ** 0.5, 3 ** 0.5, width), indexing="ij")
        coords = torch.stack([xs, ys, torch.sqrt(xs * xs + ys * ys)])
        self.register_buffer("coords", coords[None].expand(batch, -1, -1, -1).clone(), persistent=False)
        sizes = [3] + [2 * units] * depth
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(batch, fan_in, units, generator=generator) / fan_in ** 0.5)
            for fan_in in sizes)
        self.out = nn.Parameter(torch.zeros(batch, 2 * units, channels))

    def forward(self) -> torch.Tensor:
        h = self.coords
        for weight in self.weights:
            h = composite_atan(torch.einsum("bchw,bcd->bdhw", h, weight))
        return torch.einsum("bchw,bcd->bdhw", h, self.out)

    def set_from(self, values: torch.Tensor) -> None:
        raise StudioError("A CPPN cannot start from an image; use the fourier, pixel or maco parameterisation for init.")
