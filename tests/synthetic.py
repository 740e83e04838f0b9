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


class PatternNet(nn.Module):
    """Planted concepts: ``detect`` matches each 8x8 cell of a 3x32x32 image against ``patterns`` (fixed
    zero-mean templates) and keeps the clear matches (a smooth ReLU past a threshold), so each cell holds a sparse code; ``mix`` writes that
    code as a combination of known ``atoms`` over ``channels``. A dictionary of ``mix`` should find the atoms."""

    def __init__(self, patterns: int = 8, channels: int = 24, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        templates = torch.randn(patterns, 3, 8, 8, generator=generator)
        templates -= templates.mean(dim=(1, 2, 3), keepdim=True)
        self.detect = nn.Conv2d(3, patterns, 8, stride=8)
        self.detect.weight.data = templates / templates.flatten(1).norm(dim=1)[:, None, None, None]
        self.detect.bias.data.fill_(-1.0)
        self.gate = nn.Softplus(beta=10)  # a smooth ReLU: a render that starts matching no pattern still has a gradient
        self.mix = nn.Conv2d(patterns, channels, 1, bias=False)
        atoms = nn.functional.normalize(torch.randn(patterns, channels, generator=generator), dim=1)
        self.mix.weight.data = atoms.T[..., None, None].clone()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, patterns))
        self.head[2].weight.data = atoms.clone()
        self.head[2].bias.data.zero_()
        self.eval()

    @property
    def atoms(self) -> torch.Tensor:
        """The planted atoms, ``[patterns, channels]``, unit length."""
        return self.mix.weight.data[..., 0, 0].T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mix(self.gate(self.detect(x))))


class ScarceMemoryNet(PatternNet):
    """A :class:`PatternNet` on a device with room for ``room`` images: a bigger batch fails as the CPU
    allocator's out-of-memory error does (to test batch halving where no real memory runs out)."""

    def __init__(self, room: int = 2) -> None:
        super().__init__()
        self.room = room

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.room:
            raise RuntimeError(f"[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                               f"you tried to allocate {len(x) * 2**30} bytes.")
        return super().forward(x)


def pattern_images(model: PatternNet, count: int, contrast: float = 0.12, only: int | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``[N, 3, 32, 32]`` images in ``[0, 1]``: each 8x8 cell is grey with one or two of the model's patterns,
    each at 0.5 to 1.5 times ``contrast`` (or pattern ``only`` in every cell at ``contrast``), and a little noise."""
    generator = generator or torch.Generator().manual_seed(0)
    templates = model.detect.weight.data
    patterns = len(templates)
    images = torch.full((count, 3, 32, 32), 0.5)
    for image in images:
        for row in range(4):
            for column in range(4):
                chosen = [only] if only is not None else torch.randperm(patterns, generator=generator)[
                    :int(torch.randint(1, 3, (1,), generator=generator))].tolist()
                amplitudes = [1.0] if only is not None else (0.5 + torch.rand(len(chosen), generator=generator)).tolist()
                cell = sum(a * templates[p] for a, p in zip(amplitudes, chosen)) / templates[0].abs().max()
                image[:, row * 8:(row + 1) * 8, column * 8:(column + 1) * 8] += contrast * cell
    noise = 0.01 * torch.randn(images.shape, generator=generator)
    return (images + noise).clamp(0, 1)
