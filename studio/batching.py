"""Batch sizes that fit the device: a one-step memory probe picks the GPU size, the memory estimate shrinks
a batch that would not fit, and an out-of-memory error halves the batch that failed and retries it. Used by
the gallery and the throughput benchmark."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

from studio.engine import render
from studio.errors import MemoryShortage, StudioError
from studio.models import StudioModel
from studio.settings import RenderSettings
from studio.targets import Target, parse_target

#: Default batch on the CPU, where a bigger batch only costs memory (the time per image stays the same).
CPU_BATCH = 8
#: Largest automatic GPU batch, and the share of GPU memory the automatic size aims to fill.
MAX_AUTO_BATCH = 256
MEMORY_FRACTION = 0.8

R = TypeVar("R")


class Batcher:
    """Render lists of items in batches of at most ``size``. A batch the memory estimate refuses
    (:class:`MemoryShortage`) shrinks to what it says fits; an out-of-memory error (CUDA, or the CPU
    allocator) halves the batch that failed; both retry down to one item and keep the smaller size."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.halvings: list[tuple[int, int]] = []

    def run(self, items: Sequence, render_batch: Callable[[list], R]) -> Iterator[tuple[list, R]]:
        remaining = list(items)
        while remaining:
            part = remaining[:self.size]
            try:
                result = render_batch(part)
            except MemoryShortage as shortage:
                if len(part) == 1 or shortage.fits < 1:
                    raise
                smaller = shortage.fits
            except RuntimeError as error:  # CUDA's OutOfMemoryError is one
                if not _out_of_memory(error):
                    raise
                if len(part) == 1:
                    raise StudioError("Out of memory with a batch of one image; lower the image size or free "
                                      "the device's memory.") from None
                smaller = (len(part) + 1) // 2
            else:
                smaller = 0
            if smaller:  # outside the except block, so the failed attempt's tensors can be freed
                release_memory()
                self.size = smaller
                self.halvings.append((len(part), self.size))
                continue
            del remaining[:len(part)]
            yield part, result


def _out_of_memory(error: BaseException) -> bool:
    """CUDA's out-of-memory error, or the CPU allocator's (a plain ``RuntimeError``)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "can't allocate memory" in str(error) \
        or "not enough memory" in str(error)


def release_memory() -> None:
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def batch_for_memory(total: int, used: int, per_image: float, fraction: float = MEMORY_FRACTION,
                     cap: int = MAX_AUTO_BATCH) -> int:
    """The largest power of two of images of ``per_image`` bytes that fits ``fraction`` of ``total`` beside ``used``."""
    count = int((total * fraction - used) // max(per_image, 1.0))
    return 1 if count < 1 else min(cap, 1 << (count.bit_length() - 1))


def auto_batch_size(model: StudioModel, targets: Sequence[str | Target], settings: RenderSettings) -> int:
    """A batch size from a one-step probe of the deepest of ``targets`` (GPU), or ``CPU_BATCH`` on the CPU.

    The probe measures peak memory per image, so the size depends only on the model, settings and the
    device's total memory: the same job on the same GPU batches (and so renders) the same way.
    """
    device = model.device
    if device.type != "cuda":
        return CPU_BATCH
    order = {name: index for index, name in enumerate(model.layer_shapes)}
    parsed = [parse_target(t, model) for t in targets]
    deepest = max(parsed, key=lambda target: order.get(target.layer, -1))
    release_memory()
    torch.cuda.reset_peak_memory_stats(device)
    used = torch.cuda.memory_allocated(device)
    probe = 2 if deepest.channel is not None else 1
    render(model, [deepest] * probe, settings, steps=1)
    per_image = (torch.cuda.max_memory_allocated(device) - used) / probe
    release_memory()
    return batch_for_memory(torch.cuda.get_device_properties(device).total_memory, used, per_image)
