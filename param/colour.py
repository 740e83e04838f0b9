"""Decorrelated colour: optimise in a whitened ImageNet colour basis, squash to ``[0, 1]`` with a sigmoid.

The matrix is the square root of ImageNet's colour covariance (Lucid's ``color_correlation_svd_sqrt``);
its columns are normalised so the largest has unit length, as in Lucid.
"""

from __future__ import annotations

import torch
from torch import nn

COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]]
)

_EPS = 1e-4


class ColourSpace(nn.Module):
    """Map a 3-channel latent to RGB in ``[0, 1]``: optional decorrelation, then sigmoid; invertible."""

    def __init__(self, decorrelate: bool = True) -> None:
        super().__init__()
        self.decorrelate = decorrelate
        matrix = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
        self.register_buffer("matrix", matrix if decorrelate else torch.eye(3), persistent=False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        rgb = torch.einsum("ij,bjhw->bihw", self.matrix.to(latent.dtype), latent)
        return torch.sigmoid(rgb)

    def inverse(self, rgb: torch.Tensor) -> torch.Tensor:
        """The latent whose forward is ``rgb`` (values are clamped just inside ``(0, 1)``)."""
        logits = torch.logit(rgb.clamp(_EPS, 1 - _EPS))
        return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(self.matrix.double()).to(logits.dtype), logits)
