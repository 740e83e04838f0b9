"""Memory before allocation: what a render or an attribution will need, against what its device has free, so
an oversized request is refused in one sentence naming what fits, instead of being killed by the kernel.

The estimate counts, per image, the outputs of every leaf module the forward runs up to the deepest layer
needed (what autograd keeps for the backward pass), plus the parameterised image with its gradient, Adam's
two moments and the copies the transforms make. ``benchmarks/memory_estimate.py`` compares it with
measured peaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from studio.errors import MemoryShortage
from studio.models import StudioModel
from studio.targets import module_of

#: Bytes per activation value (float32; bfloat16 autocast keeps many tensors in float32, so no saving is assumed).
VALUE_BYTES = 4
#: Copies of the leaf outputs a forward with gradients keeps at its peak: with one, the whole estimate is
#: 1.2-1.8x the measured CPU peak (EfficientNet-Lite0, ViT-Tiny; ``benchmarks/memory_estimate.py``).
SAVED_COPIES = 1
#: Float copies of the parameterised image per image: latent, gradient, Adam's two moments, the rendered
#: image and its graph, and the transforms' padded, warped and resized images (CPPN: its hidden layers).
IMAGE_COPIES = {"cppn": 8 * 24 * 3, "default": 12}


def free_bytes(device: torch.device) -> int | None:
    """Memory a new allocation can use on ``device``: free CUDA memory plus what PyTorch's cache holds
    unused; on the CPU the kernel's ``MemAvailable`` (bounded by a cgroup limit); None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type != "cpu":
        return None
    available = _meminfo_available()
    limit = _cgroup_room()
    known = [value for value in (available, limit) if value is not None]
    return min(known) if known else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room() -> int | None:
    """A cgroup v2 memory limit minus what the group uses (containers see the host's ``MemAvailable``)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) - used


def activation_bytes(model: StudioModel, keys: Iterable[str], gradients: bool = True) -> int:
    """Bytes of activations one image at the model's input size needs to reach the deepest of ``keys``
    (every module when ``keys`` holds the model output ``""``)."""
    order = list(model.output_shapes)
    wanted = [order.index(module_of(model, key)) for key in keys]
    deepest = max(wanted, default=len(order) - 1)
    leaves = {name for name, module in model.module.named_modules() if next(module.children(), None) is None}
    sizes = [_numel(model.output_shapes[name][1:]) for name in order[:deepest + 1] if name in leaves]
    sizes = sizes or [_numel(model.output_shapes[order[deepest]][1:])]
    values = sum(sizes) * SAVED_COPIES if gradients else 2 * max(sizes)
    return (values + _numel(model.spec.size) * model.spec.channels * 4) * VALUE_BYTES


def image_bytes(model: StudioModel, size: int, param: str) -> int:
    """Bytes one parameterised image of side ``size`` needs while it is optimised."""
    values = model.spec.channels * size ** model.spec.dims
    return values * IMAGE_COPIES.get(param, IMAGE_COPIES["default"]) * VALUE_BYTES


def _numel(shape: Iterable[int]) -> int:
    count = 1
    for side in shape:
        count *= side
    return count


def gigabytes(count: float) -> str:
    return f"{count / 2**30:.1f} GB" if count >= 2**29 else f"{count / 2**20:.0f} MB"


def largest_fitting(per_image: float, free: float) -> int:
    """How many images of ``per_image`` bytes fit into ``free``."""
    return int(free // max(per_image, 1.0))


def check_render(model: StudioModel, keys: Iterable[str], batch: int, size: int, param: str) -> None:
    """Refuse (:class:`MemoryShortage`) a render of ``batch`` images of side ``size`` that would not fit the
    model's device, naming the largest batch, or the largest size, that would."""
    free = free_bytes(model.device)
    if free is None:
        return
    keys = list(keys)
    model_part = activation_bytes(model, keys)
    per_image = model_part + image_bytes(model, size, param)
    fits = largest_fitting(per_image, free)
    if fits >= batch:
        return
    where = f"{model.device.type} has {gigabytes(free)} free"
    need = f"about {gigabytes(per_image * batch)}"
    if fits >= 1:
        raise MemoryShortage(f"{batch} images of {size} px need {need} but {where}; render at most {fits} at once "
                             "(fewer targets, or a smaller size).", fits)
    if model_part >= free:
        raise MemoryShortage(f"One image needs {gigabytes(model_part)} of activations at the model's input "
                             f"{model.spec.describe()} but {where}; give a smaller input size.", 0)
    side = size
    while side > 8 and model_part + image_bytes(model, side, param) > free:
        side = int(side * 0.9)
    raise MemoryShortage(f"One image of {size} px needs {need} but {where}; the largest size that fits is about "
                         f"{side} px.", 0)


def fitting_chunk(model: StudioModel, keys: Iterable[str], wanted: int) -> int:
    """The largest number of forward-and-backward passes up to ``wanted`` that fits at once (chunk sizes do
    not change gradient attributions, only their memory); none fitting is one sentence."""
    free = free_bytes(model.device)
    if free is None:
        return wanted
    per_image = activation_bytes(model, list(keys))
    fits = largest_fitting(per_image, free)
    if fits < 1:
        raise MemoryShortage(f"One image needs {gigabytes(per_image)} of activations at the model's input "
                             f"{model.spec.describe()} but {model.device.type} has {gigabytes(free)} free; give a "
                             "smaller input size.", 0)
    return min(wanted, fits)

