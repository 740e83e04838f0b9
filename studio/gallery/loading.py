"""The models and photos a gallery spec names: loaded once, with a hash of the weights for provenance."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from studio.errors import StudioError
from studio.exemplars import IndexInfo, index_info
from studio.gallery.validation import Checker, Span
from studio.io import read_image
from studio.models import StudioModel, load_model, parse_input, runs_code, untrusted_code, weights_sha256


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


def load_entry(checker: Checker, name: str, entry: Mapping, where: str, span: Span,
               models: Mapping[str, StudioModel | str] | None, device) -> ModelEntry:
    """The model of one ``[[models]]`` table: a given one from ``models``, else loaded (random weights drawn
    from ``init_seed``, so they are reproducible); any failure is the spec's one-sentence error."""
    spec = entry["model"]
    pretrained = checker.typed(entry.get("pretrained", True), bool, where, "pretrained", span)
    init_seed = checker.typed(entry.get("init_seed", 0), int, where, "init_seed", span, minimum=0)
    given = None
    if "input" in entry or "mean" in entry or "std" in entry:  # input = "1x32x32x32", mean = "0", std = "1"
        try:
            given = parse_input(checker.typed(entry.get("input", ""), str, where, "input", span),
                                *(None if key not in entry else str(entry[key]) for key in ("mean", "std")))
        except StudioError as error:
            checker.fail(where, str(error), checker.line("input", span))
    if models and spec in models:
        return ModelEntry(name, spec, pretrained, init_seed, load_model(models[spec], input=given))
    if runs_code(spec) and not checker.typed(entry.get("trust", False), bool, where, "trust", span):
        checker.fail(where, untrusted_code(spec, "write trust = true in this table"), checker.line("model", span))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = load_model(spec, pretrained=pretrained, device=device, input=given)
    except StudioError as error:
        checker.fail(where, str(error), checker.line("model", span))
    except Exception as error:  # weights files, factories: anything a user-given model can raise
        checker.fail(where, f"cannot load model {spec!r} ({type(error).__name__}: {error}).", checker.line("model", span))
    return ModelEntry(name, spec, pretrained, init_seed, model)


def read_photos(checker: Checker, photos: list[str], base: Path, where: str, span: Span
                ) -> tuple[tuple[Path, ...], tuple[torch.Tensor, ...], tuple[str, ...]]:
    """Paths (relative to the spec's folder), images and SHA-256 of the photos to attribute on."""
    paths, images = [], []
    for photo in photos:
        path = (base / photo).resolve()
        if not path.is_file():
            checker.fail(where, f"photo {photo!r} does not exist (paths are relative to the spec's folder).",
                         checker.value_line(photo, span))
        try:
            images.append(read_image(path))
        except StudioError as error:
            checker.fail(where, str(error), checker.value_line(photo, span))
        paths.append(path)
    return tuple(paths), tuple(images), tuple(hashlib.sha256(p.read_bytes()).hexdigest() for p in paths)


def read_index(checker: Checker, name: str, base: Path, where: str, span: Span) -> tuple[Path, IndexInfo, str, str]:
    """The dataset-example index a spec names (relative to the spec's folder): its path, what it holds, the digest
    of the weights it was built with, and the SHA-256 of the file (which changes whenever the index does)."""
    path = (base / name).resolve()
    line = checker.line("index", span)
    if not path.is_file():
        checker.fail(where, f"index {name!r} does not exist (paths are relative to the spec's folder); build it with "
                            f"studio index MODEL FOLDER --layers LAYERS --out {name}.", line)
    try:
        info = index_info(path)
    except StudioError as error:
        checker.fail(where, str(error), line)
    with path.open("rb") as handle:
        return path, info, info.weights, hashlib.file_digest(handle, "sha256").hexdigest()
