"""Colour: optimise in a decorrelated channel basis, squash to ``[0, 1]`` with a sigmoid.

For RGB the basis is the square root of ImageNet's colour covariance (Lucid's ``color_correlation_svd_sqrt``);
for other channel counts (and for volumes) it is the identity, or a square root of the channel covariance of
your own images (:func:`decorrelation_from`). Columns are normalised so the largest has
unit length, as in Lucid.
"""

from __future__ import annotations

import torch
from torch import nn

from studio.errors import StudioError

COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02],
     [0.27, 0.00, -0.05],
     [0.27, -0.09, 0.03]]
)

_EPS = 1e-4


def decorrelation_from(images: torch.Tensor) -> torch.Tensor:
    """A square root of the channel covariance of ``images`` (``[N, C, *spatial]`` in ``[0, 1]``), ``[C, C]``:
    a basis for channels whose statistics are not ImageNet's (microscopy, multiplexed stains). Lucid's RGB
    matrix is the SVD root ``U sqrt(S)``; this is the symmetric root ``V sqrt(L) V^T``, which squares to the
    same covariance. Eigenvalues are kept above ``1e-6`` of the largest, so the basis stays invertible."""
    if images.dim() < 3:
        raise StudioError(f"Estimating a channel basis needs images [N, C, *spatial], not shape {list(images.shape)}.")
    samples = images.float().transpose(0, 1).reshape(images.shape[1], -1)
    covariance = torch.atleast_2d(torch.cov(samples))
    values, vectors = torch.linalg.eigh(covariance)
    values = values.clamp_min(1e-6 * max(float(values.max()), 1e-12))
    return vectors @ torch.diag(values.sqrt()) @ vectors.T


class ColourSpace(nn.Module):
    """Map a ``C``-channel latent to values in ``[0, 1]``: a channel basis (decorrelation), then sigmoid;
    invertible. ``matrix`` overrides the basis (ImageNet's for 3 channels with ``decorrelate``, else identity)."""

    def __init__(self, decorrelate: bool = True, channels: int = 3, matrix: torch.Tensor | None = None) -> None:
        super().__init__()
        self.decorrelate = decorrelate
        if matrix is None:
            matrix = COLOR_CORRELATION_SVD_SQRT if decorrelate and channels == 3 else torch.eye(channels)
        elif tuple(matrix.shape) != (channels, channels):
            raise StudioError(f"A channel basis for {channels} channels must be {channels}x{channels}, "
                              f"not {list(matrix.shape)}; build it with decorrelation_from(images).")
        matrix = matrix.float()
        self.register_buffer("matrix", matrix / matrix.norm(dim=0).max() if decorrelate else torch.eye(channels),
                             persistent=False)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.einsum("ij,bj...->bi...", self.matrix.to(latent.dtype), latent))

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        """The latent whose forward is ``values`` (clamped just inside ``(0, 1)``)."""
        logits = torch.logit(values.clamp(_EPS, 1 - _EPS))
        return torch.einsum("ij,bj...->bi...", torch.linalg.inv(self.matrix.double()).to(logits.dtype), logits)
