"""Honest numbers beside a render: its clean activation as a multiple of the unit's dataset maximum, and a
path check after Geirhos et al. ("Don't trust your eyes", ICML 2024): does the render reach its unit through
activations like those of the unit's top dataset examples, or along a path no natural image takes?

The path check pools each of a few layers below the unit to one vector per image (channel means) and takes
the render's mean cosine similarity to the unit's top examples minus its mean similarity to random indexed
images. The same score of each top example (against the other top examples, leave-one-out) is the natural
range; a render scoring below every top example is flagged.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from studio.errors import StudioError
from studio.exemplars import store
from studio.exemplars.query import examples, unit_statistics
from studio.hooks import frozen
from studio.io import read_input
from studio.models import StudioModel, resize_to_input
from studio.targets import Target, activations, layer_info, parse_target

#: Layers below the unit the path check compares (evenly spaced in depth), and random images it compares with.
PATH_LAYERS = 3
RANDOM_IMAGES = 16


@dataclass(frozen=True)
class DatasetComparison:
    """A render's value beside its unit's dataset: ``maximum`` is the largest value the unit's target reads
    on any indexed image (a channel's largest spatial mean, a class's largest logit; for a neuron, the channel's
    largest activation anywhere, an upper bound) and ``multiple`` the render's value over it."""

    value: float
    maximum: float
    multiple: float | None
    images: int

    def describe(self) -> str:
        """``3.2x dataset max (of 512 images)``, or why there is no multiple."""
        if self.multiple is None:
            return f"no multiple (dataset max {self.maximum:.3g} of {self.images} images is not positive)"
        return f"{self.multiple:.2f}x dataset max (of {self.images} images)"


def channel_of(target: Target) -> Target:
    """The indexed channel a target belongs to (``blocks.4:12@3,3`` -> ``blocks.4:12``, a concept's with its
    dictionary file)."""
    if target.channel is None:
        raise StudioError(f"Dataset examples are per channel; {target.name} names a whole layer.")
    return replace(target, position=None, prefix_token=None, text="")


def compare_with_dataset(index_path: str | Path, target: Target, value: float,
                         model: StudioModel | None = None) -> DatasetComparison:
    """The render's ``value`` for ``target`` as a multiple of the unit's dataset maximum in the index."""
    stats = unit_statistics(index_path, channel_of(target), model)
    maximum = stats.max if target.position is not None else stats.max_mean
    multiple = value / maximum if maximum > 0 else None
    return DatasetComparison(float(value), float(maximum), multiple, stats.images)


@dataclass(frozen=True)
class PathCheck:
    """The render's path score, the top examples' own (their natural range), the layers compared, and whether
    the render falls below every top example (``flagged``: it reaches its unit along an unnatural path)."""

    score: float
    natural: tuple[float, ...]
    layers: tuple[str, ...]
    flagged: bool

    def describe(self) -> str:
        low, high = min(self.natural), max(self.natural)
        verdict = "UNNATURAL PATH" if self.flagged else "natural path"
        return f"path {self.score:+.3f} ({verdict}; top examples {low:+.3f} to {high:+.3f})"


def layers_below(model: StudioModel, target: Target, count: int = PATH_LAYERS) -> list[str]:
    """``count`` layers with spatial maps before the target's layer, evenly spaced in depth (leaf modules)."""
    order = list(model.output_shapes)
    end = order.index(target.layer)
    leaves = {name for name, module in model.module.named_modules() if next(module.children(), None) is None}
    candidates = []
    for name in order[:end]:
        if name not in leaves or len(model.output_shapes[name]) < 3:
            continue
        try:
            if layer_info(model, name).spatial:
                candidates.append(name)
        except StudioError:
            continue
    if not candidates:
        raise StudioError(f"{target.name} has no layers with spatial maps below it to check the path through.")
    picks = [candidates[round((i + 1) * (len(candidates) - 1) / (count + 1))] for i in range(count)]
    return list(dict.fromkeys(picks))


def _pooled(model: StudioModel, images: torch.Tensor, layers: Sequence[str]) -> list[torch.Tensor]:
    """Per layer, each image's channel means ``[B, C]``, unit-normalised (for cosine similarity)."""
    with frozen(model.module), torch.no_grad():
        acts = activations(model, model.spec.normalise(resize_to_input(images.to(model.device), model.spec)), layers)
    return [torch.nn.functional.normalize(acts[name].flatten(2).mean(2).float(), dim=1) for name in layers]


def _similarity(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    """Mean over layers of the cosine similarity of every row of ``a`` with every row of ``b``: ``[A, B]``."""
    return torch.stack([x @ y.T for x, y in zip(a, b)]).mean(0)


def random_images(index_path: str | Path, count: int, exclude: Sequence[Path] = (), seed: int = 0) -> list[Path]:
    """``count`` readable images of the index drawn at random, none of ``exclude`` (the same for the same seed)."""
    with closing(store.open_index(index_path)) as connection:
        try:
            paths = [Path(row[0]) for row in connection.execute("SELECT path FROM images WHERE error IS NULL ORDER BY id")]
        except sqlite3.Error as error:
            raise StudioError(f"Cannot read the images of index {str(index_path)!r} ({error}).") from None
    pool = [path for path in paths if path not in set(exclude)]
    return sorted(random.Random(seed).sample(pool, min(count, len(pool))))


def path_check(model: StudioModel, index_path: str | Path, target: str | Target, image: torch.Tensor) -> PathCheck:
    """Whether ``image`` (a render ``[C, *size]`` in ``[0, 1]``) reaches ``target`` through activations like its
    top dataset examples' (see the module docstring)."""
    target = parse_target(target, model)
    layers = layers_below(model, target)
    top = [example.path for example in examples(index_path, channel_of(target), model)]
    spec = model.spec
    if len(top) < 2:
        raise StudioError(f"The path check needs at least 2 top examples of {target.name}; index more images.")
    others = random_images(index_path, RANDOM_IMAGES, exclude=top)
    if len(others) < 2:
        raise StudioError(f"The path check compares with images beyond the top {len(top)} examples of {target.name}; "
                          "the index holds too few: index more images.")

    def load(paths: Sequence[Path]) -> torch.Tensor:
        return torch.stack([resize_to_input(read_input(p, spec.channels, spec.dims)[None], spec)[0] for p in paths])
    top_acts, random_acts = _pooled(model, load(top), layers), _pooled(model, load(others), layers)
    render_acts = _pooled(model, image[None], layers)
    score = float(_similarity(render_acts, top_acts).mean() - _similarity(render_acts, random_acts).mean())
    among_top = _similarity(top_acts, top_acts)
    count = len(top)
    leave_one_out = (among_top.sum(1) - among_top.diagonal()) / (count - 1)
    natural = leave_one_out - _similarity(top_acts, random_acts).mean(1)
    return PathCheck(score, tuple(float(v) for v in natural), tuple(layers), score < float(natural.min()))
