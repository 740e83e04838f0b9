"""Shared fixtures: the embedded model (loaded once), natural photos from scikit-image, hook checks."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.io import from_uint8

torch.set_num_threads(max(1, torch.get_num_threads()))

NATURAL_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina", "colorwheel",
                  "hubble_deep_field")


@pytest.fixture(scope="session")
def lite0() -> studio.StudioModel:
    """EfficientNet-Lite0 with its real ImageNet weights, on the CPU."""
    return studio.load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def photos() -> dict[str, torch.Tensor]:
    """The RGB photos that ship with scikit-image, as ``[3, H, W]`` floats in ``[0, 1]``."""
    import skimage.data

    return {name: from_uint8(getattr(skimage.data, name)()) for name in NATURAL_IMAGES}


def hook_count(module: torch.nn.Module) -> int:
    """Forward, pre-forward and backward hooks left on any submodule."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in module.modules())
