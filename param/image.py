"""The image parameterisation the engine optimises: a spatial latent followed by a colour space."""

from __future__ import annotations

import torch
from torch import nn

from studio.param.colour import ColourSpace
from studio.param.cppn import CppnLatent
from studio.param.fourier import FourierLatent
from studio.param.maco import MacoLatent
from studio.param.pixel import PixelLatent

PARAM_KINDS = ("fourier", "pixel", "maco", "cppn")


class ImageParam(nn.Module):
    """``forward() -> [B, 3, H, W]`` in ``[0, 1]``; ``set_images`` initialises it from existing images."""

    def __init__(self, latent: nn.Module, colour: ColourSpace) -> None:
        super().__init__()
        self.latent = latent
        self.colour = colour

    def forward(self) -> torch.Tensor:
        return self.colour(self.latent())

    @torch.no_grad()
    def set_images(self, images: torch.Tensor) -> None:
        """Make ``forward()`` return ``images`` (``[B, 3, H, W]`` or ``[3, H, W]`` in ``[0, 1]``)."""
        self.latent.set_from(self.colour.inverse(images.float()))


def image(size: int | tuple[int, int], batch: int = 1, kind: str = "fourier", decorrelate: bool = True,
          decay_power: float = 1.0, sd: float = 0.01, seed: int | None = 0,
          init: torch.Tensor | None = None, device: torch.device | str | None = None,
          magnitude: torch.Tensor | None = None) -> ImageParam:
    """Build an image parameterisation.

    ``kind`` is ``"fourier"`` (1/f-scaled spectrum, the default), ``"pixel"``, ``"maco"`` (fixed magnitude,
    optimised phase; ``magnitude`` overrides the 1/f default) or ``"cppn"``. ``init`` (images in ``[0, 1]``,
    broadcast over the batch) starts from a photo instead of noise, e.g. for accentuation.
    """
    height, width = (size, size) if isinstance(size, int) else size
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if kind == "fourier":
        latent: nn.Module = FourierLatent(batch, 3, height, width, sd=sd, decay_power=decay_power,
                                          generator=generator)
    elif kind == "pixel":
        latent = PixelLatent(batch, 3, height, width, sd=sd, generator=generator)
    elif kind == "maco":
        latent = MacoLatent(batch, 3, height, width, magnitude=magnitude, generator=generator)
    elif kind == "cppn":
        latent = CppnLatent(batch, 3, height, width, generator=generator)
    else:
        raise ValueError(f"Unknown parameterisation {kind!r}: choose one of {', '.join(PARAM_KINDS)}.")
    param = ImageParam(latent, ColourSpace(decorrelate))
    if init is not None:
        init = init[None] if init.dim() == 3 else init
        init = torch.nn.functional.interpolate(init.float(), size=(height, width), mode="bilinear",
                                               align_corners=False, antialias=True)
        param.set_images(init.expand(batch, -1, -1, -1))
    return param.to(device) if device is not None else param
