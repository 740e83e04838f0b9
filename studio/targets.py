"""Units, in one place: the target grammar, validation against a model, display labels, file names, and how a
unit's value is read from a captured activation. The objectives, attribution, gallery, CLI and viewer all
use this module; none of them splits target strings.

Grammar (module paths are exactly ``model.named_modules()`` names; ``logits`` is the model output):

- ``blocks.4`` a whole layer; ``blocks.4:12`` a channel; ``blocks.4:12@7,3`` the neuron at row 7, column 3
  (a volume's voxel is ``@z,y,x``: one coordinate per spatial axis);
- ``logits:285``, ``logits:"Egyptian cat"``, and on their own ``285`` or ``Egyptian cat`` (a class);
- in :func:`parse_targets` also lists and ranges: ``blocks.4:0-63``, ``blocks.4:0,5,9-12``, ``blocks.4:*``,
  ``blocks.4:3-5@7,7``, ``logits:"Egyptian cat","tabby"``.

Values are read from activations in channels-first form, ``[B, C, *spatial]``: ``[B, C]`` vectors (logits),
``[B, C, H, W]`` maps, ``[B, C, D, H, W]`` volumes. :func:`layer_info` says how a layer lays out its output
(channels-first, transformer tokens ``[B, N, C]`` with prefix tokens before a patch grid, channel-last
``[B, H, W, C]``), and :func:`activations` converts captures to the channels-first form, here and nowhere
else; a token layer's prefix tokens are read as ``@cls`` (``@tokenN``) targets.

A layer part that names a concept dictionary file (``blocks5.concepts:17``, made by ``studio concepts``) reads
the dictionary's layer through it: the dictionary is a layer of concepts over that layer, so ranges, positions
and tokens work as for channels; its activation key is the layer's with ``#concepts=<file>`` after it.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from studio.concepts.dictionary import Dictionary, is_dictionary_name, load_dictionary
from studio.errors import StudioError, StudioNote
from studio.hooks import OUTPUT, forward_to

if TYPE_CHECKING:
    from studio.models import StudioModel

#: Name of the model's final output in target strings (a module really called ``logits`` takes precedence).
LOGITS = "logits"

#: A layer part is a module path (no ``:`` or ``@``) or a dictionary file, whose path may hold both (``C:\\x.concepts``).
_TARGET_RE = re.compile(r"""^\s*(?P<layer>.+?(?i:\.concepts)(?=\s*[:@]|\s*$)|[^:@]+?)\s*"""
                        r"""(?::\s*(?P<unit>"[^"]*"|'[^']*'|[^@]+?))?\s*"""
                        r"""(?:@\s*(?P<position>-?\d+(?:\s*,\s*-?\d+)*|cls|token\d+))?\s*$""")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
#: A bare word that reads as a module path (``blocks.4``, ``head.fc``), not as a class label.
_DOTTED = re.compile(r"[\w.]*\.\w*")


def split_target(text: str) -> tuple[str, str | None, str | None] | None:
    """A target string's parts as written, without a model: ``(layer, unit, position)`` (``blocks.4:12@3,4``
    gives ``("blocks.4", "12", "3,4")``), or None when it does not follow the grammar."""
    match = _TARGET_RE.match(text)
    if match is None:
        return None
    return match["layer"].strip(), None if match["unit"] is None else match["unit"].strip(), match["position"]


def from_folder(expression: str, folder: Path) -> str:
    """``expression`` with a relative dictionary file in its layer part read from ``folder`` (a gallery spec's
    own folder), so a spec finds the dictionaries beside it wherever it is run from."""
    parts = split_target(expression)
    if parts is None or not is_dictionary_name(parts[0]) or Path(parts[0]).expanduser().is_absolute():
        return expression
    layer, unit, position = parts
    return str(folder / layer) + ("" if unit is None else f":{unit}") + ("" if position is None else f"@{position}")


def safe_name(text: str) -> str:
    """A name usable as a file or folder name on every OS and in a URL."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "unit"


def display_layer(layer: str) -> str:
    """How a module path (or a layer's activation key) is shown to users: the model output is ``logits``, a
    concept dictionary its file's name."""
    if CONCEPTS in layer:
        return Path(layer.partition(CONCEPTS)[2]).name
    return LOGITS if layer == OUTPUT else layer


@dataclass(frozen=True)
class Target:
    """One unit: a module (``layer``, a ``named_modules`` path, ``""`` for the model output), optionally a
    channel and a position (one coordinate per spatial axis). ``text`` is what the user wrote and ``label``
    a class's name; neither takes part in equality. Calling it on channels-first activations gives ``[B]``."""

    layer: str
    channel: int | None = None
    position: tuple[int, ...] | None = None
    text: str = field(default="", compare=False)
    label: str = field(default="", compare=False)
    prefix_token: int | None = None
    concepts: str | None = None

    @property
    def key(self) -> str:
        """The activation it reads: its layer's grid, or the layer's prefix tokens (``@cls``), through its
        concept dictionary when it has one."""
        return (self.layer if self.prefix_token is None else self.layer + PREFIX) + self._through

    @property
    def layer_key(self) -> str:
        """The layer it indexes (a module path, or one read through a dictionary), for :func:`layer_info`."""
        return self.layer + self._through

    @property
    def _through(self) -> str:
        return "" if self.concepts is None else CONCEPTS + self.concepts

    @property
    def at(self) -> tuple[int, ...] | None:
        """The position it reads in that activation (a prefix token is a position on the prefix axis)."""
        return self.position if self.prefix_token is None else (self.prefix_token,)

    @property
    def layer_name(self) -> str:
        """The layer as users write it (``logits`` for the model output, a dictionary's file name)."""
        return display_layer(self.layer_key)

    @property
    def whole_layer(self) -> bool:
        return self.channel is None

    @property
    def name(self) -> str:
        """The canonical target string: ``blocks.4:12@7,3``, ``logits:285``, ``blocks.4``."""
        unit = "" if self.channel is None else f":{self.channel}"
        return f"{self.layer_name}{unit}{self.where}"

    @property
    def where(self) -> str:
        """The ``@...`` part of its name: a position, a prefix token, or nothing."""
        return prefix_text(self.prefix_token) if self.prefix_token is not None else position_text(self.position)

    @property
    def description(self) -> str:
        """The canonical string with a class's label: ``logits:285 "Egyptian cat"``."""
        return f'{self.name} "{self.label}"' if self.label else self.name

    @property
    def short(self) -> str:
        """The shortest readable name: a class's label, else the canonical string."""
        return self.label or self.name

    @property
    def unit_label(self) -> str:
        """The unit within its layer, for a tile under a layer heading: ``12``, ``12@7,3``, ``285 Egyptian cat``,
        ``whole layer``."""
        if self.channel is None:
            return "whole layer"
        return f"{self.channel}{self.where}" + (f" {self.label}" if self.label else "")

    def file_stem(self, channels: int) -> str:
        """``c012`` (zero-padded to the layer's ``channels``), ``c012_y7_x3``, ``c005_cls``, or ``layer`` for a
        whole layer: what gallery files are found by, so a class's label (which can change) is not in it."""
        if self.channel is None:
            return "layer"
        stem = f"c{self.channel:0{len(str(max(channels - 1, 0)))}d}"
        if self.prefix_token is not None:
            stem += f"_{self.where[1:]}"
        if self.position is not None:
            stem += "".join(f"_{axis}{value}" for axis, value in zip(_axes(len(self.position)), self.position))
        return stem

    def __str__(self) -> str:
        return self.text or self.name

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        """This unit's value for each image of a channels-first activation ``[B, C, *spatial]``: ``[B]``."""
        if self.channel is None:
            return layer_value(activation)
        return unit_values(activation, [self.channel] * len(activation), [self.at] * len(activation))


def prefix_text(index: int) -> str:
    """How prefix token ``index`` is written: ``@cls`` for the class token, ``@tokenN`` for the others."""
    return "@cls" if index == 0 else f"@token{index}"


def position_text(position: tuple[int, ...] | None) -> str:
    """The ``@y,x`` (``@z,y,x``) part of a target string; empty without a position."""
    return "" if position is None else "@" + ",".join(map(str, position))


# ---------------------------------------------------------------------------------------------- values

def layer_value(activation: torch.Tensor) -> torch.Tensor:
    """A whole layer's value (DeepDream): the mean squared activation of each image, ``[B]``."""
    return activation.float().pow(2).flatten(1).mean(1)


def unit_values(activation: torch.Tensor, channels: Sequence[int], positions: Sequence[tuple[int, ...] | None],
                images: Sequence[int] | None = None) -> torch.Tensor:
    """Image ``images[i]`` (default ``i``) reads channel ``channels[i]``: its mean over all positions, or the
    one neuron at ``positions[i]``. One vectorised gather for the whole batch; images named by no unit get 0.
    ``activation`` is channels-first, ``[B, C, *spatial]``; returns ``[B]`` (float32)."""
    device = activation.device
    images = list(range(len(channels))) if images is None else list(images)
    index = torch.as_tensor(images, device=device)
    chosen = activation[index, torch.as_tensor(list(channels), device=device)].float()  # [N, *spatial], picked first
    values = chosen.reshape(len(images), -1).mean(1)
    neurons = [i for i, p in enumerate(positions) if p is not None]
    if neurons:
        rows = torch.as_tensor(neurons, device=device)
        coords = torch.as_tensor([positions[i] for i in neurons], device=device).T  # [spatial dims, n]
        values = values.index_copy(0, rows, chosen[(rows, *coords)])
    return torch.zeros(activation.shape[0], device=device).index_add(0, index, values)


# ---------------------------------------------------------------------------------------------- layers

@dataclass(frozen=True)
class LayerInfo:
    """What a layer holds, channels-first: ``channels`` and the ``spatial`` shape (``()`` for a vector, the
    patch grid for tokens), how its output is laid out, and how many ``prefix`` tokens (class, distillation,
    register) come before a token grid."""

    path: str
    channels: int
    spatial: tuple[int, ...]
    layout: str = "channels-first"
    prefix: int = 0
    inferred: bool = False

    @property
    def name(self) -> str:
        return display_layer(self.path)

    @property
    def concepts(self) -> str | None:
        """The dictionary file it is read through, or None for a module's own output."""
        return self.path.partition(CONCEPTS)[2] or None

    @property
    def units(self) -> str:
        """What its channel axis holds: ``channels``, or ``concepts`` for a dictionary."""
        return "concepts" if self.concepts else "channels"

    def describe_spatial(self) -> str:
        return "x".join(map(str, self.spatial))

    def describe(self) -> str:
        """``tokens: 1 prefix + 14x14 grid, 192 channels`` and the like, for ``studio layers``."""
        over = f" of {display_layer(self.path.partition(CONCEPTS)[0])}" if self.concepts else ""
        if self.layout == "tokens":
            how = " (prefix inferred from the token count)" if self.inferred else ""
            return (f"tokens: {self.prefix} prefix + {self.describe_spatial()} grid{how}, {self.channels} "
                    f"{self.units}{over}")
        if not self.spatial:
            return f"vector, {self.channels} {self.units}{over}"
        kind = "channel-last" if self.layout == "channel-last" else ("volume" if len(self.spatial) == 3 else "map")
        return f"{kind} {self.describe_spatial()}, {self.channels} {self.units}{over}"

    def channels_first(self, activation: torch.Tensor) -> torch.Tensor:
        """The output as ``[B, C, *spatial]``: a token grid without its prefix tokens, channel-last moved."""
        if self.layout == "tokens":
            patches = activation[:, self.prefix:]
            return patches.transpose(1, 2).reshape(len(activation), self.channels, *self.spatial)
        if self.layout == "channel-last":
            return activation.movedim(-1, 1)
        return activation

    def prefix_tokens(self, activation: torch.Tensor) -> torch.Tensor:
        """The prefix tokens as ``[B, C, prefix]`` (read by ``@cls`` targets)."""
        return activation[:, :self.prefix].transpose(1, 2)


#: Suffix of an activation key that holds a layer's prefix tokens rather than its grid.
PREFIX = "@prefix"
#: Marks an activation key read through a concept dictionary: ``blocks.5#concepts=/abs/blocks5.concepts``.
CONCEPTS = "#concepts="


def layer_info(model: StudioModel, path: str) -> LayerInfo:
    """Channels, spatial shape and layout of a resolved layer, read from its recorded output: ``[B, C]``
    vectors, ``[B, C, *spatial]`` maps and volumes, ``[B, N, C]`` tokens (a patch grid after prefix tokens) and
    ``[B, H, W, C]`` channel-last maps. Worked out once per model and input, then kept. A key read through a
    concept dictionary has the dictionary's concepts as channels over its layer's positions."""
    if CONCEPTS in path:
        base, _, file = path.partition(CONCEPTS)
        info = layer_info(model, base)
        return LayerInfo(path, load_dictionary(file).concepts, info.spatial, info.layout, info.prefix, info.inferred)
    known = _LAYER_INFO.setdefault(model.module, {})
    if (path, model.spec) not in known:
        known[(path, model.spec)] = _read_layer_info(model, path)
    return known[(path, model.spec)]


#: Layer layouts per module, by (layer, input spec) (weakly held: they go with the model).
_LAYER_INFO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _read_layer_info(model: StudioModel, path: str) -> LayerInfo:
    shape = model.output_shapes[path]
    batch, raw = shape[0], shape[1:]
    if batch != 1:
        raise StudioError(f"Layer {display_layer(path)!r} folds images into windows (shape {list(shape)} for one "
                          f"image); target the block output {_enclosing_block(model, path)!r} instead.")
    if not raw:
        raise StudioError(f"Layer {display_layer(path)!r} outputs a scalar per image; target a layer with channels.")
    if len(raw) == 1:
        return LayerInfo(path, raw[0], ())
    if len(raw) == 2:
        return _token_info(model, path, *raw)
    if len(raw) == 3 and model.spec.dims == 2 and _channel_last(model, path, raw):
        return LayerInfo(path, raw[2], tuple(raw[:2]), "channel-last")
    return LayerInfo(path, raw[0], tuple(raw[1:]))


def _channel_last(model: StudioModel, path: str, raw: tuple[int, ...]) -> bool:
    """Whether ``[a, b, c]`` is ``H, W, C`` rather than ``C, H, W``: the pair of sides with the input's aspect
    says so; when both pairs have it (``96 x 96 x 96``), the module does: a LayerNorm or Linear over its last
    axis writes channel-last, anything else is read channels-first."""
    first, last = _has_input_aspect(model, raw[:2]), _has_input_aspect(model, raw[1:])
    if first != last:
        return first
    if not first:
        return False
    module = dict(model.module.named_modules()).get(path)
    if isinstance(module, torch.nn.LayerNorm):
        return tuple(module.normalized_shape) == (raw[-1],)
    return isinstance(module, torch.nn.Linear) and module.out_features == raw[-1]


def _has_input_aspect(model: StudioModel, sides: Sequence[int]) -> bool:
    height, width = model.spec.size[-2:]
    return sides[0] * width == sides[1] * height


def _token_grid(count: int, size: tuple[int, ...]) -> tuple[int, ...] | None:
    """The grid of ``count`` tokens with the input's proportions (2D or 3D), or None when there is none."""
    if count < 1:
        return None
    stride = (math.prod(size) / count) ** (1 / len(size))
    grid = tuple(max(1, round(side / stride)) for side in size)
    proportional = all(g * size[0] == grid[0] * s for g, s in zip(grid, size))
    return grid if math.prod(grid) == count and proportional else None


def _token_info(model: StudioModel, path: str, count: int, channels: int) -> LayerInfo:
    """A token layer's prefix and patch grid: the model's own prefix count (timm's ``num_prefix_tokens``, a
    torchvision class token) when the rest fills a grid of the input's proportions, else the smallest that
    does."""
    known = getattr(model.module, "num_prefix_tokens", 1 if hasattr(model.module, "class_token") else None)
    for prefix in dict.fromkeys([*([known] if known is not None else []), *range(9)]):
        grid = _token_grid(count - prefix, model.spec.size)
        if grid is not None:
            return LayerInfo(path, channels, grid, "tokens", prefix, inferred=known is None and prefix > 0)
    raise StudioError(f"Layer {display_layer(path)!r} outputs {count} tokens of {channels} channels, which no "
                      f"prefix of up to 8 tokens leaves as a grid of the input's {'x'.join(map(str, model.spec.size))} shape.")


def _enclosing_block(model: StudioModel, path: str) -> str:
    """The nearest enclosing module whose output keeps one image per batch entry."""
    parts = path.split(".")
    for end in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:end])
        if model.output_shapes.get(parent, (0,))[0] == 1:
            return parent
    return LOGITS


def _full_key(model: StudioModel, key: str) -> str:
    """An activation key with a dictionary written as its file (``blocks5.concepts``, as objectives take it:
    ``diversity("blocks5.concepts")``) spelled out as the layer it reads through that file."""
    base = key.removesuffix(PREFIX)
    if CONCEPTS in key or not is_dictionary_name(base) or base in model.layer_shapes:
        return key
    layer, _, file = layer_key(model, base).partition(CONCEPTS)
    return f"{layer}{key[len(base):]}{CONCEPTS}{file}"


def module_of(model: StudioModel, key: str) -> str:
    """The module path an activation key reads (a layer name, a layer's ``@prefix`` tokens, either through a
    concept dictionary)."""
    return resolve_layer(model, _full_key(model, key).partition(CONCEPTS)[0].removesuffix(PREFIX))


def channels_first(model: StudioModel, key: str, output: torch.Tensor) -> torch.Tensor:
    """A module's captured ``output`` as the activation ``key`` names: its channels-first grid, or its
    prefix tokens ``[B, C, prefix]`` for a ``@prefix`` key; through a dictionary, its concepts' values."""
    base, _, file = _full_key(model, key).partition(CONCEPTS)
    info = layer_info(model, module_of(model, key))
    values = info.prefix_tokens(output) if base.endswith(PREFIX) else info.channels_first(output)
    return load_dictionary(file).values(values) if file else values


def activations(model: StudioModel, inputs: torch.Tensor, keys: Iterable[str],
                clone: bool | None = None) -> dict[str, torch.Tensor]:
    """The channels-first activations ``keys`` name for model-ready ``inputs``, from one forward cut short
    after the last module needed. ``clone`` (default: when several modules are hooked) protects captures
    from later in-place ops."""
    keys = list(dict.fromkeys(keys))
    paths = {key: module_of(model, key) for key in keys}
    modules = set(paths.values())
    captured = forward_to(model.module, inputs, modules, clone=len(modules) > 1 if clone is None else clone)
    return {key: channels_first(model, key, captured[path]) for key, path in paths.items()}


def layer_key(model: StudioModel, layer: str) -> str:
    """The activation key a target's layer part names: a module path (:func:`resolve_layer`), or, for a
    dictionary file (``blocks5.concepts``), its layer read through it, checked against ``model``."""
    if is_dictionary_name(layer) and layer.strip() not in model.layer_shapes:
        dictionary = load_dictionary(layer.strip())
        return f"{_dictionary_layer(model, dictionary)}{CONCEPTS}{dictionary.path}"
    return resolve_layer(model, layer)


def _dictionary_layer(model: StudioModel, dictionary: Dictionary) -> str:
    """The module a dictionary reads, in ``model``: it must have that layer with as many channels; learned on
    another model or other weights, it still reads, with one note."""
    learned_on = dictionary.record.get("model", "?")
    try:
        path = resolve_layer(model, dictionary.layer)
        channels = layer_info(model, path).channels
    except StudioError:
        raise StudioError(f"Dictionary {dictionary.name!r} reads layer {dictionary.layer!r} of {learned_on}, which "
                          f"{model.name} does not have; load the model it was learned on.") from None
    if channels != dictionary.channels:
        raise StudioError(f"Dictionary {dictionary.name!r} reads {dictionary.channels} channels of "
                          f"{dictionary.layer!r}, but {model.name} has {channels} there; load the model it was "
                          f"learned on ({learned_on}).")
    weights = dictionary.record.get("weights")
    noted = _NOTED.setdefault(model.module, set())
    if weights and weights != _weights(model) and dictionary.sha256 not in noted:
        noted.add(dictionary.sha256)
        warnings.warn(f"Dictionary {dictionary.name!r} was learned on other weights of {dictionary.layer!r} "
                      f"({learned_on}); its concepts may not mean the same here.", StudioNote, stacklevel=4)
    return path


def _weights(model: StudioModel) -> str:
    """The model's weights hash, worked out once per module."""
    from studio.models import weights_sha256

    if model.module not in _WEIGHTS:
        _WEIGHTS[model.module] = weights_sha256(model.module)
    return _WEIGHTS[model.module]


_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: The dictionaries (by hash) each module was told were learned on other weights: the note is said once.
_NOTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def resolve_layer(model: StudioModel, layer: str) -> str:
    """The module path for a layer name (``logits`` means the model output unless a module has that name)."""
    shapes = model.layer_shapes
    if layer in shapes:
        return layer
    if layer == LOGITS and OUTPUT in shapes:
        return OUTPUT
    if isinstance(dict(model.module.named_modules()).get(layer), torch.jit.ScriptModule):
        raise StudioError(f"Cannot hook layer {layer!r} of a TorchScript model; target its output ('logits') "
                          "or load the model as a regular nn.Module.")
    names = [n for n in shapes if n]
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise StudioError(f"Unknown layer {layer!r} in {model.name}: {hint}run `studio layers {model.name}` to list them.")


def class_count(model: StudioModel) -> int | None:
    """Length of the model's output vector, or None when its output is not one vector per image."""
    shape = model.layer_shapes.get(OUTPUT)
    return shape[0] if shape is not None and len(shape) == 1 else None


def class_target(model: StudioModel, index: int, text: str = "") -> Target:
    """The logit of class ``index``, checked against the model's output."""
    count = class_count(model)
    if count is None:
        raise StudioError(f"{model.name} does not output class scores; name a unit such as layer:channel instead.")
    if not 0 <= index < count:
        raise StudioError(f"Class {index} is out of range for {model.name}: valid classes are 0 to {count - 1}.")
    label = model.class_label(index) if model.class_names else ""
    return Target(OUTPUT, index, None, text or f"{LOGITS}:{index}", label)


# ---------------------------------------------------------------------------------------------- grammar

def parse_target(spec: str | int | Target, model: StudioModel) -> Target:
    """One unit from a target string (or a class index), validated against ``model``; errors name the
    closest valid choice or the valid range, in one sentence."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        return class_target(model, spec)
    if not isinstance(spec, str):
        raise StudioError(f"Cannot use {spec!r} as a target; give a class index, a class label or a target like blocks.5:17.")
    text = spec.strip()
    if re.fullmatch(r"-?\d+", text):
        return class_target(model, int(text), text)
    if _is_class_label(text, model):
        return _class_by_label(text, model)
    match = _TARGET_RE.match(text)
    if match is None:
        raise StudioError(f"Cannot read target {spec!r}: write layer, layer:channel, layer:channel@y,x or logits:\"label\".")
    info = layer_info(model, layer_key(model, match["layer"]))
    channel = None if match["unit"] is None else _channel(match["unit"].strip(), info, model, text)
    position = prefix_token = None
    if match["position"] is not None and match["position"][0].isalpha():
        prefix_token = _prefix_token(match["position"], info, channel, match["layer"])
    elif match["position"] is not None:
        position = _position(match["position"], info, channel, match["layer"])
    label = model.class_label(channel) if info.path == OUTPUT and channel is not None and model.class_names else ""
    return Target(info.path.partition(CONCEPTS)[0], channel, position, text, label, prefix_token, info.concepts)


def layer_target(model: StudioModel, layer: str) -> Target:
    """The whole of ``layer`` as one target (DeepDream's unit), also for a layer the grammar would read as a class
    index (``3`` of a ``Sequential``)."""
    info = layer_info(model, layer_key(model, layer))
    return Target(info.path.partition(CONCEPTS)[0], None, None, layer, "", None, info.concepts)


def parse_targets(expression: str | int | Target, model: StudioModel) -> list[Target]:
    """Every unit an expression names: one target, or lists and ranges of channels (``blocks.4:0-7,12``,
    ``blocks.4:*``, ``logits:"tabby","Egyptian cat"``), validated (ranges at both ends) before expanding."""
    if not isinstance(expression, str):
        return [parse_target(expression, model)]
    text = expression.strip()
    match = _TARGET_RE.match(text)
    if match is None or match["unit"] is None or _is_class_label(text, model) or re.fullmatch(r"-?\d+", text):
        return [parse_target(text, model)]
    layer, units = match["layer"], match["unit"].strip()
    where = "" if match["position"] is None else f"@{match['position']}"
    parts = _split_units(units)
    if len(parts) == 1 and parts[0] != "*" and not _RANGE.match(parts[0]):
        return [parse_target(text, model)]
    info = layer_info(model, layer_key(model, layer))
    targets = []
    for part in parts:
        if part == "*":
            elements = [str(c) for c in range(info.channels)]
        elif match := _RANGE.match(part):
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise StudioError(f"Channel range {part!r} in {expression!r} runs backwards; write {high}-{low}.")
            parse_target(f"{layer}:{high}{where}", model)  # the out-of-range message, before expanding
            elements = [str(c) for c in range(low, high + 1)]
        elif not part:
            raise StudioError(f"Target {expression!r} has an empty entry between commas.")
        else:
            elements = [part]
        targets += [parse_target(f"{layer}:{element}{where}", model) for element in elements]
    return list(dict.fromkeys(targets))  # a unit named twice (tabby, tabby cat: both class 281) renders once


def _is_class_label(text: str, model: StudioModel) -> bool:
    """A bare class label (``Egyptian cat``): no target syntax, not a layer, and the model names classes."""
    return (bool(model.class_names) and ":" not in text and "@" not in text and text != LOGITS
            and text not in model.layer_shapes and not _DOTTED.fullmatch(text) and not is_dictionary_name(text))


def _class_by_label(text: str, model: StudioModel) -> Target:
    """A bare class label; when no class has that name but a layer nearly does, the layer error is clearer."""
    try:
        return class_target(model, model.class_index(text), text)
    except StudioError:
        if difflib.get_close_matches(text, [n for n in model.layer_shapes if n], n=1, cutoff=0.7):
            resolve_layer(model, text)
        raise


def _channel(unit: str, info: LayerInfo, model: StudioModel, text: str) -> int:
    if unit.isascii() and unit.lstrip("-").isdigit() and unit.count("-") <= 1:
        channel = int(unit)  # a negative one is out of range below
    elif info.path == OUTPUT or unit[:1] in "\"'":
        if info.path != OUTPUT:
            raise StudioError(f"Class label {unit} in {text!r} applies to 'logits' only; give {info.name} a channel number.")
        channel = model.class_index(unit.strip("\"'"))
    else:
        raise StudioError(f"Channel {unit!r} in {text!r} is not a number; class labels apply to 'logits' only.")
    if not 0 <= channel < info.channels:
        unit, units = ("Class", "classes") if info.path == OUTPUT else (info.units[:-1].title(), info.units)
        raise StudioError(f"{unit} {channel} is out of range for {info.name!r}: valid {units} are 0 to {info.channels - 1}.")
    return channel


def _axes(count: int) -> tuple[str, ...]:
    """Names of the spatial axes of a map (``y, x``) or volume (``z, y, x``); ``a0-, a1-, ...`` beyond (the dash
    keeps ``a1-2`` apart from ``a12``)."""
    return {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}.get(count, tuple(f"a{i}-" for i in range(count)))


def _prefix_names(info: LayerInfo) -> str:
    return ", ".join(prefix_text(i) for i in range(info.prefix))


def _prefix_token(text: str, info: LayerInfo, channel: int | None, layer: str) -> int:
    """``cls`` is prefix token 0, ``tokenN`` prefix token N, of a token layer."""
    if info.layout != "tokens" or info.prefix == 0:
        raise StudioError(f"Layer {layer!r} has no prefix tokens ({info.describe()}); write @row,column instead of @{text}.")
    if channel is None:
        raise StudioError(f"A token target needs a channel: write {layer}:CHANNEL@{text}.")
    index = 0 if text == "cls" else int(text.removeprefix("token"))
    if index >= info.prefix:
        raise StudioError(f"Layer {layer!r} has {info.prefix} prefix token(s): {_prefix_names(info)}; not @{text}.")
    return index


def _position(text: str, info: LayerInfo, channel: int | None, layer: str) -> tuple[int, ...]:
    coords = tuple(int(v) for v in text.split(","))
    written = ",".join(map(str, coords))
    if not info.spatial:
        raise StudioError(f"Layer {layer!r} has no spatial map (shape [{info.channels}]); drop the @{written} part.")
    if channel is None:
        raise StudioError(f"A neuron position needs a channel: write {layer}:CHANNEL@{written}.")
    axes = _axes(len(info.spatial))
    if len(coords) != len(info.spatial):
        raise StudioError(f"Layer {layer!r} has a {info.describe_spatial()} map: give {len(axes)} coordinates "
                          f"(@{','.join(axes)}), not {len(coords)}.")
    if not all(0 <= c < n for c, n in zip(coords, info.spatial)):
        names = ("rows", "columns") if len(axes) == 2 else axes
        ranges = ", ".join(f"{name} 0 to {n - 1}" for name, n in zip(names, info.spatial))
        tokens = f" (its prefix tokens are {_prefix_names(info)})" if info.layout == "tokens" and info.prefix else ""
        kind = "token grid" if info.layout == "tokens" else "map"
        raise StudioError(f"Position {written} is outside the {info.describe_spatial()} {kind} of {layer!r}: "
                          f"{ranges}{tokens}.")
    return coords


def token_index(info: LayerInfo, query: str) -> int:
    """The row of a token layer's ``[N, C]`` output that a query names: ``cls``, ``tokenN`` (prefix tokens)
    or ``row,column`` (a patch of the grid), checked like a target's ``@`` part."""
    text = query.strip().removeprefix("@")
    if info.layout != "tokens":
        raise StudioError(f"Layer {info.name!r} has no tokens ({info.describe()}); a query token needs a transformer layer.")
    if text == "cls" or text.startswith("token"):
        if not re.fullmatch(r"cls|token\d+", text):
            raise StudioError(f"Query {query!r} must be cls, tokenN or a patch position row,column.")
        return _prefix_token(text, info, 0, info.name)
    if not re.fullmatch(r"\s*\d+\s*,\s*\d+\s*", text):
        raise StudioError(f"Query {query!r} must be cls, tokenN or a patch position row,column.")
    row, column = _position(text, info, 0, info.name)
    return info.prefix + row * info.spatial[1] + column


def _split_units(text: str) -> list[str]:
    """Split ``0-3, "tabby, tabby cat", 7`` at commas outside quotes (a quote opens an entry, never inside one)."""
    parts, current, quote = [], "", None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'" and not current.strip():  # a quote opens only at an entry's start: potter's wheel
            quote = char
        elif char == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return parts
