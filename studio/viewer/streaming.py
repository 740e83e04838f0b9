"""The Qt-free core of the napari studio: the viewer's own fields, what to render (from the panel's fields),
the generator its worker thread runs, attribution jobs, and conversions between napari layer data and
image tensors.

Nothing here imports napari or Qt, so it runs (and is tested) without a display.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from studio.attribution import CAM_METHODS
from studio.attribution import METHODS as ATTRIBUTION_METHODS
from studio.attribution import explain
from studio.engine import RenderResult, optimize
from studio.errors import StudioError
from studio.io import from_uint8
from studio.models import StudioModel
from studio.settings import RenderSettings, SettingField
from studio.targets import Target, parse_target, parse_targets, position_text, prefix_text

#: Objective kinds the render panel offers: a channel's mean, one neuron of a channel, one channel of a
#: transformer's prefix token (class, distillation, register), a whole layer (DeepDream).
KINDS = ("channel", "neuron", "token", "layer")
#: Every attribution method, in the order the attribution panel lists them (the first is its default):
#: Grad-CAM first, as it reads best over a photo, then the gradient methods.
METHODS = (*CAM_METHODS, *(method for method in ATTRIBUTION_METHODS if method not in CAM_METHODS))
#: What an attribution explains: the top class, the unit being visualised, or a class named by the user.
ATTRIBUTION_TARGETS = ("top class", "visualised unit", "class")
#: The layer the render panel starts on when the model has it.
DEFAULT_LAYER = "blocks.4"
#: The render panel's fields that are not render settings (``studio view`` offers them as options too).
VIEWER_FIELDS = (
    SettingField("count", int, 1, "channels at once: render this many consecutive units as a stack on the "
                 "slider axis", minimum=1, maximum=256),
    SettingField("every", int, 4, "show the image every N steps", minimum=1, maximum=1000),
    SettingField("seed", int, 0, "random seed of the first image (image i gets seed + i)",
                 minimum=0, maximum=2**31 - 1),
)
#: Bound of a spin box for a setting that has no limit of its own (the setting's validation still applies).
UNBOUNDED = 10**9
#: napari layer metadata: heat-map layers are marked, rendered layers record their target names.
HEATMAP_KEY = "studio_heatmap"
TARGETS_KEY = "studio_targets"

_VIEWER_DEFAULTS = {spec.name: spec.default for spec in VIEWER_FIELDS}


def field_range(spec: SettingField) -> tuple[float, float]:
    """The (min, max) a spin box offers for a numeric field: its own limits, else unbounded (a positive
    setting starts at 0 and its validation names the problem)."""
    low = spec.minimum if spec.minimum is not None else (0 if spec.positive else -UNBOUNDED)
    return low, spec.maximum if spec.maximum is not None else UNBOUNDED


class WorkerError(Exception):
    """A failure inside a worker thread, carried as a plain ``Exception``.

    superqt's generator worker treats a ``RuntimeError`` from the generator as "worker deleted": it warns
    and returns before emitting ``errored`` or ``finished``, so the UI would hang. Every torch failure
    (CUDA out of memory, shape or device mismatch) is a ``RuntimeError``, so the worker re-raises as this.
    """


def error_message(error: BaseException) -> str:
    """One sentence for the user about an exception raised while loading, rendering or attributing."""
    if isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower():
        return ("Out of memory: lower the image size or the number of channels at once, "
                "or pick the CPU as device.")
    if isinstance(error, (StudioError, WorkerError)):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else 'no message'}"


@dataclass
class RenderRequest:
    """What the render panel asks for: a unit, the viewer's own fields and the render settings.

    ``unit`` is a channel number, or for ``logits`` a class index or label; ``position`` a neuron's, ``token``
    a prefix token's index (0: the class token). ``count`` consecutive units
    starting at ``unit`` render as one batch (a stack with the unit on napari's slider axis).
    """

    layer: str = DEFAULT_LAYER
    kind: str = "channel"
    unit: str | int = 0
    position: tuple[int, ...] | None = None
    token: int = 0
    count: int = _VIEWER_DEFAULTS["count"]
    every: int = _VIEWER_DEFAULTS["every"]
    seed: int = _VIEWER_DEFAULTS["seed"]
    settings: RenderSettings = field(default_factory=RenderSettings)

    def targets(self, model: StudioModel) -> list[Target]:
        """The validated targets, one per image (``StudioError`` names what to fix)."""
        if self.kind not in KINDS:
            raise StudioError(f"Unknown objective kind {self.kind!r}; choose one of {', '.join(KINDS)}.")
        if self.kind == "layer":
            return [parse_target(self.layer, model)]
        unit = str(self.unit).strip()
        if not unit:
            raise StudioError("Name the unit to render: a channel number, or for logits a class label or index.")
        if self.kind == "neuron" and self.position is None:
            raise StudioError("A neuron objective needs a position: set its row and column.")
        where = prefix_text(self.token) if self.kind == "token" else position_text(self.position)
        first = parse_target(f"{self.layer}:{unit}{where}", model)
        if self.count <= 1:
            return [first]
        last = first.channel + self.count - 1
        return parse_targets(f"{first.layer_name}:{first.channel}-{last}{first.where}", model)


def render_label(targets: Sequence[Target]) -> str:
    """A short name for a render's napari layer: ``blocks.4:12``, ``Egyptian cat``, ``blocks.4:12-15@7,7``."""
    first, last = targets[0], targets[-1]
    if len(targets) == 1:
        return first.short
    return f"{first.layer_name}:{first.channel}-{last.channel}{first.where}"


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


def stream(model: StudioModel, targets: Sequence[Target], settings: RenderSettings | None = None, *, seed: int = 0,
           every: int = 4, lock: threading.Lock | None = None, stop: threading.Event | None = None) -> Iterator[Frame]:
    """Run :func:`studio.optimize` and yield a :class:`Frame` after every step; return the last frame.

    One yield per step keeps cancellation responsive: ``stop`` (or the worker's ``quit``) takes effect
    within a step. Images travel only every ``every`` steps, at the end and when stopped. ``lock`` is
    held during each step, so another thread (an attribution) never shares the model mid-forward.
    Hooks exist only inside a step, so stopping between steps leaves none behind.
    """
    guard = lock if lock is not None else nullcontext()
    every = max(1, int(every))
    engine = optimize(model, list(targets), settings, seed=seed, snapshot_every=1)
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
        raise WorkerError(error_message(error)) from error
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


def attribute_images(model: StudioModel, images: torch.Tensor, method: str, targets: Sequence[Target | None],
                     lock: threading.Lock | None = None) -> Heatmap:
    """Heat maps for a batch of images (:func:`studio.attribution.explain`); ``targets`` holds one target
    for all images or one per image, ``None`` meaning each image's top class."""
    guard = lock if lock is not None else nullcontext()
    targets = list(targets)
    try:
        with guard:
            result = explain(model, images, targets[0] if len(targets) == 1 else targets, method)
    except RuntimeError as error:
        raise WorkerError(error_message(error)) from error
    names = list(dict.fromkeys(target.short for target in result.targets))
    label = ("top class " if targets == [None] else "") + (names[0] if len(names) == 1 else f"{names[0]} ...")
    return Heatmap(result.maps.detach().float().cpu().numpy(), result.method, label)
