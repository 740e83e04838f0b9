"""Reading a dataset-example index: a unit's top images with their crops, its statistics, and what the index
holds. Targets are channels, written as anywhere else: ``blocks.4:12``, ``logits:285`` (or ``285``)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio.concepts.dictionary import is_dictionary_name, load_dictionary
from studio.errors import StudioError
from studio.exemplars import histogram, store
from studio.io import read_input
from studio.models import StudioModel, parse_input, weights_sha256
from studio.targets import LOGITS, Target, parse_target, split_target

#: The quantiles :func:`unit_statistics` reports.
QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class Example:
    """One of a unit's top images: the file, its ``score`` (the channel's spatial maximum in it), the
    ``position`` of that strongest neuron on the layer's grid (``()`` for a vector such as the logits), and the
    neuron's receptive field ``box`` in the file's own pixels, ``(start, stop)`` per axis (rows, then columns;
    depth first in a volume). ``channels`` is how many the model reads."""

    path: Path
    score: float
    position: tuple[int, ...]
    box: tuple[tuple[int, int], ...]
    channels: int = 3

    def crop(self) -> torch.Tensor:
        """The box cut from the file, ``[C, h, w]`` (``[C, d, h, w]`` for a volume), float in ``[0, 1]``."""
        image = read_input(self.path, self.channels, len(self.box))
        return image[(slice(None), *(slice(start, stop) for start, stop in self.box))]


@dataclass(frozen=True)
class UnitStatistics:
    """A channel over the readable images of the folder: how many ``images``; the ``mean`` activation (over every
    position of every image: the mean of a channel target's value); ``max``, the largest activation anywhere (the
    top example's score); ``max_mean``, the largest spatial mean of one image (the dataset maximum of a channel
    target's value, as renders report it); and ``quantiles`` of each image's spatial maximum, read from a fixed
    signed-log histogram (:mod:`studio.exemplars.histogram`, within 1.8 %) and capped at ``max``."""

    images: int
    mean: float
    max: float
    max_mean: float
    quantiles: dict[float, float]


@dataclass(frozen=True)
class IndexInfo:
    """What an index holds: the ``model`` and ``input`` it was built with, its ``layers`` (name: channels),
    ``top_k``, how many ``images`` were seen and how many of those were ``unreadable``, the SHA-256 of the
    ``weights`` (:func:`studio.models.weights_sha256`) and of each concept dictionary it indexes (by name)."""

    path: Path
    model: str
    input: str
    layers: dict[str, int]
    top_k: int
    images: int
    unreadable: int
    weights: str = ""
    dictionaries: dict[str, str] = field(default_factory=dict)


def index_info(index_path: str | Path) -> IndexInfo:
    """What the index at ``index_path`` holds."""
    with closing(store.open_index(index_path)) as connection:
        meta, layers = store.read_meta(connection), store.read_layers(connection)
        images, unreadable = store.image_count(connection)
    return IndexInfo(Path(index_path), meta["model"], meta["input"], {name: row[0] for name, row in layers.items()},
                     meta["top_k"], images, unreadable, meta.get("weights", ""), meta.get("dictionaries", {}))


def check_index(path: str | Path, model: StudioModel | None) -> IndexInfo:
    """What the index at ``path`` holds, checked against ``model`` (input and weights) when one is given; a
    missing file, a file that is no index or an index of another model is one ``StudioError`` sentence. The one
    check the CLI, the gallery and the viewer make."""
    info = index_info(path)
    if model is None or (info.input == model.spec.describe() and info.weights == weights_sha256(model.module)):
        return info
    differ = f"input {info.input}" if info.input != model.spec.describe() else "other weights"
    raise StudioError(f"Index {str(path)!r} was built for {info.model} with {differ}, not for the loaded "
                      f"{model.name} ({model.spec.describe()}); pick its index or build one with studio index.")


def examples(index_path: str | Path, target: str | int | Target, model: StudioModel | None = None) -> list[Example]:
    """The top images of a channel in the index, best first. ``model`` is needed only to name a class by its
    label (``logits:"tabby"``)."""
    with closing(store.open_index(index_path)) as connection:
        layer, channel = _unit(connection, index_path, target, model)
        channels = parse_input(store.read_meta(connection)["input"]).channels
        rows = store.read_examples(connection, layer, channel)
    return [Example(Path(path), score, tuple(position), tuple(tuple(axis) for axis in box), channels)
            for path, score, position, box in rows]


def unit_statistics(index_path: str | Path, target: str | int | Target,
                    model: StudioModel | None = None) -> UnitStatistics:
    """A channel's activation statistics over the indexed folder (NaN before any readable image)."""
    with closing(store.open_index(index_path)) as connection:
        layer, channel = _unit(connection, index_path, target, model)
        images = store.image_count(connection)
        row = store.read_statistics(connection, layer, channel)
    count = images[0] - images[1]
    if row is None:
        nan = float("nan")
        return UnitStatistics(0, nan, nan, nan, {q: nan for q in QUANTILES})
    total, peak, best_mean, counts = row
    return UnitStatistics(count, total / count, peak, best_mean,
                          {q: min(histogram.quantile(counts, q), peak) for q in QUANTILES})


def _unit(connection: sqlite3.Connection, index_path: str | Path, target: str | int | Target,
          model: StudioModel | None) -> tuple[str, int]:
    """The (layer, channel) a target names, checked against what the index holds."""
    layer, channel, where, concepts = _read_target(target, model)
    layers = store.read_layers(connection)
    if layer not in layers:
        held = ", ".join(f"{name} ({channels} channels)" for name, (channels, _, _) in layers.items())
        raise StudioError(f"Index {str(index_path)!r} holds {held}, not layer {layer!r}.")
    if channel is None or where:
        raise StudioError(f"Examples are indexed per channel: write {layer}:CHANNEL, not {target}.")
    count = layers[layer][0]
    indexed = store.read_meta(connection).get("dictionaries", {}).get(layer)
    if concepts and indexed != load_dictionary(concepts).sha256:
        raise StudioError(f"Index {str(index_path)!r} holds the examples of another dictionary named {layer!r} "
                          f"than {concepts!r}; index this one into a new file.")
    if not 0 <= channel < count:
        raise StudioError(f"Index {str(index_path)!r} holds channels 0 to {count - 1} of {layer}, not {channel}.")
    return layer, channel


def _read_target(target: str | int | Target, model: StudioModel | None) -> tuple[str, int | None, str, str | None]:
    """(layer as written, channel, ``@...`` part, dictionary file) of a target; without a model, read by the
    target grammar alone, so channels and classes are numbers and a dictionary is known by its file name."""
    if model is not None or isinstance(target, Target):
        unit = parse_target(target, model)
        return unit.layer_name, unit.channel, unit.where, unit.concepts
    text = str(target).strip()
    if re.fullmatch(r"\d+", text):
        return LOGITS, int(text), "", None
    parts = split_target(text)
    if parts is None:
        raise StudioError(f"Cannot read target {text!r}: write layer:channel, e.g. blocks.4:12 or logits:285.")
    layer, unit, position = parts
    if unit is not None and not (unit.isascii() and unit.isdigit()):
        raise StudioError(f"Target {text!r} names a class by its label; pass the model to look it up, or give the "
                          "class number.")
    return Path(layer).name if is_dictionary_name(layer) else layer, None if unit is None else int(unit), position or "", None
