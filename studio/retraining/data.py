"""The data of a remove-and-retrain benchmark: a train and a test set in memory, the demo set whose label lives
only in a known square, an ``ImageFolder`` folder, and the degraded copies ROAR and KAR train on.

Degrading follows Hooker et al. 2019: the pixels an estimate ranks in its top fraction ``t`` (all channels of
a pixel together) are replaced by the training set's per-channel mean (ROAR), or every pixel but those (KAR).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from kornia.filters import sobel

from studio.attribution.faithfulness import noisy_linear_impute
from studio.errors import StudioError
from studio.io import fit, read_input

#: How removed pixels are filled: the training mean (ROAR as published), or ROAD's noisy linear imputation.
FILLS = ("mean", "impute")
#: Image file suffixes a dataset folder's class folders are read for.
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Dataset:
    """Train and test images ``[N, C, H, W]`` in ``[0, 1]`` with their labels ``[N]``, the class names and a
    description for the provenance record."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    description: str

    @property
    def chance(self) -> float:
        """The test accuracy of always guessing the most frequent test class."""
        return float(torch.bincount(self.test_labels, minlength=len(self.classes)).max()) / len(self.test_labels)


def demo_region(size: int) -> tuple[slice, slice]:
    """Where the demo set's label lives: the square of side ``size // 3`` at the top left."""
    side = size // 3
    return slice(0, side), slice(0, side)


def _gratings(count: int, size: int, vertical: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[count, size, size]`` sine gratings in ``[0.15, 0.85]``, vertical stripes where ``vertical``, of random
    period (3 to 6 px) and phase."""
    period = 3 + 3 * torch.rand(count, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(count, 1, 1, generator=generator)
    axis = torch.arange(size, dtype=torch.float32)
    along = torch.where(vertical.view(-1, 1, 1), axis.view(1, 1, -1).expand(count, size, size),
                        axis.view(1, -1, 1).expand(count, size, size))
    return 0.5 + 0.35 * torch.sin(2 * math.pi * along / period + phase)


def demo_dataset(train: int = 512, test: int = 256, size: int = 24, seed: int = 0) -> Dataset:
    """Grey images whose class is the orientation of the grating in :func:`demo_region` (0: horizontal stripes,
    1: vertical); everywhere else a grating of random orientation with the same contrast, plus noise, so edges
    are everywhere and only that square tells the classes apart."""
    generator = torch.Generator().manual_seed(seed)
    count = train + test
    labels = torch.randint(0, 2, (count,), generator=generator)
    images = _gratings(count, size, torch.rand(count, generator=generator) < 0.5, generator)
    rows, columns = demo_region(size)
    images[:, rows, columns] = _gratings(count, size, labels == 1, generator)[:, rows, columns]
    images = (images + 0.08 * torch.randn(count, size, size, generator=generator)).clamp(0, 1)[:, None]
    return Dataset(images[:train], labels[:train], images[train:], labels[train:], ["horizontal", "vertical"],
                   f"demo: {train} + {test} grey {size} px gratings, label in the top-left {size // 3} px square")


def _read_split(folder: Path, classes: list[str], channels: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in SUFFIXES)
        for path in files:
            images.append(fit(read_input(path, channels), (size, size)))
            labels.append(label)
    if not images:
        raise StudioError(f"{str(folder)!r} holds no images in its class folders ({', '.join(classes)}).")
    return torch.stack(images), torch.tensor(labels)


def folder_dataset(folder: str | os.PathLike, size: int, channels: int = 3) -> Dataset:
    """A folder in ``ImageFolder`` layout with ``train/`` and ``test/`` (or ``val/``, as Imagenette has it) beside
    each other, one subfolder per class in each (the same class names), every image fitted to ``size`` px
    (centre crop)."""
    root = Path(folder)
    splits = [root / "train", next((root / name for name in ("test", "val") if (root / name).is_dir()), root / "test")]
    missing = [str(split) for split in splits if not split.is_dir()]
    if missing:
        raise StudioError(f"A dataset folder needs train/ and test/ (or val/) subfolders, one folder per class in "
                          f"each; {', '.join(map(repr, missing))} is missing.")
    classes = sorted(p.name for p in splits[0].iterdir() if p.is_dir())
    if len(classes) < 2 or classes != sorted(p.name for p in splits[1].iterdir() if p.is_dir()):
        raise StudioError(f"{str(root)!r}: train/ and test/ must hold the same class folders (two or more).")
    train_images, train_labels = _read_split(splits[0], classes, channels, size)
    test_images, test_labels = _read_split(splits[1], classes, channels, size)
    return Dataset(train_images, train_labels, test_images, test_labels, classes,
                   f"{root.name}: {len(train_labels)} + {len(test_labels)} images, {len(classes)} classes, {size} px")


def degrade(images: torch.Tensor, maps: torch.Tensor, fraction: float, keep: bool, means: torch.Tensor,
            fill: str = "mean", seed: int = 0) -> torch.Tensor:
    """``images`` ``[N, C, H, W]`` with the top ``fraction`` of each one's pixels by ``maps`` ``[N, H, W]``
    replaced (ROAR), or every other pixel replaced (KAR, ``keep``): by ``means`` ``[C]`` (``fill="mean"``,
    Hooker et al.), or by ROAD's noisy linear imputation from the neighbours (``fill="impute"``, Rong et al.
    2022, whose noise, drawn from ``seed``, keeps the replaced pixels' places from telling the class)."""
    if fill not in FILLS:
        raise StudioError(f"Unknown fill {fill!r}; use {' or '.join(FILLS)}.")
    count = round(fraction * maps[0].numel())
    order = torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)
    chosen = torch.zeros_like(maps.flatten(1), dtype=torch.bool)
    chosen.scatter_(1, order[:, :count], True)
    replaced = (~chosen if keep else chosen).view(len(images), 1, *images.shape[2:])
    if fill == "mean":
        return torch.where(replaced, means.view(1, -1, 1, 1).to(images), images)
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([noisy_linear_impute(image, mask[0], generator=generator).clamp(0, 1)
                        for image, mask in zip(images, replaced)])


def channel_means(images: torch.Tensor) -> torch.Tensor:
    """The per-channel mean ``[C]`` of images ``[N, C, H, W]``: what a removed pixel becomes."""
    return images.mean(dim=(0, 2, 3))


def sobel_maps(images: torch.Tensor) -> torch.Tensor:
    """A model-independent control: the Sobel edge magnitude of each image's channel mean ``[N, H, W]``."""
    return sobel(images.mean(1, keepdim=True))[:, 0]


def random_maps(count: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """The chance control: uniform random maps ``[count, *size]``, a fixed draw per seed."""
    return torch.rand((count, *size), generator=torch.Generator().manual_seed(seed))
