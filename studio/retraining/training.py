"""Training from scratch for remove-and-retrain: the model factories a spec can name, one seeded training
recipe (the same seed gives the same weights), and test accuracy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from studio.checks import check_number
from studio.errors import StudioError

#: A fresh, untrained network for ``(channels, classes)``.
Factory = Callable[[int, int], nn.Module]
#: The user's own training: ``train(net, images, labels, recipe, seed)`` trains ``net`` in place.
TrainFunction = Callable[[nn.Module, torch.Tensor, torch.Tensor, "Recipe", int], None]
OPTIMISERS = ("adam", "sgd")


@dataclass(frozen=True)
class Recipe:
    """How every network of a benchmark is trained: epochs, batch size, optimiser, learning rate, weight decay
    and the seed (of the weights' start and of the shuffling; repeat ``r`` uses ``seed + r``)."""

    epochs: int = 10
    batch: int = 64
    optimiser: str = "adam"
    lr: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("epochs", self.epochs, int, minimum=1, maximum=10_000)
        check_number("batch", self.batch, int, minimum=1, maximum=65_536)
        check_number("lr", self.lr, positive=True, maximum=10)
        check_number("weight_decay", self.weight_decay, minimum=0, maximum=1)
        check_number("seed", self.seed, int, minimum=0, maximum=2**31 - 1)
        if self.optimiser not in OPTIMISERS:
            raise StudioError(f"Unknown optimiser {self.optimiser!r}; use {' or '.join(OPTIMISERS)}.")

    def as_dict(self) -> dict:
        return asdict(self)


def demo_cnn(channels: int, classes: int) -> nn.Module:
    """A small CNN (two 3 x 3 convolutions, pooled to a 4 x 4 grid, a linear head) that learns the demo set in
    seconds on a CPU. The head sees where a feature is, as the demo's label needs."""
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(32 * 16, classes))


def named_factory(name: str) -> Factory:
    """``demo-cnn``, ``timm:<architecture>`` or ``torchvision:<architecture>``, built untrained for the data's
    channels and classes (a ``file.py:function`` factory is the caller's to load: it runs code)."""
    if name == "demo-cnn":
        return demo_cnn
    kind, _, architecture = name.partition(":")
    if kind == "timm" and architecture:
        import timm

        if architecture not in timm.list_models():
            raise StudioError(f"timm has no architecture {architecture!r}.")
        return lambda channels, classes: timm.create_model(architecture, pretrained=False, num_classes=classes,
                                                           in_chans=channels)
    if kind == "torchvision" and architecture:
        import torchvision

        if architecture not in torchvision.models.list_models():
            raise StudioError(f"torchvision has no architecture {architecture!r}.")

        def build(channels: int, classes: int) -> nn.Module:
            if channels != 3:
                raise StudioError(f"torchvision:{architecture} takes RGB images, not {channels} channels; "
                                  "use a timm architecture (in_chans) or your own factory.")
            return torchvision.models.get_model(architecture, weights=None, num_classes=classes)
        return build
    raise StudioError(f"Unknown model factory {name!r}; use demo-cnn, timm:<name>, torchvision:<name> or "
                      "file.py:function.")


def _fit(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, seed: int) -> None:
    """Cross-entropy training with the recipe's optimiser, shuffled by a generator of ``seed``."""
    parameters = [p for p in net.parameters() if p.requires_grad]
    optimiser = (torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)
                 if recipe.optimiser == "adam" else
                 torch.optim.SGD(parameters, lr=recipe.lr, momentum=0.9, weight_decay=recipe.weight_decay))
    generator = torch.Generator().manual_seed(seed)
    device = next(net.parameters()).device
    net.train()
    for _ in range(recipe.epochs):
        for batch in torch.randperm(len(images), generator=generator).split(recipe.batch):
            loss = nn.functional.cross_entropy(net(images[batch].to(device)), labels[batch].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()


def train(factory: Factory, images: torch.Tensor, labels: torch.Tensor, classes: int, recipe: Recipe, seed: int,
          device: torch.device | str = "cpu", train_function: TrainFunction | None = None) -> nn.Module:
    """A network from ``factory`` trained from scratch on ``images`` (``[N, C, H, W]``) and ``labels``, its start
    drawn from ``seed`` (the global RNG is left as it was), in eval mode. The same arguments give the same
    weights on one device (a CPU is deterministic; on a GPU only with deterministic kernels)."""
    with torch.random.fork_rng(devices=[]):  # dropout and the like draw from the global RNG: seeded too
        torch.manual_seed(seed)
        net = factory(images.shape[1], classes)
        if not isinstance(net, nn.Module):
            raise StudioError(f"The model factory returned {type(net).__name__}, not an nn.Module.")
        net = net.to(device)
        (train_function or _fit)(net, images, labels, recipe, seed)
    return net.eval()


def accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    """The fraction of ``images`` whose top class is their label."""
    device = next(net.parameters()).device
    with torch.no_grad():
        correct = sum(int((net(part.to(device)).argmax(1).cpu() == truth).sum())
                      for part, truth in zip(images.split(batch), labels.split(batch)))
    return correct / len(labels)
