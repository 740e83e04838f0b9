"""Memory before allocation: what a render or an attribution will need, against what its device has free, so
an oversized request is refused in one sentence naming what fits, instead of being killed by the kernel.

The estimate counts, per image, the outputs of every leaf module the forward runs up to the deepest layer
needed (what autograd keeps for the backward pass), plus the parameterised image with its gradient, Adam's
two moments and the copies the transforms make. ``benchmarks/memory_estimate.py`` compares it with
measured peaks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from studio.errors import MemoryShortage
from studio.models import StudioModel
from studio.targets import module_of

#: Bytes per activation value (float32; bfloat16 autocast keeps many tensors in float32, so no saving is assumed).
VALUE_BYTES = 4
#: Copies of the leaf outputs a forward with gradients keeps at its peak: with one, the whole estimate is
#: 1.15-1.8x the measured CPU peak (EfficientNet-Lite0, ViT-Tiny; ``benchmarks/memory_estimate.py``).
SAVED_COPIES = 1
#: Float copies of the parameterised image per image: latent, gradient, Adam's two moments, the rendered
#: image and its graph, and the transforms' padded, warped and resized images (CPPN: its hidden layers).
IMAGE_COPIES = {"cppn": 8 * 24 * 3, "default": 12}


def free_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can use on ``device``: free CUDA memory plus what PyTorch's cache holds
    unused; on the CPU the kernel's ``MemAvailable`` bounded by the process's cgroup limit (or, off Linux,
    the free physical pages); None when unknown (then nothing is refused)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    known = [value for value in (_meminfo_available(), _cgroup_room()) if value is not None]
    if not known:
        known = [value for value in (_free_pages(),) if value is not None]
    free = min(known) if known else None
    return free if free is None or free > 0 else None


def _meminfo_available() -> int | None:
    """Linux's estimate of memory available without swapping (page cache counts as available)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room() -> int | None:
    """The process's cgroup v2 memory limit minus what the group uses, not counting its reclaimable page
    cache (containers see the host's ``MemAvailable``); None without a limit."""
    try:
        group = next(line.split(":", 2)[2] for line in Path("/proc/self/cgroup").read_text().splitlines()
                     if line.startswith("0::"))
        folder = Path("/sys/fs/cgroup") / group.strip().lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        used = int((folder / "memory.current").read_text())
        stat = dict(line.split() for line in (folder / "memory.stat").read_text().splitlines())
    except (OSError, ValueError, StopIteration):
        return None
    return None if limit == "max" else int(limit) - used + int(stat.get("inactive_file", 0))


def _free_pages() -> int | None:
    """Free physical memory where ``os.sysconf`` knows it (the fallback off Linux)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def activation_bytes(model: StudioModel, keys: Iterable[str], gradients: bool = True) -> int | None:
    """Bytes of activations one image at the model's input size needs to reach the deepest of ``keys``
    (every module when ``keys`` holds the model output ``""``); None when the model's modules cannot be seen
    (TorchScript: only its output is), so no estimate is claimed."""
    order = list(model.output_shapes)
    wanted = [order.index(module_of(model, key)) for key in keys]
    deepest = max(wanted, default=len(order) - 1)
    leaves = {name for name, module in model.module.named_modules() if next(module.children(), None) is None}
    # The shape probe runs one image, so a leading size above 1 is windows or heads of that image: count it all.
    sizes = [math.prod(model.output_shapes[name]) for name in order[:deepest + 1] if name in leaves and name]
    if not sizes:
        return None
    values = sum(sizes) * SAVED_COPIES if gradients else 2 * max(sizes)
    return (values + math.prod(model.spec.size) * model.spec.channels * 4) * VALUE_BYTES


def image_bytes(model: StudioModel, size: int, param: str) -> int:
    """Bytes one parameterised image of side ``size`` needs while it is optimised."""
    pixels = size ** model.spec.dims
    if param == "cppn":  # its hidden layers, whatever the channel count
        return pixels * IMAGE_COPIES["cppn"] * VALUE_BYTES
    return pixels * model.spec.channels * IMAGE_COPIES["default"] * VALUE_BYTES


def gigabytes(count: float) -> str:
    """A byte count as people read it: ``1.5 GB`` or ``36 MB``."""
    return f"{count / 2**30:.1f} GB" if count >= 2**29 else f"{count / 2**20:.0f} MB"


def largest_fitting(per_image: float, free: float) -> int:
    """How many images of ``per_image`` bytes fit into ``free``."""
    return int(free // max(per_image, 1.0))


def check_render(model: StudioModel, keys: Iterable[str], batch: int, size: int, param: str, crops: int = 1) -> None:
    """Refuse (:class:`MemoryShortage`) a render of ``batch`` images of side ``size``, each seen through
    ``crops`` boxes a step, that would not fit the model's device, naming the largest batch, or the largest
    size, that would."""
    free = free_bytes(model.device)
    model_part = activation_bytes(model, list(keys))
    if free is None or model_part is None:
        return
    model_part *= crops
    per_image = model_part + image_bytes(model, size, param)
    fits = largest_fitting(per_image, free)
    if fits >= batch:
        return
    where = f"{model.device.type} has {gigabytes(free)} free"
    if fits >= 1:
        raise MemoryShortage(f"{batch} images of {size} px need about {gigabytes(per_image * batch)} but {where}; "
                             f"render at most {fits} at once (fewer targets, or a smaller size).", fits)
    if model_part >= free:
        raise MemoryShortage(f"One image needs {gigabytes(model_part)} of activations at the model's input "
                             f"{model.spec.describe()} but {where}; give a smaller input size.", 0)
    side = size
    while side > 8 and model_part + image_bytes(model, side, param) > free:
        side = int(side * 0.9)
    raise MemoryShortage(f"One image of {size} px needs about {gigabytes(per_image)} but {where}; render one "
                         f"image at a time at about {side} px or less.", 0)


def fitting_chunk(model: StudioModel, keys: Iterable[str], wanted: int) -> int:
    """The largest number of forward-and-backward passes up to ``wanted`` that fits at once (chunk sizes do
    not change gradient attributions, only their memory); none fitting is one sentence."""
    free = free_bytes(model.device)
    per_image = activation_bytes(model, list(keys))
    if free is None or per_image is None:
        return wanted
    fits = largest_fitting(per_image, free)
    if fits < 1:
        raise MemoryShortage(f"One image needs {gigabytes(per_image)} of activations at the model's input "
                             f"{model.spec.describe()} but {model.device.type} has {gigabytes(free)} free; give a "
                             "smaller input size.", 0)
    return min(wanted, fits)

