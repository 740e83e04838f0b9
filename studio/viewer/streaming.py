"""The Qt-free core of the napari studio: what to render (from the widget's fields), the generator its
worker thread runs, attribution jobs, and conversions between napari layer data and image tensors.

Nothing here imports napari or Qt, so it runs (and is tested) without a display.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from studio.engine import RenderResult, optimize
from studio.errors import StudioError
from studio.io import from_uint8
from studio.models import StudioModel
from studio.targets import LOGITS, OUTPUT, parse_target

#: Objective kinds the widget offers: a channel's mean, one neuron of a channel, a whole layer (DeepDream).
KINDS = ("channel", "neuron", "layer")
#: Attribution methods, in the order the widget lists them.
METHODS = ("gradcam", "gradcam++", "saliency", "smoothgrad", "integrated_gradients", "gradient_x_input")
#: What an attribution explains: the top class, the unit being visualised, or a class named by the user.
ATTRIBUTION_TARGETS = ("top class", "visualised unit", "class")
#: Allowed (min, max) of the widget's numeric fields, checked by ``studio view`` before a window opens.
FIELD_RANGES = {"steps": (1, 100_000), "size": (16, 2048), "count": (1, 256), "seed": (0, 2**31 - 1)}


class WorkerError(Exception):
    """A failure inside a worker thread, carried as a plain ``Exception``.

    superqt's generator worker treats a ``RuntimeError`` from the generator as "worker deleted": it warns
    and returns before emitting ``errored`` or ``finished``, so the UI would hang. Every torch failure
    (CUDA out of memory, shape or device mismatch) is a ``RuntimeError``, so the worker re-raises as this.
    """


def explain(error: BaseException) -> str:
    """One sentence for the user about an exception raised while rendering or attributing."""
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return ("Out of memory: lower the image size or the number of channels at once, "
                "or pick the CPU as device.")
    if isinstance(error, (StudioError, WorkerError)):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'no message'}"


def layer_name(layer: str) -> str:
    """How a module path is shown to users (the model output is ``logits``)."""
    return LOGITS if layer == OUTPUT else layer


@dataclass
class RenderRequest:
    """What the render half of the widget asks for.

    ``unit`` is a channel number, or for ``logits`` a class index or label. ``count`` consecutive units
    starting at ``unit`` render as one batch (a stack with the unit on napari's slider axis).
    """

    layer: str = "blocks.4"
    kind: str = "channel"
    unit: str | int = 0
    count: int = 1
    position: tuple[int, int] | None = None
    param: str = "fourier"
    steps: int = 256
    size: int = 128
    seed: int = 0
    every: int = 4
    lr: float = 0.05

    def first_unit(self, model: StudioModel) -> int:
        """The index of the first unit (a class label is looked up in the model's class names)."""
        text = str(self.unit).strip().strip("\"'")
        if text.lstrip("-").isdigit():
            return int(text)
        if self.layer not in (LOGITS, OUTPUT):
            raise StudioError(f"Channel {text!r} is not a number; class names apply to the 'logits' layer only.")
        return model.class_index(text)

    def targets(self, model: StudioModel) -> list[str]:
        """The validated target strings, one per image (``StudioError`` names what to fix)."""
        if self.kind not in KINDS:
            raise StudioError(f"Unknown objective kind {self.kind!r}; choose one of {', '.join(KINDS)}.")
        if self.kind == "layer":
            parse_target(self.layer, model)
            return [self.layer]
        first, count = self.first_unit(model), max(1, int(self.count))
        suffix = ""
        if self.kind == "neuron":
            if self.position is None:
                raise StudioError("A neuron objective needs a position: set its row and column.")
            suffix = f"@{self.position[0]},{self.position[1]}"
        targets = [f"{self.layer}:{first + i}{suffix}" for i in range(count)]
        parse_target(targets[0], model)
        if count > 1:
            channels = model.layer_shapes[parse_target(targets[0], model).layer][0]
            if first + count > channels:
                raise StudioError(f"{self.layer!r} has channels 0 to {channels - 1}: render at most "
                                  f"{channels - first} channels from {first}, or start lower.")
            parse_target(targets[-1], model)
        return targets

    def label(self, model: StudioModel) -> str:
        """A short layer name for napari: ``blocks.4:12``, ``blocks.4:12-15``, ``logits:Egyptian cat``."""
        if self.kind == "layer":
            return self.layer
        first = self.first_unit(model)
        unit = str(first) if self.count <= 1 else f"{first}-{first + self.count - 1}"
        if self.layer in (LOGITS, OUTPUT) and model.class_names and self.count <= 1:
            unit = model.class_label(first)
        where = f"@{self.position[0]},{self.position[1]}" if self.kind == "neuron" and self.position else ""
        return f"{self.layer}:{unit}{where}"

    def settings(self) -> dict:
        """Keyword arguments for :func:`studio.optimize`."""
        return {"steps": int(self.steps), "size": int(self.size), "param": self.param, "seed": int(self.seed),
                "lr": float(self.lr)}


@dataclass
class Frame:
    """What the worker yields each step: progress, the per-image objective and, every ``every`` steps
    and at the end, the images as ``[B, H, W, 3]`` float32 (an owned CPU copy napari can display)."""

    step: int
    steps: int
    values: np.ndarray
    images: np.ndarray | None
    seconds: float
    done: bool = False
    stopped: bool = False
    result: RenderResult | None = None

    @property
    def steps_per_second(self) -> float:
        return self.step / self.seconds if self.seconds > 0 else 0.0


def to_napari(images: torch.Tensor) -> np.ndarray:
    """``[B, 3, H, W]`` float in ``[0, 1]`` to a contiguous ``[B, H, W, 3]`` float32 array."""
    return np.ascontiguousarray(images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy())


def stream(model: StudioModel, targets: Sequence[str], *, every: int = 4, lock: threading.Lock | None = None,
           stop: threading.Event | None = None, **settings) -> Iterator[Frame]:
    """Run :func:`studio.optimize` and yield a :class:`Frame` after every step; return the last frame.

    One yield per step keeps cancellation responsive: ``stop`` (or the worker's ``quit``) takes effect
    within a step. Images travel only every ``every`` steps, at the end and when stopped. ``lock`` is
    held during each step, so another thread (an attribution) never shares the model mid-forward.
    Hooks exist only inside a step, so stopping between steps leaves none behind.
    """
    guard = lock if lock is not None else nullcontext()
    every = max(1, int(every))
    engine = optimize(model, list(targets), snapshot_every=1, **settings)
    start = time.perf_counter()
    last = latest = None
    try:
        while True:
            if stop is not None and stop.is_set():
                if last is None:
                    return None
                return Frame(last.step, last.steps, last.values.numpy(), to_napari(last.images),
                             time.perf_counter() - start, stopped=True)
            with guard, torch.enable_grad():
                last = next(engine, None)
            if last is None:
                return latest
            show = last.done or last.step % every == 0
            latest = Frame(last.step, last.steps, last.values.numpy(), to_napari(last.images) if show else None,
                           time.perf_counter() - start, done=last.done, result=last.result)
            yield latest
            if last.done:
                return latest
    except RuntimeError as error:
        raise WorkerError(explain(error)) from error
    finally:
        engine.close()  # optimize yields outside its contexts: closing it touches no model state, needs no lock


def images_from_layer(data, rgb: bool, contrast_limits: Sequence[float] | None = None) -> torch.Tensor:
    """napari image data (``[..., H, W, 3|4]`` RGB(A) or ``[..., H, W]`` grey) to ``[B, 3, H, W]`` in ``[0, 1]``.

    uint8/uint16 scale by their range; float RGB is taken as ``[0, 1]``; float grey is scaled by the
    layer's contrast limits. Leading dimensions (a stack) become the batch.
    """
    array = np.asarray(data)
    if rgb:
        if array.ndim < 3 or array.shape[-1] not in (3, 4):
            raise StudioError(f"An RGB layer needs shape [..., H, W, 3], not {list(array.shape)}.")
        spatial = array.shape[-3:-1]
        stack = array.reshape(-1, *spatial, array.shape[-1])
    else:
        if array.ndim < 2:
            raise StudioError(f"An image layer needs at least 2 dimensions, not shape {list(array.shape)}.")
        spatial = array.shape[-2:]
        stack = array.reshape(-1, *spatial)
        if np.issubdtype(stack.dtype, np.floating) and contrast_limits is not None:
            low, high = float(contrast_limits[0]), float(contrast_limits[1])
            stack = np.clip((stack - low) / max(high - low, 1e-12), 0, 1).astype(np.float32)
    if np.issubdtype(stack.dtype, np.floating):
        stack = np.clip(stack, 0, 1).astype(np.float32)
    elif stack.dtype not in (np.uint8, np.uint16):
        stack = np.clip(stack, 0, 255).astype(np.uint8)
    return torch.stack([from_uint8(image) for image in stack])


@dataclass
class Heatmap:
    """An attribution result: ``maps`` ``[B, H, W]`` float32 and a label naming method and target."""

    maps: np.ndarray
    method: str
    target_label: str


def attribute_images(model: StudioModel, images: torch.Tensor, method: str,
                     targets: Sequence[str | int | None], lock: threading.Lock | None = None) -> Heatmap:
    """Heat maps for a batch of images (:func:`studio.attribution.attribute`); ``targets`` holds one target
    for all images or one per image, ``None`` meaning each image's top class."""
    from studio.attribution import explain as explain_attribution

    guard = lock if lock is not None else nullcontext()
    targets = list(targets)
    try:
        with guard:
            result = explain_attribution(model, images, targets[0] if len(targets) == 1 else targets, method)
    except RuntimeError as error:
        raise WorkerError(explain(error)) from error
    names = list(dict.fromkeys(_short_target(name) for name in result.targets))
    label = ("top class " if targets == [None] else "") + (names[0] if len(names) == 1 else f"{names[0]} ...")
    return Heatmap(result.maps.detach().float().cpu().numpy(), result.method, label)


def _short_target(description: str) -> str:
    """``logits:285 "Egyptian cat"`` -> ``Egyptian cat``; unit targets stay as they are."""
    match = re.fullmatch(r'logits:\d+ "(.*)"', description)
    return match[1] if match else description
