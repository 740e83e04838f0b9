"""The Qt-free core of the napari studio: the viewer's own fields, what to render (from the panel's fields),
the generator its worker thread runs, attribution jobs, conversions between image tensors
(``[B, C, *size]``) and napari layer data (RGB pictures, grey images, one layer per channel, volumes), and the
dataset examples shown beside a render (which units an index holds, montages of their top crops and of the
unit's maps over them, the render's dataset numbers).

Nothing here imports napari or Qt, so it runs (and is tested) without a display.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from html import escape
from math import prod
from pathlib import Path

import numpy as np
import torch

from studio.attribution import CAM_METHODS
from studio.attribution import METHODS as ATTRIBUTION_METHODS
from studio.attribution import deletion_insertion, explain
from studio.attribution.faithfulness import QUICK_STEPS, auc_summary
from studio.engine import RenderResult, optimize
from studio.checks import SEED_LIMIT
from studio.errors import StudioError
from studio.exemplars import IndexInfo, examples
from studio.exemplars.maps import example_maps, has_positions, map_picture
from studio.exemplars.scores import channel_of, compare_with_dataset, path_check
from studio.io import fit, image_grid, is_rgb_image
from studio.models import InputSpec, StudioModel
from studio.objectives import Objective
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
                 minimum=0, maximum=SEED_LIMIT - 1),
)
#: The largest value a Qt integer spin box holds.
SPIN_BOX_LIMIT = 2**31 - 1
#: Bound of a spin box for a setting that has no limit of its own (the setting's validation still applies).
UNBOUNDED = 10**9
#: napari layer metadata: heat-map layers are marked, rendered layers record their target names, and each
#: layer of a channel set holds its :class:`ChannelSet`.
HEATMAP_KEY = "studio_heatmap"
#: Marks an activation-grid layer (its value: the targets of its renders, row-major).
GRID_KEY = "studio_activation_grid"
TARGETS_KEY = "studio_targets"
CHANNELS_KEY = "studio_channels"
#: napari layer metadata marking the layers that show a render's dataset examples (their crops, or the maps
#: over them).
EXAMPLES_KEY = "studio_examples"
#: The colour of errors and warnings in the widget's text.
ERROR_COLOUR = "#ff6b6b"
#: Side of one dataset example's tile in a montage (pixels), and how many units of a stack get dataset numbers
#: (each path check runs the model over the unit's top examples and random images).
TILE = 64
NUMBERED_UNITS = 4

_VIEWER_DEFAULTS = {spec.name: spec.default for spec in VIEWER_FIELDS}


def field_range(spec: SettingField) -> tuple[float, float]:
    """The (min, max) a spin box offers for a numeric field: its own limits, else unbounded (a positive
    setting starts at 0 and its validation names the problem)."""
    low = spec.minimum if spec.minimum is not None else (0 if spec.positive else -UNBOUNDED)
    # Qt's spin boxes hold 32-bit integers: a larger limit (the seed's) is offered up to that.
    high = spec.maximum if spec.maximum is not None else UNBOUNDED
    return low, min(high, SPIN_BOX_LIMIT) if spec.kind is int else high


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
        return parse_targets(f"{first.concepts or first.layer_name}:{first.channel}-{last}{first.where}", model)


def full_name(target: Target) -> str:
    """A target's name that parses back to it from any folder: a dictionary's file by its absolute path."""
    return target.name if target.concepts is None else target.concepts + target.name[len(target.layer_name):]


def render_label(targets: Sequence[Target]) -> str:
    """A short name for a render's napari layer: ``blocks.4:12``, ``Egyptian cat``, ``blocks.4:12-15@7,7``."""
    first, last = targets[0], targets[-1]
    if len(targets) == 1:
        return first.short
    return f"{first.layer_name}:{first.channel}-{last.channel}{first.where}"


@dataclass
class Frame:
    """What the worker yields each step: progress, the per-image objective and, every ``every`` steps
    and at the end, the images as napari shows them (:func:`to_napari`: an owned CPU copy; ``rgb`` says
    which layout), with a canvas step's crop ``boxes`` (:class:`studio.engine.Snapshot`)."""

    step: int
    steps: int
    values: np.ndarray
    images: np.ndarray | None
    seconds: float
    rgb: bool
    done: bool = False
    stopped: bool = False
    result: RenderResult | None = None
    boxes: np.ndarray | None = None

    @property
    def steps_per_second(self) -> float:
        return self.step / self.seconds if self.seconds > 0 else 0.0


def to_napari(images: torch.Tensor) -> np.ndarray:
    """``[B, C, *size]`` float in ``[0, 1]`` to a contiguous float32 array for napari: ``[B, H, W, 3]`` for RGB
    pictures (channels last, as napari's RGB layers take them), else ``[B, C, *size]`` as it is."""
    array = images.detach().float().clamp(0, 1)
    if is_rgb_image(array[0]):
        array = array.permute(0, 2, 3, 1)
    return np.ascontiguousarray(array.cpu().numpy())


def with_alpha(images: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """RGB pictures ``[B, H, W, 3]`` (:func:`to_napari`) with ``alpha`` ``[B, H, W]`` as their fourth channel."""
    return np.ascontiguousarray(np.concatenate([images, alpha[..., None].astype(images.dtype)], -1))


def layer_arrays(images: np.ndarray, rgb: bool) -> list[np.ndarray]:
    """The data of each napari layer that shows ``images`` (:func:`to_napari`): the RGB stack, or one stack per
    channel; one image loses its batch axis, several keep the unit on the leading (slider) axis."""
    stacks = [images] if rgb else [images[:, channel] for channel in range(images.shape[1])]
    return [stack[0] if len(stack) == 1 else stack for stack in stacks]


def channel_names(name: str, count: int) -> list[str]:
    """Layer names for an image set shown in ``count`` layers: the name itself, or one per channel."""
    return [name] if count == 1 else [f"{name} · channel {channel}" for channel in range(count)]


@dataclass(frozen=True)
class ChannelSet:
    """The layers that show an image set one channel each: the set's name and its images ``[B, C, *size]``
    (what an attribution of any of those layers explains)."""

    name: str
    images: np.ndarray


@dataclass
class CustomRender:
    """A render the panel's fields do not describe (an accentuation, a building block pushed down): its
    ``objective`` (one image), the unit it shows (for attributions and dataset examples), the layer's name and
    the image it starts from (``[C, *size]``, None: the parameterisation's own start)."""

    objective: Objective
    target: Target
    label: str
    init: torch.Tensor | None = None


def stream(model: StudioModel, targets: Sequence[Target] | Objective, settings: RenderSettings | None = None, *,
           seed: int = 0, every: int = 4, lock: threading.Lock | None = None, stop: threading.Event | None = None,
           init: torch.Tensor | None = None) -> Iterator[Frame]:
    """Run :func:`studio.optimize` on ``targets`` (one image each, or an ``Objective`` for one image, started
    from ``init`` when given) and yield a :class:`Frame` after every step; return the last frame.

    One yield per step keeps cancellation responsive: ``stop`` (or the worker's ``quit``) takes effect
    within a step. Images travel only every ``every`` steps, at the end and when stopped. ``lock`` is
    held during each step, so another thread (an attribution) never shares the model mid-forward.
    Hooks exist only inside a step, so stopping between steps leaves none behind.
    """
    guard = lock if lock is not None else nullcontext()
    every = max(1, int(every))
    objective = targets if isinstance(targets, Objective) else list(targets)
    engine = optimize(model, objective, settings, seed=seed, snapshot_every=1, init=init)
    start = time.perf_counter()
    last = latest = None
    try:
        while True:
            if stop is not None and stop.is_set():
                if last is None:
                    return None
                return _frame(last, start, show=True, stopped=True)
            with guard, torch.enable_grad():
                last = next(engine, None)
            if last is None:
                return latest
            show = last.done or last.step % every == 0
            latest = _frame(last, start, show, done=last.done, result=last.result)
            yield latest
            if last.done:
                return latest
    except RuntimeError as error:
        raise WorkerError(error_message(error)) from error
    finally:
        engine.close()  # optimize yields outside its contexts: closing it touches no model state, needs no lock


def _frame(snapshot, start: float, show: bool, **state) -> Frame:
    """A frame of an engine snapshot, with its images for napari when ``show``."""
    boxes = snapshot.boxes.numpy() if show and snapshot.boxes is not None else None
    return Frame(snapshot.step, snapshot.steps, snapshot.values.numpy(), to_napari(snapshot.images) if show else None,
                 time.perf_counter() - start, is_rgb_image(snapshot.images[0]), boxes=boxes, **state)


def images_from_layer(data, rgb: bool, contrast_limits: Sequence[float] | None, spec: InputSpec) -> torch.Tensor:
    """napari image data as the model's images ``[B, C, *size]`` in ``[0, 1]``.

    An RGB(A) layer ``[..., H, W, 3|4]`` serves RGB models; a grey layer ``[..., *size]`` serves 1-channel models
    (and RGB ones, repeated to RGB); N channels come as one layer with them on the axis before the image's
    (``[..., C, *size]``). Other leading axes (a stack) become the batch. uint8/uint16 scale by their range,
    float RGB is taken as ``[0, 1]`` and float grey is scaled by the layer's contrast limits.
    """
    array = np.asarray(data)
    dims, channels = spec.dims, spec.channels
    kind = "volumes" if dims == 3 else "images"
    fits = f"The model takes {channels}-channel {kind}: pick a layer of shape {_layer_shape(spec)} or a render"
    if rgb:
        if not spec.rgb or array.ndim < 3 or array.shape[-1] not in (3, 4):
            raise StudioError(f"{fits}, not an RGB layer of shape {list(array.shape)}.")
        colour = array[..., :3]
        stack = np.moveaxis(colour.reshape(-1, *colour.shape[-3:]), -1, 1)
    else:
        split = channels > 1 and not spec.rgb  # the layer holds the channels on an axis of its own
        if array.ndim < dims + split or (split and array.shape[-dims - 1] != channels):
            raise StudioError(f"{fits}, not one of shape {list(array.shape)}.")
        stack = array.reshape(-1, channels if split else 1, *array.shape[array.ndim - dims:])
        if np.issubdtype(stack.dtype, np.floating) and contrast_limits is not None:
            low, high = float(contrast_limits[0]), float(contrast_limits[1])
            stack = (stack - low) / max(high - low, 1e-12)
    if np.issubdtype(stack.dtype, np.floating):
        scale = 1.0
    else:
        scale = 65535.0 if stack.dtype == np.uint16 else 255.0  # other integers are taken as 8-bit values
    images = torch.from_numpy(np.clip(stack.astype(np.float32) / scale, 0, 1))
    return images.expand(-1, channels, *images.shape[2:]).contiguous() if images.shape[1] != channels else images


def _layer_shape(spec: InputSpec) -> str:
    """The napari layer shape a model's images come in, for messages: ``[..., H, W]``, ``[..., 5, D, H, W]``."""
    axes = ["D", "H", "W"][-spec.dims:]
    if spec.channels > 1 and not spec.rgb:
        axes = [str(spec.channels), *axes]
    return f"[..., {', '.join(axes)}]"


def overlay(maps: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Heat maps ``[B, *size]`` shaped like the layer they explain (``shape``, without an RGB axis), so that
    the overlay shares its axes: the batch spread over the layer's leading axes, the map repeated along a
    channel axis when the layer has one."""
    size = maps.shape[1:]
    lead = tuple(shape[:len(shape) - len(size)])
    if prod(lead) == len(maps):
        return maps.reshape(*lead, *size)
    return np.broadcast_to(maps.reshape(*lead[:-1], 1, *size), (*lead, *size))


@dataclass
class Heatmap:
    """An attribution result: ``maps`` ``[B, H, W]`` float32, a label naming method and target, and each
    map's deletion and insertion AUC (:func:`studio.deletion_insertion`: is the map faithful to the model?)."""

    maps: np.ndarray
    method: str
    target_label: str
    deletion_auc: np.ndarray
    insertion_auc: np.ndarray

    def faithfulness(self) -> str:
        """The AUCs in a few words (the mean over the maps when there are several)."""
        several = " (mean over the maps)" if len(self.deletion_auc) > 1 else ""
        return auc_summary(self.deletion_auc.mean(), self.insertion_auc.mean()) + several


def attribute_images(model: StudioModel, images: torch.Tensor, method: str, targets: Sequence[Target | None],
                     lock: threading.Lock | None = None) -> Heatmap:
    """Heat maps for a batch of images (:func:`studio.attribution.explain`) and their deletion and insertion
    scores; ``targets`` holds one target for all images or one per image, ``None`` meaning each image's top
    class."""
    guard = lock if lock is not None else nullcontext()
    targets = list(targets)
    try:
        with guard:
            result = explain(model, images, targets[0] if len(targets) == 1 else targets, method)
            faithful = deletion_insertion(model, images, result.maps, result.targets, steps=QUICK_STEPS)
    except RuntimeError as error:
        raise WorkerError(error_message(error)) from error
    names = list(dict.fromkeys(target.short for target in result.targets))
    label = ("top class " if targets == [None] else "") + (names[0] if len(names) == 1 else f"{names[0]} ...")
    return Heatmap(result.maps.detach().float().cpu().numpy(), result.method, label,
                   faithful.deletion_auc.numpy(), faithful.insertion_auc.numpy())


# ---------------------------------------------------------------- dataset examples


def indexed_units(info: IndexInfo, targets: Sequence[Target]) -> list[str]:
    """The index's channel for each rendered target (``blocks.4:12@3,3`` -> ``blocks.4:12``); a ``StudioError``
    sentence says why the render has no examples (a whole layer, a layer the index does not hold)."""
    layer = targets[0].layer_name
    if layer not in info.layers:
        raise StudioError(f"{render_label(targets)} is not in the index {info.path.name} (it holds "
                          f"{', '.join(info.layers)}).")
    return [_channel_name(target) for target in targets]


def _channel_name(target: Target) -> str:
    """The indexed channel a target belongs to, by a name found from any folder (:func:`full_name`)."""
    return full_name(channel_of(target))


def example_tile(crop: torch.Tensor, size: int = TILE) -> torch.Tensor:
    """A crop ``[C, h, w]`` as a ``[C, size, size]`` tile: scaled to fit (aspect kept, antialiased) and centred
    on white; a volume's crop ``[C, d, h, w]`` by its maximum along depth (as napari's 3D view draws volumes)."""
    image = (crop.amax(1) if crop.dim() == 4 else crop).float()
    return fit(image, (size, size), cover=False)


def montage(crops: Sequence[torch.Tensor], places: int, channels: int, size: int = TILE) -> torch.Tensor:
    """A unit's crops (or ``channels``-channel pictures of them, such as :func:`map_picture`), best first, as
    tiles (:func:`example_tile`) in a near-square grid of ``places`` (blank after the last crop): ``[C, H, W]``."""
    tiles = [example_tile(crop, size) for crop in crops]
    tiles += [torch.ones(channels, size, size)] * (places - len(tiles))
    return image_grid(torch.stack(tiles))


@dataclass(frozen=True)
class Montages:
    """The montage layer data of a render's units (:func:`to_napari` of ``[units, C, *size]``; a volume model's
    montages are one voxel deep, on the render's axes), the layer's ``name``, whether it is ``rgb`` and whether
    it shows the ``maps`` over the crops (:func:`map_picture`) rather than the crops."""

    name: str
    images: np.ndarray
    rgb: bool
    maps: bool = False


def load_montages(index: str | Path, units: Sequence[str], model: StudioModel, label: str, size: int = TILE,
                  lock: threading.Lock | None = None) -> Iterator[Montages]:
    """The montage layers of a render's units as each is ready (run it in a worker): ``examples · <label>``,
    one montage of top crops per unit (read from the image files), then, for units with positions,
    ``maps · <label>``: each crop with the unit's map over it (:func:`map_picture`, one colour scale per unit:
    its top example's score), the same tiles in the same places; the maps run the model, holding ``lock``."""
    shown = [examples(index, unit, model) for unit in units]
    crops = [[example.crop() for example in unit] for unit in shown]
    places = max(len(unit) for unit in crops)
    if not places:
        raise StudioError(f"Index {Path(index).name} holds no examples of {units[0]} yet; index some images.")
    spec = model.spec
    yield _montages(f"examples · {label}", [montage(unit, places, spec.channels, size) for unit in crops],
                    spec.dims, spec.rgb)
    if not has_positions(model, units[0]):
        return
    guard, pictures = lock if lock is not None else nullcontext(), []
    for top, unit, unit_crops in zip(shown, units, crops):
        try:
            with guard:  # one unit at a time: a running render takes its steps between them
                maps = example_maps(model, top, unit)
        except RuntimeError as error:  # a generator worker takes a RuntimeError for its deletion (WorkerError)
            raise WorkerError(error_message(error)) from error
        pictures.append([map_picture(crop, heat, top[0].score) for crop, heat in zip(unit_crops, maps)])
    yield _montages(f"maps · {label}", [montage(unit, places, 3, size) for unit in pictures], spec.dims,
                    rgb=True, maps=True)


def _montages(name: str, sheets: Sequence[torch.Tensor], dims: int, rgb: bool, maps: bool = False) -> Montages:
    """The layer data of one montage per unit (``[C, H, W]`` each): an RGB layer of pictures, else grey or one
    per channel; one voxel deep for a volume model (on the render's axes)."""
    stack = torch.stack(list(sheets))
    if dims == 3 and not rgb:
        stack = stack[:, :, None]
    images = to_napari(stack)  # RGB pictures: [units, H, W, 3]
    return Montages(name, images[:, None] if dims == 3 and rgb else images, rgb, maps)


@dataclass(frozen=True)
class UnitNumbers:
    """A rendered unit beside its dataset: its clean value as a ``multiple`` of the dataset maximum and its
    ``path`` check (None while it is computed; ``flagged`` when the render takes an unnatural path)."""

    unit: str
    multiple: str
    path: str | None = None
    flagged: bool = False

    def text(self) -> str:
        """``blocks.4:12: 1.20x dataset max (of 8 images) · path +0.012 (natural path; ...)``."""
        return f"{self.unit}: {self.multiple} · {self.path or 'checking the path ...'}"

    def html(self) -> str:
        """The text as rich text for a Qt label, the path check in red when flagged."""
        path = escape(self.path or "checking the path ...")
        if self.flagged:
            path = f'<span style="color: {ERROR_COLOUR};">{path}</span>'
        return f"{escape(self.unit)}: {escape(self.multiple)} · {path}"


def dataset_numbers(index: str | Path, targets: Sequence[Target], values: Sequence[float],
                    model: StudioModel) -> list[UnitNumbers]:
    """The first units' clean values as multiples of their dataset maximum (quick: statistics the index holds)."""
    return [UnitNumbers(target.short, compare_with_dataset(index, target, value, model).describe())
            for target, value in zip(targets[:NUMBERED_UNITS], values)]


def check_paths(model: StudioModel, index: str | Path, numbers: Sequence[UnitNumbers], targets: Sequence[Target],
                images: torch.Tensor, lock: threading.Lock | None = None) -> list[UnitNumbers]:
    """``numbers`` with each unit's path check (:func:`studio.exemplars.scores.path_check` of its render, or why
    there is none); it runs the model, holding ``lock``, so run it in a worker."""
    guard = lock if lock is not None else nullcontext()
    checked = []
    for number, target, image in zip(numbers, targets, images):
        try:
            with guard:
                check = path_check(model, index, target, image)
            checked.append(replace(number, path=check.describe(), flagged=check.flagged))
        except StudioError as error:
            checked.append(replace(number, path=f"no path check: {error}"))
        except RuntimeError as error:
            raise WorkerError(error_message(error)) from error
    return checked
