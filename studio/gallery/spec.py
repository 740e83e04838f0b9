"""Gallery specs: read a TOML file, validate every key, model, layer and channel, and expand it into items.

A spec is validated completely before any rendering starts; every mistake is one sentence naming the
key (and, for a file, its line). The result is a :class:`GallerySpec` whose ``items`` are the images to
make: one per unit (model + target) and seed, each with the settings it renders with and a ``key`` (a
hash of everything that determines its image) that the runner compares to decide what is already done.
Targets use the one target grammar (:func:`studio.targets.parse_targets`): ``blocks.4:0-63``, ``blocks.4:*``,
``blocks.4:3-5@7,7``, ``logits:"Egyptian cat","tabby"``, ``blocks.4`` (the whole layer).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from studio.attribution import METHODS, method_options
from studio.concepts.dictionary import is_dictionary_name, load_dictionary
from studio.errors import StudioError
from studio.exemplars import IndexInfo
from studio.exemplars.scores import layers_below
from studio.gallery.loading import ModelEntry, load_entry, read_index, read_photos, weights_sha256
from studio.gallery.validation import SETTINGS_KEYS, Checker, Source
from studio.models import StudioModel
from studio.settings import RenderSettings
from studio.targets import Target, from_folder, layer_info, parse_targets, safe_name
from studio.transforms import TransformSettings

ANIMATIONS = ("none", "gif", "mp4")
TOP_KEYS = ("title", "description", "settings", "output", "attribution", "examples", "models")
MODEL_KEYS = ("name", "model", "pretrained", "init_seed", "input", "mean", "std", "trust", "targets", "concepts",
              *SETTINGS_KEYS)
TARGET_KEYS = ("target", *(k for k in SETTINGS_KEYS if k != "batch"))
OUTPUT_KEYS = ("dir", "columns", "labels", "animation", "frames", "fps", "tile", "dpi")
ATTRIBUTION_KEYS = ("photos", "method", "layer")
EXAMPLES_KEYS = ("index", "count", "path_check")
#: Most dataset-example crops shown beside one render.
MAX_EXAMPLES = 64

__all__ = ["GallerySpec", "Item", "ModelEntry", "Unit", "digest", "load_spec", "parse_spec", "weights_sha256"]


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


@dataclass(frozen=True)
class ExamplesOptions:
    """``[examples]``: the dataset-example index (its SHA-256 decides when shown examples are redone, never a
    render), crops shown per unit, whether to run the path check, the digest of the weights it was built with
    (:func:`studio.models.weights_sha256`) and the spec's models that have them."""

    index: Path | None = None
    count: int = 8
    path_check: bool = True
    sha256: str = ""
    weights: str = ""
    models: tuple[str, ...] = ()
    info: IndexInfo | None = field(default=None, compare=False, repr=False)

    def covers(self, unit: Unit) -> bool:
        """Whether ``unit`` is shown with dataset examples (a channel, neuron or class of an indexed model)."""
        return self.index is not None and unit.model in self.models and not unit.whole_layer


@dataclass(frozen=True)
class Unit:
    """One target of one model (its ``target`` canonical, classes by index): what a caption, a folder and a
    contact-sheet tile are about. ``channels`` is its layer's channel count (for zero-padded file names)."""

    model: str
    target: Target
    channels: int
    order: int

    @property
    def text(self) -> str:
        return self.target.name

    @property
    def whole_layer(self) -> bool:
        return self.target.whole_layer

    @property
    def layer_dir(self) -> str:
        return safe_name(self.target.layer_name)

    @property
    def path(self) -> str:
        """Folder-relative stem of this unit's files, ``model/layer/c012``."""
        return f"{self.model}/{self.layer_dir}/{self.target.file_stem(self.channels)}"


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
    examples: ExamplesOptions = field(default_factory=ExamplesOptions)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def digest(data) -> str:
    """SHA-256 of a JSON-serialisable value (sorted keys): the settings key of items and attributions."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _output(checker: Checker, table: Mapping, base: Path) -> OutputOptions:
    span = checker.section("output")
    where = "[output]"
    checker.keys(table, OUTPUT_KEYS, where, span)
    options = {}
    if "dir" in table:
        options["dir"] = Path(os.path.normpath(base / checker.typed(table["dir"], str, where, "dir", span)))
    if "columns" in table:
        options["columns"] = checker.typed(table["columns"], int, where, "columns", span, minimum=1)
    if "labels" in table:
        options["labels"] = checker.typed(table["labels"], bool, where, "labels", span)
    if "animation" in table:
        animation = table["animation"]
        animation = "none" if animation is False else ("gif" if animation is True else animation)
        options["animation"] = checker.typed(animation, str, where, "animation", span, choices=ANIMATIONS)
        if options["animation"] == "mp4" and not (importlib.util.find_spec("imageio_ffmpeg")
                                                  or importlib.util.find_spec("av")):
            checker.fail(where, "animation = 'mp4' needs an MP4 writer for imageio: pip install imageio-ffmpeg, "
                                "or write animation = 'gif'.", checker.line("animation", span))
    for key, kind, minimum in (("frames", int, 2), ("fps", float, 0.1), ("tile", int, 8), ("dpi", int, 1)):
        if key in table:
            options[key] = checker.typed(table[key], kind, where, key, span, minimum=minimum)
    return OutputOptions(**options)


def _attribution(checker: Checker, table: Mapping, base: Path) -> AttributionOptions:
    span = checker.section("attribution")
    where = "[attribution]"
    checker.keys(table, ATTRIBUTION_KEYS, where, span)
    photos = table.get("photos", [])
    photos = [photos] if isinstance(photos, str) else photos
    if not isinstance(photos, list) or not all(isinstance(p, str) for p in photos):
        checker.fail(where, "photos must be a list of image paths.", checker.line("photos", span))
    method = checker.typed(table.get("method", "gradcam"), str, where, "method", span, choices=METHODS)
    layer = table.get("layer")
    if layer is not None:
        layer = checker.typed(layer, str, where, "layer", span)
        if "layer" not in method_options(method):
            checker.fail(where, f"layer applies to Grad-CAM only, not to method = {method!r}; remove it or use "
                                "gradcam or gradcam++.", checker.line("layer", span))
    paths, images, hashes = read_photos(checker, photos, base, where, span)
    return AttributionOptions(paths, method, layer, images, hashes)


def _examples(checker: Checker, table: Mapping | None, base: Path) -> ExamplesOptions:
    """``[examples]`` (when given) checked, its index opened (before any rendering) and hashed."""
    if table is None:
        return ExamplesOptions()
    span = checker.section("examples")
    where = "[examples]"
    checker.keys(table, EXAMPLES_KEYS, where, span)
    if "index" not in table:
        checker.fail(where, 'index is missing; write index = "examples.sqlite" (built by studio index).',
                     span[0] if span else None)
    name = checker.typed(table["index"], str, where, "index", span)
    count = checker.typed(table.get("count", 8), int, where, "count", span, minimum=1, maximum=MAX_EXAMPLES)
    path_check = checker.typed(table.get("path_check", True), bool, where, "path_check", span)
    path, info, weights, sha256 = read_index(checker, name, base, where, span)
    if path_check and info.images - info.unreadable < 2:
        checker.fail(where, f"the path check needs at least 2 indexed images, and {name!r} has "
                            f"{info.images - info.unreadable}; index more or write path_check = false.",
                     checker.line("index", span))
    return ExamplesOptions(path, count, path_check, sha256, weights, (), info)


def _indexed_models(checker: Checker, options: ExamplesOptions, models: Mapping[str, ModelEntry]) -> ExamplesOptions:
    """The options with the models whose weights the index was built with; an index of none of them is an error."""
    if options.index is None:
        return options
    names = tuple(name for name, entry in models.items() if weights_sha256(entry.model.module) == options.weights)
    if not names:
        checker.fail("[examples]", f"index {options.index.name!r} was built with another model ({options.info.model} "
                                   f"at {options.info.input}), not with the weights of {', '.join(models)}; index "
                                   "the spec's model.", checker.line("index", checker.section("examples")))
    return replace(options, models=names)


def _check_indexed(checker: Checker, options: ExamplesOptions, models: Mapping[str, ModelEntry],
                   items: list[Item]) -> None:
    """Every unit shown with examples is a channel the index holds (and, for the path check, has layers with
    maps below it), each mistake located at the unit's target line."""
    info, first = options.info, {}
    for item in items:
        first.setdefault(item.unit, item)
    for unit, item in first.items():
        if not options.covers(unit):
            continue
        where = f"model {unit.model!r} target {unit.text!r}"
        layer, channel = unit.target.layer_name, unit.target.channel
        if unit.target.concepts and info.dictionaries.get(layer) != load_dictionary(unit.target.concepts).sha256:
            checker.fail(where, f"index {options.index.name!r} holds the examples of another dictionary called "
                                f"{layer!r}; index this one (studio index ... --layers {layer}).", item.line)
        if info.layers.get(layer, 0) <= channel:
            held = ", ".join(f"{name} (channels 0 to {count - 1})" for name, count in info.layers.items())
            checker.fail(where, f"index {options.index.name!r} holds {held}, not {layer}:{channel}; index that layer "
                                "or remove the target.", item.line)
        if options.path_check:
            try:
                layers_below(models[unit.model].model, unit.target)
            except StudioError as error:
                checker.fail(where, f"{error.args[0].rstrip('.')}; write path_check = false in [examples].", item.line)


def parse_spec(data: Mapping, *, text: str = "", name: str = "spec", base_dir: str | Path = ".",
               models: Mapping[str, StudioModel | str] | None = None,
               device: torch.device | str | None = None) -> GallerySpec:
    """Validate a parsed spec (``text`` is its TOML source, for line numbers) and expand it into items.

    ``models`` maps model specs (``efficientnet_lite0``) to already loaded models, used as they are.
    """
    checker = Checker(Source(text, name) if text else None)
    base = Path(base_dir)
    checker.keys(data, TOP_KEYS, "the top level", checker.source.top() if checker.source else None)
    title = checker.typed(data.get("title", "Feature Studio gallery"), str, "the top level", "title", None)
    description = checker.typed(data.get("description", ""), str, "the top level", "description", None)
    settings_table = data.get("settings", {})
    if not isinstance(settings_table, Mapping):
        checker.fail("the top level", "settings must be a table: write [settings].", checker.line("settings"))
    settings_span = checker.section("settings")
    checker.keys(settings_table, SETTINGS_KEYS, "[settings]", settings_span)
    defaults = checker.settings(settings_table, {**RenderSettings().as_dict(), "seeds": [0], "batch": None},
                                "[settings]", settings_span)
    for table_key in ("output", "attribution", "examples"):
        if not isinstance(data.get(table_key, {}), Mapping):
            checker.fail("the top level", f"{table_key} must be a table: write [{table_key}].", checker.line(table_key))
    output = _output(checker, data.get("output", {}), base)
    attribution = _attribution(checker, data.get("attribution", {}), base)
    examples = _examples(checker, data.get("examples"), base)

    entries = data.get("models")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, Mapping) for e in entries):
        checker.fail("the top level", "a gallery needs at least one [[models]] table with model = ... and targets = [...].",
                     checker.line("models"))
    loaded: dict[str, ModelEntry] = {}
    units: dict[tuple[str, str], Unit] = {}
    items: dict[str, Item] = {}
    for index, entry in enumerate(entries):
        span = checker.section("models", index)
        where = f"[[models]] #{index + 1}"
        checker.keys(entry, MODEL_KEYS, where, span)
        if "model" not in entry:
            checker.fail(where, "model is missing; write model = \"efficientnet_lite0\" (or torchvision:NAME, timm:NAME).",
                         span[0] if span else None)
        checker.typed(entry["model"], str, where, "model", span)
        model_name = safe_name(checker.typed(entry.get("name", entry["model"]), str, where, "name", span))
        where = f"model {model_name!r}"
        if model_name in loaded:
            checker.fail(where, f"two models are called {model_name!r}; give each a different name = \"...\".",
                         checker.line("name", span) or checker.line("model", span))
        model_settings = checker.settings(entry, defaults, where, span)
        listed = entry.get("targets", [])
        targets = [*listed, *_concepts(checker, entry.get("concepts", []), where, span)] if isinstance(listed, list) else []
        if not targets:
            checker.fail(where, 'targets must list at least one target, e.g. targets = ["blocks.4:0-15", \'logits:"Egyptian cat"\'], '
                         'or concepts name a dictionary (concepts = "blocks5.concepts").',
                         checker.line("targets", span) or (span[0] if span else None))
        loaded[model_name] = load_entry(checker, model_name, entry, where, span, models, device)
        _expand_model(checker, span, where, loaded[model_name], targets, model_settings, units, items, base)
    examples = _indexed_models(checker, examples, loaded)
    _check_indexed(checker, examples, loaded, list(items.values()))
    spec = GallerySpec(title, description, name, text, loaded, list(units.values()), [], output, attribution, base,
                       examples)
    for entry in loaded.values():
        entry.weights_sha256 = weights_sha256(entry.model.module)
    spec.items = [_keyed(item, loaded[item.unit.model]) for item in items.values()]
    return spec


def _concepts(checker: Checker, value, where: str, span) -> list[str]:
    """``concepts = "blocks5.concepts"`` (or a list of dictionaries): every concept of each, as targets."""
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, list) or not all(isinstance(f, str) and is_dictionary_name(f) for f in files):
        return checker.fail(where, f'concepts must name dictionary files ending in .concepts, e.g. concepts = '
                     f'"blocks5.concepts", not {value!r}.', checker.line("concepts", span))
    return [f"{file}:*" for file in files]


def _expand_model(checker: Checker, span, where: str, entry: ModelEntry, targets: list, model_settings: dict,
                  units: dict[tuple[str, str], Unit], items: dict[str, Item], base: Path) -> None:
    """Add the units and items of one model's ``targets`` (strings or inline tables with settings); dictionary
    files are read relative to the spec's folder ``base``."""
    for position, target_entry in enumerate(targets):
        where_target = f"{where} targets[{position}]"
        if isinstance(target_entry, Mapping):
            target_line = checker.value_line(str(target_entry.get("target", "")), span)
            target_span = (target_line, target_line) if target_line else span
            checker.keys(target_entry, TARGET_KEYS, where_target, target_span)
            if "target" not in target_entry:
                checker.fail(where_target, 'a target table needs target = "layer:channels".', span[0] if span else None)
            expression = checker.typed(target_entry["target"], str, where_target, "target", target_span)
            unit_settings = checker.settings(target_entry, model_settings, where_target, target_span)
        elif isinstance(target_entry, str):
            expression, unit_settings = target_entry, model_settings
        else:
            checker.fail(where_target, f"a target must be a string or an inline table, not {target_entry!r}.",
                         checker.line("targets", span))
        line = checker.value_line(expression, span)
        try:
            parsed = parse_targets(from_folder(expression, base), entry.model)
        except StudioError as error:
            checker.fail(f"{where_target} {expression!r}", str(error), line)
        try:
            render = RenderSettings(**{k: v for k, v in unit_settings.items() if k not in ("seeds", "batch")})
        except StudioError as error:  # settings that are each valid but not together
            checker.fail(f"{where_target} {expression!r}", str(error), line)
        for target in parsed:
            _one_dictionary_per_name(checker, target, [u for (model, _), u in units.items() if model == entry.name],
                                     f"{where_target} {expression!r}", line)
            canonical = replace(target, text=target.name)
            unit = Unit(entry.name, canonical, layer_info(entry.model, target.layer_key).channels, len(units))
            unit = units.setdefault((entry.name, unit.text), unit)
            for seed in unit_settings["seeds"]:
                item = Item(unit, seed, render, unit_settings["batch"], "", line)
                previous = items.get(item.id)
                if previous is not None and previous.settings != render:
                    where_line = f" (line {previous.line})" if previous.line else ""
                    checker.fail(f"{where_target} {expression!r}",
                                 f"{unit.text} seed {seed} is already listed{where_line} with other settings; "
                                 "list each unit once per model.", line)
                items.setdefault(item.id, item)


def _one_dictionary_per_name(checker: Checker, target: Target, units: list[Unit], where: str, line: int | None) -> None:
    """A model's units are named by their dictionary's file name: two different files of one name would be one."""
    if target.concepts is None:
        return
    for unit in units:
        other = unit.target.concepts
        if other and other != target.concepts and unit.target.layer_name == target.layer_name:
            checker.fail(where, f"two dictionaries are called {target.layer_name!r} ({other} and "
                         f"{target.concepts}); rename one.", line)


def dictionary_identity(target: Target) -> dict:
    """What a render or heat map of a concept depends on beyond its name: its dictionary's hash (a dictionary
    learned again under the same name renders again); nothing for a channel."""
    return {"concepts": load_dictionary(target.concepts).sha256} if target.concepts else {}


def _keyed(item: Item, entry: ModelEntry) -> Item:
    """The item with its settings key: model identity, target, seed and render settings, hashed."""
    target = item.unit.target
    key = digest({"model": {k: v for k, v in entry.identity().items() if k != "name"},
                  "target": {"layer": target.layer, "channel": target.channel, "position": target.position,
                             **dictionary_identity(target)},
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
    if path.is_dir():
        raise StudioError(f"Gallery spec {str(path)!r} is a folder; give the path of a .toml file.")
    if not path.is_file():
        raise StudioError(f"Gallery spec {str(path)!r} does not exist; give the path of a .toml file.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[:error.start].count(b"\n") + 1
        raise StudioError(f"{path.name} is not UTF-8 text (byte {error.start}, line {line}); save it as UTF-8 "
                          "TOML.") from None
    except OSError as error:
        raise StudioError(f"Cannot read gallery spec {str(path)!r}: {error.strerror}.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise StudioError(f"{path.name} is not valid TOML: {error}.") from None
    return parse_spec(data, text=text, name=path.name, base_dir=path.parent, models=models, device=device)
