"""Synthetic data with a known feature, and tiny models trained on it in seconds on the CPU: the ground
truth that single-channel and volume renders and heat maps are checked against."""

from __future__ import annotations

import math

import torch
from torch import nn


def stripes(count: int, size: int = 32, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[N, 1, size, size]`` images in ``[0, 1]`` of vertical (label 0: varying along x) or horizontal
    (label 1) sine stripes of random period and phase, with noise; and the labels."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    period = 4 + 6 * torch.rand(count, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(count, 1, 1, generator=generator)
    axis = torch.arange(size, dtype=torch.float32)
    along = torch.where(labels.view(-1, 1, 1) == 0, axis.view(1, 1, -1).expand(count, size, size),
                        axis.view(1, -1, 1).expand(count, size, size))
    images = 0.5 + 0.35 * torch.sin(2 * math.pi * along / period + phase)
    images = images + 0.1 * torch.randn(count, size, size, generator=generator)
    return images.clamp(0, 1)[:, None], labels


def spheres(count: int, size: int = 24, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[N, 1, size, size, size]`` volumes of noise (label 0) or noise with one bright sphere (label 1) of
    radius 3 to 5 at a random place; the labels; and each sphere's mask (empty for noise)."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    centres = 6 + (size - 12) * torch.rand(count, 3, generator=generator)
    radii = 3 + 2 * torch.rand(count, generator=generator)
    distance = (grid[None] - centres.view(count, 3, 1, 1, 1)).pow(2).sum(1).sqrt()
    masks = (distance <= radii.view(-1, 1, 1, 1)) & (labels.view(-1, 1, 1, 1) == 1)
    volumes = 0.3 + 0.1 * torch.randn(count, size, size, size, generator=generator) + 0.5 * masks
    return volumes.clamp(0, 1)[:, None], labels, masks


def train(make_model, make_batch, steps: int, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    """A model from ``make_model()`` trained with Adam on cross-entropy over fresh batches
    ``make_batch(generator)``, everything drawn from ``seed``; in eval mode."""
    torch.manual_seed(seed)
    model = make_model()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        inputs, labels = make_batch(generator)[:2]
        loss = nn.functional.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def stripe_net() -> nn.Module:
    """A 1-channel 2D CNN: two convolutions, global average pooling, two logits."""
    return nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 5, padding=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))


def sphere_net() -> nn.Module:
    """A 1-channel 3D CNN: two 3D convolutions, global max pooling, two logits."""
    return nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveMaxPool3d(1), nn.Flatten(), nn.Linear(16, 2))
