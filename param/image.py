"""The image parameterisation the engine optimises: a spatial latent followed by a colour space."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn

from studio.checks import check_seed
from studio.errors import StudioError
from studio.models import resample

from studio.param.colour import ColourSpace
from studio.param.cppn import CppnLatent
from studio.param.fourier import FourierLatent
from studio.param.maco import MacoLatent
from studio.param.pixel import PixelLatent

PARAM_KINDS = ("fourier", "pixel", "maco", "cppn")


class ImageParam(nn.Module):
    """``forward() -> [B, C, *size]`` in ``[0, 1]``; ``set_images`` initialises it from existing images."""

    def __init__(self, latent: nn.Module, colour: ColourSpace) -> None:
        super().__init__()
        self.latent = latent
        self.colour = colour

    def forward(self) -> torch.Tensor:
        return self.colour(self.latent())

    @torch.no_grad()
    def set_images(self, images: torch.Tensor) -> None:
        """Make ``forward()`` return ``images`` (``[B, C, *size]`` in ``[0, 1]``)."""
        self.latent.set_from(self.colour.inverse(images.float()))


def seeds_for(seed: int | Sequence[int] | None, batch: int) -> list[int] | None:
    """Per-image seeds: a list is used as given, an int ``s`` gives ``s, s+1, ..., s+batch-1``; each must be a
    whole number in ``[0, 2**63)`` (they are hashed as 64-bit integers on the device)."""
    if seed is None:
        return None
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        seeds = [check_seed(seed) + i for i in range(batch)]
    elif isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        seeds = list(seed)
    else:
        raise StudioError(f"seed must be a whole number or one per image, not {seed!r}.")
    seeds = [check_seed(s, "each seed") for s in seeds]
    if len(seeds) != batch:
        raise StudioError(f"Got {len(seeds)} seeds for a batch of {batch} images; give one seed per image.")
    return seeds


def _seeded(make: Callable[[int, torch.Generator | None], nn.Module], seeds: list[int] | None, batch: int) -> nn.Module:
    """A latent for the batch whose initial values for image ``i`` come from ``seeds[i]`` alone, so an image
    does not depend on what else is in its batch."""
    latent = make(batch, None)
    if seeds is None:
        return latent
    singles = [dict(make(1, torch.Generator().manual_seed(s)).named_parameters()) for s in seeds]
    with torch.no_grad():
        for name, value in latent.named_parameters():
            value.copy_(torch.cat([single[name] for single in singles]))
    return latent


def _check_init(init, channels: int, dims: int, batch: int) -> None:
    """Starting images must be ``[C, *size]`` or ``[1 or batch, C, *size]`` finite floats with the model's channels."""
    if not isinstance(init, torch.Tensor) or not init.is_floating_point():
        raise StudioError(f"init must be a float tensor of images in [0, 1], not {type(init).__name__}.")
    batched = init.dim() == dims + 2
    if init.dim() not in (dims + 1, dims + 2) or init.shape[-dims - 1] != channels or (
            batched and init.shape[0] not in (1, batch)):
        batches = "1" if batch == 1 else f"1 or {batch}"
        raise StudioError(f"init must be images [{channels}, *size] or [{batches}, {channels}, *size], not of shape "
                          f"{list(init.shape)}.")
    if not torch.isfinite(init).all():
        raise StudioError("init holds NaN or infinite values; start from finite images in [0, 1].")


def image(size: int | tuple[int, ...], batch: int = 1, kind: str = "fourier", decorrelate: bool = True,
          decay_power: float = 1.0, sd: float = 0.01, seed: int | Sequence[int] | None = 0,
          init: torch.Tensor | None = None, device: torch.device | str | None = None,
          magnitude: torch.Tensor | None = None, channels: int = 3, dims: int = 2,
          basis: torch.Tensor | None = None) -> ImageParam:
    """Build an image (or volume) parameterisation.

    ``kind`` is ``"fourier"`` (1/f-scaled spectrum over 2 or 3 frequencies, the default), ``"pixel"``,
    ``"maco"`` (fixed magnitude, optimised phase; ``magnitude`` overrides the 1/f default) or ``"cppn"``
    (2D only). ``size`` is a side (a square, or a cube when ``dims=3``) or the sizes themselves; ``channels``
    any count, decorrelated with ImageNet's basis for RGB, else with ``basis`` (see ``decorrelation_from``) or
    not at all. ``seed`` is one seed per image or an int ``s`` (image ``i`` gets ``s + i``); ``None`` draws
    from torch's global generator. ``init`` (images in ``[0, 1]``, broadcast over the batch) starts from a
    photo instead of noise, e.g. for accentuation.
    """
    shape = (size,) * dims if isinstance(size, int) else tuple(size)
    makers = {
        "fourier": lambda n, g: FourierLatent(n, channels, *shape, sd=sd, decay_power=decay_power, generator=g),
        "pixel": lambda n, g: PixelLatent(n, channels, *shape, sd=sd, generator=g),
        "maco": lambda n, g: MacoLatent(n, channels, *shape, magnitude=magnitude, generator=g),
        "cppn": lambda n, g: CppnLatent(n, channels, *shape, generator=g),
    }
    if kind not in makers:
        raise StudioError(f"Unknown parameterisation {kind!r}: choose one of {', '.join(PARAM_KINDS)}.")
    if kind == "cppn" and len(shape) != 2:
        raise StudioError("The cppn parameterisation draws 2D images only; use fourier or pixel for volumes.")
    if basis is None and channels == 3 and len(shape) == 3:
        basis = torch.eye(3)  # three channels of a volume are not ImageNet colours
    if init is not None:
        _check_init(init, channels, len(shape), batch)
    param = ImageParam(_seeded(makers[kind], seeds_for(seed, batch), batch), ColourSpace(decorrelate, channels, basis))
    if init is not None:
        init = resample((init[None] if init.dim() == len(shape) + 1 else init).float(), shape, antialias=True)
        param.set_images(init.expand(batch, *init.shape[1:]))
    return param.to(device) if device is not None else param
