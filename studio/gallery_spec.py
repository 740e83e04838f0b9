"""Gallery specs: read a TOML file, validate every key, model, layer and channel, and expand it into items.

A spec is validated completely before any rendering starts; every mistake is one sentence naming the
key (and, for a file, its line). The result is a :class:`GallerySpec` whose ``items`` are the images to
make: one per unit (model + target) and seed, each with the settings it renders with and a ``key`` (a
hash of everything that determines its image) that the runner compares to decide what is already done.

Target expressions extend the target syntax with lists and ranges: ``blocks.4:0-63``, ``blocks.4:0,5,9-12``,
``blocks.4:*`` (every channel), ``blocks.4:3-5@7,7`` (neurons), ``logits:"Egyptian cat","tabby"``
(classes by label) and ``blocks.4`` (the whole layer, one DeepDream image).
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from studio.engine import PRECISIONS
from studio.errors import StudioError
from studio.io import read_image
from studio.models import StudioModel, load_model
from studio.param.image import PARAM_KINDS
from studio.targets import LOGITS, OUTPUT, Target, parse_target
from studio.transforms import TransformSettings

TRANSFORM_PRESETS = ("standard", "none")
ANIMATIONS = ("none", "gif", "mp4")
#: Render settings with their defaults; each may be set in [settings], in a model, or in a target table.
RENDER_DEFAULTS = {"param": "fourier", "steps": 512, "size": 128, "lr": 0.05, "transforms": "standard",
                   "decorrelate": True, "decay_power": 1.0, "precision": "float32"}
SETTINGS_KEYS = (*RENDER_DEFAULTS, "seeds", "batch")
TOP_KEYS = ("title", "description", "settings", "output", "attribution", "models")
MODEL_KEYS = ("name", "model", "pretrained", "init_seed", "targets", *SETTINGS_KEYS)
TARGET_KEYS = ("target", *(k for k in SETTINGS_KEYS if k != "batch"))
OUTPUT_KEYS = ("dir", "columns", "labels", "animation", "frames", "fps", "tile", "dpi")
ATTRIBUTION_KEYS = ("photos", "method", "layer")


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides model, target and seed that determines a rendered image."""

    param: str = "fourier"
    steps: int = 512
    size: int = 128
    lr: float = 0.05
    transforms: str = "standard"
    decorrelate: bool = True
    decay_power: float = 1.0
    precision: str = "float32"

    def as_dict(self) -> dict:
        return asdict(self)

    def engine_kwargs(self) -> dict:
        """Keyword arguments for :func:`studio.engine.optimize`."""
        return self.as_dict()


@dataclass(frozen=True)
class OutputOptions:
    """``[output]``: folder, contact-sheet columns and tile size, labels, print resolution, animation."""

    dir: Path | None = None
    columns: int | None = None
    labels: bool = True
    animation: str = "none"
    frames: int = 24
    fps: float = 8.0
    tile: int | None = None
    dpi: int = 300


@dataclass(frozen=True)
class AttributionOptions:
    """``[attribution]``: photos to explain each unit on, the method and an optional layer for Grad-CAM."""

    photos: tuple[Path, ...] = ()
    method: str = "gradcam"
    layer: str | None = None
    images: tuple[torch.Tensor, ...] = field(default=(), compare=False, repr=False)
    sha256: tuple[str, ...] = ()


@dataclass
class ModelEntry:
    """One ``[[models]]`` table: the loaded model, its name in file paths and the hash of its weights."""

    name: str
    spec: str
    pretrained: bool
    init_seed: int
    model: StudioModel
    weights_sha256: str = ""

    def identity(self) -> dict:
        """What identifies the network: spec, weights and, for random weights, the seed they were drawn with."""
        info = {"name": self.name, "spec": self.spec, "pretrained": self.pretrained,
                "weights_sha256": self.weights_sha256}
        if not self.pretrained:
            info["init_seed"] = self.init_seed
        return info


@dataclass(frozen=True)
class Unit:
    """One target of one model: what a caption, a folder and a contact-sheet tile are about."""

    model: str
    target: Target
    layer_dir: str
    stem: str
    label: str
    order: int

    @property
    def text(self) -> str:
        return self.target.text

    @property
    def whole_layer(self) -> bool:
        return self.target.channel is None

    @property
    def path(self) -> str:
        """Folder-relative stem of this unit's files, ``model/layer/c012``."""
        return f"{self.model}/{self.layer_dir}/{self.stem}"


@dataclass(frozen=True)
class Item:
    """One image to render: a unit, a seed and the settings; ``key`` hashes all that decides its pixels."""

    unit: Unit
    seed: int
    settings: RenderSettings
    batch: int | None
    key: str
    line: int | None = None

    @property
    def id(self) -> str:
        return f"{self.unit.path}_s{self.seed}"


@dataclass
class GallerySpec:
    """A validated spec: models (loaded), units, items and output options."""

    title: str
    description: str
    source: str
    text: str
    models: dict[str, ModelEntry]
    units: list[Unit]
    items: list[Item]
    output: OutputOptions
    attribution: AttributionOptions
    base_dir: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def digest(data) -> str:
    """SHA-256 of a JSON-serialisable value (sorted keys): the settings key of items and attributions."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def weights_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over every tensor of the state dict (names, dtypes, shapes and bytes), in state-dict order."""
    hasher = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def safe_name(text: str) -> str:
    """A name usable as a file or folder name on every OS (and in a URL)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "unit"


class _Source:
    """The raw TOML text, to point error messages at the line where a key or value is written."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str, name: str) -> None:
        self.lines = text.splitlines()
        self.name = name

    def section(self, header: str, index: int = 0) -> tuple[int, int]:
        """1-based line range of the ``index``-th table called ``header`` (whole text when not found)."""
        starts = [n for n, line in enumerate(self.lines, 1)
                  if (m := self._HEADER.match(line)) and m.group(1).replace('"', "") == header]
        if index >= len(starts):
            return 1, len(self.lines)
        start = starts[index]
        end = next((n - 1 for n in range(start + 1, len(self.lines) + 1)
                    if (m := self._HEADER.match(self.lines[n - 1]))
                    and not m.group(1).replace('"', "").startswith(f"{header}.")), len(self.lines))
        return start, end

    def top(self) -> tuple[int, int]:
        """Lines before the first table header."""
        first = next((n for n, line in enumerate(self.lines, 1) if self._HEADER.match(line)), len(self.lines) + 1)
        return 1, first - 1

    def find(self, pattern: str, span: tuple[int, int] | None = None) -> int | None:
        start, end = span or (1, len(self.lines))
        regex = re.compile(pattern)
        return next((n for n in range(start, end + 1) if regex.search(self.lines[n - 1])), None)

    def key_line(self, key: str, span: tuple[int, int] | None = None) -> int | None:
        return self.find(rf'(^|[{{,])\s*["\']?{re.escape(key)}["\']?\s*=', span)

    def value_line(self, value: str, span: tuple[int, int] | None = None) -> int | None:
        return self.find(re.escape(value), span) if value else None


class _Checker:
    """Validation with locations: ``fail(where, message, line)`` raises a one-sentence ``StudioError``."""

    def __init__(self, source: _Source | None) -> None:
        self.source = source

    def fail(self, where: str, message: str, line: int | None = None):
        if self.source is not None:
            prefix = f"{self.source.name} line {line}, {where}" if line else f"{self.source.name}, {where}"
        else:
            prefix = where
        raise StudioError(f"{prefix}: {message[:1].lower() + message[1:]}")

    def keys(self, table: Mapping, allowed: tuple[str, ...], where: str, span: tuple[int, int] | None = None) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys are {', '.join(allowed)}."
                line = self.source.key_line(key, span) if self.source else None
                self.fail(where, f"unknown key {key!r}; {hint}", line)

    def line(self, key: str, span: tuple[int, int] | None = None) -> int | None:
        return self.source.key_line(key, span) if self.source else None


def _typed(checker: _Checker, value, kind, where: str, key: str, span, *, minimum=None, choices=None):
    """Check one value's type, range and allowed choices; return it (ints accepted where floats are)."""
    line = checker.line(key, span)
    names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        checker.fail(where, f"{key} must be {names[kind]}, not {value!r}.", line)
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        checker.fail(where, f"{key} = {value!r} is not one of {', '.join(choices)}{hint}", line)
    if minimum is not None and value < minimum:
        checker.fail(where, f"{key} must be at least {minimum}, not {value!r}.", line)
    return value


def _settings(checker: _Checker, table: Mapping, inherited: dict, where: str, span) -> dict:
    """Merge the render settings, seeds and batch of ``table`` over ``inherited``, checking each value."""
    merged = dict(inherited)
    checks = {"param": (str, None, PARAM_KINDS), "steps": (int, 1, None), "size": (int, 8, None),
              "lr": (float, None, None), "transforms": (str, None, TRANSFORM_PRESETS),
              "decorrelate": (bool, None, None), "decay_power": (float, 0.0, None),
              "precision": (str, None, PRECISIONS)}
    for key, (kind, minimum, choices) in checks.items():
        if key in table:
            merged[key] = _typed(checker, table[key], kind, where, key, span, minimum=minimum, choices=choices)
    if "lr" in table and merged["lr"] <= 0:
        checker.fail(where, f"lr must be positive, not {table['lr']!r}.", checker.line("lr", span))
    if "seeds" in table:
        seeds = table["seeds"]
        seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            checker.fail(where, f"seeds must be a whole number or a list of them (e.g. [0, 1, 2]), not {table['seeds']!r}.",
                         checker.line("seeds", span))
        merged["seeds"] = list(dict.fromkeys(seeds))
    if "batch" in table:
        batch = table["batch"]
        if batch != "auto":
            batch = _typed(checker, batch, int, where, "batch", span, minimum=1)
        merged["batch"] = None if batch == "auto" else batch
    return merged


def _split_units(text: str) -> list[str]:
    """Split ``0-3, "tabby, tabby cat", 7`` at commas outside quotes."""
    parts, current, quote = [], "", None
    for char in text:
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return parts


_POSITION = re.compile(r"@\s*(-?\d+)\s*,\s*(-?\d+)\s*$")
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")


def expand_targets(expression: str, model: StudioModel) -> list[Target]:
    """Every target an expression names, validated against ``model`` (ranges checked at both ends)."""
    text = expression.strip()
    position = ""
    if match := _POSITION.search(text):
        position, text = f"@{match.group(1)},{match.group(2)}", text[:match.start()].strip()
    layer, colon, units = text.partition(":")
    layer = layer.strip()
    if not colon:
        return [parse_target(f"{layer}{position}", model)]
    if not units.strip():
        raise StudioError(f"Target {expression!r} has nothing after ':'; give channels like 0-63, 3,7 or *.")
    channels = parse_target(layer, model)
    count = model.layer_shapes[channels.layer][0]
    targets = []
    for part in _split_units(units):
        if part == "*":
            elements = [str(c) for c in range(count)]
        elif match := _RANGE.match(part):
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise StudioError(f"Channel range {part!r} in {expression!r} runs backwards; write {high}-{low}.")
            parse_target(f"{layer}:{high}", model)  # the out-of-range message, before expanding
            elements = [str(c) for c in range(low, high + 1)]
        elif not part:
            raise StudioError(f"Target {expression!r} has an empty entry between commas.")
        else:
            elements = [part]
        targets += [parse_target(f"{layer}:{element}{position}", model) for element in elements]
    return targets


def _unit(model_name: str, model: StudioModel, target: Target, order: int) -> Unit:
    """Canonical text, folder, file stem and caption label of one parsed target."""
    shape = model.layer_shapes[target.layer]
    layer_name = LOGITS if target.layer == OUTPUT else target.layer
    layer_dir = safe_name(layer_name)
    if target.channel is None:
        return Unit(model_name, Target(target.layer, None, target.position, layer_name), layer_dir, "layer", "whole layer", order)
    width = len(str(shape[0] - 1))
    stem = f"c{target.channel:0{width}d}"
    text = f"{layer_name}:{target.channel}"
    if target.position is not None:
        y, x = target.position
        stem += f"_y{y}_x{x}"
        text += f"@{y},{x}"
    label = ""
    if target.layer == OUTPUT and model.class_names:
        label = model.class_names[target.channel]
    return Unit(model_name, Target(target.layer, target.channel, target.position, text), layer_dir, stem, label, order)


def _load(checker: _Checker, entry: Mapping, where: str, span, models: Mapping | None, device) -> tuple[StudioModel, bool, int]:
    spec = entry["model"]
    pretrained = _typed(checker, entry.get("pretrained", True), bool, where, "pretrained", span)
    init_seed = _typed(checker, entry.get("init_seed", 0), int, where, "init_seed", span, minimum=0)
    if models and spec in models:
        return load_model(models[spec]), pretrained, init_seed
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)  # random weights (pretrained = false) are reproducible
            model = load_model(spec, pretrained=pretrained, device=device)
    except StudioError as error:
        checker.fail(where, str(error), checker.line("model", span))
    except Exception as error:  # weights files, factories: anything a user-given model can raise
        checker.fail(where, f"cannot load model {spec!r} ({type(error).__name__}: {error}).", checker.line("model", span))
    return model, pretrained, init_seed


def _output(checker: _Checker, table: Mapping, source: _Source | None, base: Path) -> OutputOptions:
    span = source.section("output") if source else None
    checker.keys(table, OUTPUT_KEYS, "[output]", span)
    where = "[output]"
    options = {}
    if "dir" in table:
        options["dir"] = Path(os.path.normpath(base / _typed(checker, table["dir"], str, where, "dir", span)))
    if "columns" in table:
        options["columns"] = _typed(checker, table["columns"], int, where, "columns", span, minimum=1)
    if "labels" in table:
        options["labels"] = _typed(checker, table["labels"], bool, where, "labels", span)
    if "animation" in table:
        animation = table["animation"]
        animation = "none" if animation is False else ("gif" if animation is True else animation)
        options["animation"] = _typed(checker, animation, str, where, "animation", span, choices=ANIMATIONS)
        if options["animation"] == "mp4" and not (importlib.util.find_spec("imageio_ffmpeg")
                                                  or importlib.util.find_spec("av")):
            checker.fail(where, "animation = 'mp4' needs an MP4 writer for imageio: pip install imageio-ffmpeg, "
                                "or write animation = 'gif'.", checker.line("animation", span))
    for key, kind, minimum in (("frames", int, 2), ("fps", float, 0.1), ("tile", int, 8), ("dpi", int, 1)):
        if key in table:
            options[key] = _typed(checker, table[key], kind, where, key, span, minimum=minimum)
    return OutputOptions(**options)


def _attribution(checker: _Checker, table: Mapping, source: _Source | None, base: Path) -> AttributionOptions:
    span = source.section("attribution") if source else None
    where = "[attribution]"
    checker.keys(table, ATTRIBUTION_KEYS, where, span)
    photos = table.get("photos", [])
    photos = [photos] if isinstance(photos, str) else photos
    if not isinstance(photos, list) or not all(isinstance(p, str) for p in photos):
        checker.fail(where, "photos must be a list of image paths.", checker.line("photos", span))
    paths = []
    for photo in photos:
        path = (base / photo).resolve()
        if not path.is_file():
            checker.fail(where, f"photo {photo!r} does not exist (paths are relative to the spec's folder).",
                         source.value_line(photo, span) if source else None)
        paths.append(path)
    method = _typed(checker, table.get("method", "gradcam"), str, where, "method", span)
    layer = table.get("layer")
    if layer is not None:
        layer = _typed(checker, layer, str, where, "layer", span)
    if paths:
        try:
            from studio import attribution
        except ImportError:
            checker.fail(where, "photos to attribute need studio.attribution, which this installation lacks; "
                                "remove the [attribution] table.", checker.line("photos", span))
        methods = getattr(attribution, "METHODS", None)
        if methods is not None:
            _typed(checker, method, str, where, "method", span, choices=tuple(methods))
    images = []
    for photo, path in zip(photos, paths):
        try:
            images.append(read_image(path))
        except StudioError as error:
            checker.fail(where, str(error), source.value_line(photo, span) if source else None)
    hashes = tuple(hashlib.sha256(path.read_bytes()).hexdigest() for path in paths)
    return AttributionOptions(tuple(paths), method, layer, tuple(images), hashes)


def parse_spec(data: Mapping, *, text: str = "", name: str = "spec", base_dir: str | Path = ".",
               models: Mapping[str, StudioModel | str] | None = None,
               device: torch.device | str | None = None) -> GallerySpec:
    """Validate a parsed spec (``text`` is its TOML source, for line numbers) and expand it into items.

    ``models`` maps model specs (``efficientnet_lite0``) to already loaded models, used as they are.
    """
    source = _Source(text, name) if text else None
    checker = _Checker(source)
    base = Path(base_dir)
    checker.keys(data, TOP_KEYS, "the top level", source.top() if source else None)
    title = _typed(checker, data.get("title", "Feature Studio gallery"), str, "the top level", "title", None)
    description = _typed(checker, data.get("description", ""), str, "the top level", "description", None)
    settings_table = data.get("settings", {})
    settings_span = source.section("settings") if source else None
    if not isinstance(settings_table, Mapping):
        checker.fail("the top level", "settings must be a table: write [settings].", checker.line("settings"))
    checker.keys(settings_table, SETTINGS_KEYS, "[settings]", settings_span)
    defaults = _settings(checker, settings_table, {**RENDER_DEFAULTS, "seeds": [0], "batch": None}, "[settings]",
                         settings_span)
    for table_key in ("output", "attribution"):
        if not isinstance(data.get(table_key, {}), Mapping):
            checker.fail("the top level", f"{table_key} must be a table: write [{table_key}].", checker.line(table_key))
    output = _output(checker, data.get("output", {}), source, base)
    attribution = _attribution(checker, data.get("attribution", {}), source, base)

    entries = data.get("models")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) for e in entries):
        checker.fail("the top level", "a gallery needs at least one [[models]] table with model = ... and targets = [...].",
                     checker.line("models"))
    loaded: dict[str, ModelEntry] = {}
    units: dict[tuple[str, str], Unit] = {}
    items: dict[str, Item] = {}
    for index, entry in enumerate(entries):
        span = source.section("models", index) if source else None
        where = f"[[models]] #{index + 1}"
        checker.keys(entry, MODEL_KEYS, where, span)
        if "model" not in entry:
            checker.fail(where, "model is missing; write model = \"efficientnet_lite0\" (or torchvision:NAME, timm:NAME).",
                         source.section("models", index)[0] if source else None)
        _typed(checker, entry["model"], str, where, "model", span)
        model_name = safe_name(_typed(checker, entry.get("name", entry["model"]), str, where, "name", span))
        where = f"model {model_name!r}"
        if model_name in loaded:
            checker.fail(where, f"two models are called {model_name!r}; give each a different name = \"...\".",
                         checker.line("name", span) or checker.line("model", span))
        model_settings = _settings(checker, entry, defaults, where, span)
        targets = entry.get("targets")
        if not isinstance(targets, list) or not targets:
            checker.fail(where, 'targets must list at least one target, e.g. targets = ["blocks.4:0-15", \'logits:"Egyptian cat"\'].',
                         checker.line("targets", span) or (span[0] if span else None))
        model, pretrained, init_seed = _load(checker, entry, where, span, models, device)
        loaded[model_name] = ModelEntry(model_name, entry["model"], pretrained, init_seed, model)
        _expand_model(checker, source, span, where, model_name, model, targets, model_settings, units, items)
    spec = GallerySpec(title, description, name, text, loaded, list(units.values()), [], output, attribution, base)
    for entry in loaded.values():
        entry.weights_sha256 = weights_sha256(entry.model.module)
    spec.items = [_keyed(item, loaded[item.unit.model]) for item in items.values()]
    return spec


def _expand_model(checker: _Checker, source: _Source | None, span, where: str, model_name: str, model: StudioModel,
                  targets: list, model_settings: dict, units: dict[tuple[str, str], Unit], items: dict[str, Item]) -> None:
    """Add the units and items of one model's ``targets`` (strings or inline tables with settings)."""
    for position, target_entry in enumerate(targets):
        where_target = f"{where} targets[{position}]"
        if isinstance(target_entry, Mapping):
            target_line = source.value_line(str(target_entry.get("target", "")), span) if source else None
            target_span = (target_line, target_line) if target_line else span
            checker.keys(target_entry, TARGET_KEYS, where_target, target_span)
            if "target" not in target_entry:
                checker.fail(where_target, 'a target table needs target = "layer:channels".', span[0] if span else None)
            expression = _typed(checker, target_entry["target"], str, where_target, "target", target_span)
            unit_settings = _settings(checker, target_entry, model_settings, where_target, target_span)
        elif isinstance(target_entry, str):
            expression, unit_settings = target_entry, model_settings
        else:
            checker.fail(where_target, f"a target must be a string or an inline table, not {target_entry!r}.",
                         checker.line("targets", span))
        line = source.value_line(expression, span) if source else None
        try:
            parsed = expand_targets(expression, model)
        except StudioError as error:
            checker.fail(f"{where_target} {expression!r}", str(error), line)
        render = RenderSettings(**{k: unit_settings[k] for k in RENDER_DEFAULTS})
        for target in parsed:
            unit = _unit(model_name, model, target, len(units))
            unit = units.setdefault((model_name, unit.text), unit)
            for seed in unit_settings["seeds"]:
                item = Item(unit, seed, render, unit_settings["batch"], "", line)
                previous = items.get(item.id)
                if previous is not None and previous.settings != render:
                    where_line = f" (line {previous.line})" if previous.line else ""
                    checker.fail(f"{where_target} {expression!r}",
                                 f"{unit.text} seed {seed} is already listed{where_line} with other settings; "
                                 "list each unit once per model.", line)
                items.setdefault(item.id, item)


def _keyed(item: Item, entry: ModelEntry) -> Item:
    """The item with its settings key: model identity, target, seed and render settings, hashed."""
    target = item.unit.target
    key = digest({"model": {k: v for k, v in entry.identity().items() if k != "name"},
                  "target": {"layer": target.layer, "channel": target.channel, "position": target.position},
                  "seed": item.seed, "settings": item.settings.as_dict(),
                  "transforms": TransformSettings.preset(item.settings.transforms).as_dict()})
    return Item(item.unit, item.seed, item.settings, item.batch, key, item.line)


def load_spec(spec: str | Path | Mapping | GallerySpec, *, models: Mapping[str, StudioModel | str] | None = None,
              device: torch.device | str | None = None) -> GallerySpec:
    """A validated :class:`GallerySpec` from a TOML file path, a parsed mapping, or one already loaded."""
    if isinstance(spec, GallerySpec):
        return spec
    if isinstance(spec, Mapping):
        return parse_spec(spec, models=models, device=device)
    path = Path(spec)
    if not path.is_file():
        raise StudioError(f"Gallery spec {str(path)!r} does not exist; give the path of a .toml file.")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudioError(f"{path.name} is not valid TOML: {error}.") from None
    return parse_spec(data, text=text, name=path.name, base_dir=path.parent, models=models, device=device)
