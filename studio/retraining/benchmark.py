"""Remove and retrain (ROAR) and keep and retrain (KAR), Hooker et al. 2019, for any attribution method.

A model is trained on the clean data; each estimate (an attribution method, or a control: random maps and the
model-independent Sobel edges) ranks the pixels of every training and test image for its label; for each
fraction ``t`` the top ``t`` of the pixels are replaced by the training mean (ROAR; KAR replaces the rest), a
fresh model is trained on the degraded training set and tested on the degraded test set. An estimate that finds
what the model needs makes ROAR accuracy fall faster than random removal does, and KAR accuracy stay higher.

Everything is resumable in the output folder: the clean model's weights, each estimate's maps and one JSON line
per finished cell (estimate, mode, fraction, repeat), so a killed run reruns only the cells it had not finished.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from studio.attribution.api import METHODS, attribute, check_options, method_name
from studio.checks import check_number
from studio.errors import StudioError
from studio.io import atomic_write
from studio.journal import append_record, resume_journal
from studio.models import InputSpec, StudioModel
from studio.retraining.data import FILLS, Dataset, channel_means, degrade, random_maps, sobel_maps
from studio.retraining.training import Factory, Recipe, TrainFunction, accuracy, train

#: The estimates that read no model: random removal (chance) and Sobel edges (model-independent structure).
CONTROLS = ("random", "sobel")
MODES = ("roar", "kar")
FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
DEFAULT_ESTIMATES = ("saliency", "smoothgrad", "smoothgrad_squared", "vargrad", "integrated_gradients", *CONTROLS)
CELLS = "cells.jsonl"


@dataclass
class RoarSpec:
    """A benchmark: the data, the model ``factory`` (retrained from scratch for every cell) and its ``name``, the
    training ``recipe`` (or the user's ``train_function``), the estimates (attribution methods and controls)
    with each method's options, the fractions, the modes (``roar``, ``kar``), the repeats and how removed pixels
    are filled (:func:`studio.retraining.data.degrade`)."""

    data: Dataset
    factory: Factory
    name: str
    recipe: Recipe = field(default_factory=Recipe)
    estimates: Sequence[str] = DEFAULT_ESTIMATES
    options: dict[str, dict] = field(default_factory=dict)
    fractions: Sequence[float] = FRACTIONS
    modes: Sequence[str] = MODES
    repeats: int = 1
    train_function: TrainFunction | None = None
    fill: str = "mean"

    def __post_init__(self) -> None:
        self.estimates = [e if e in CONTROLS else method_name(e) for e in self.estimates]
        unknown = [e for e in self.estimates if e not in CONTROLS and e not in METHODS]
        if unknown or not self.estimates:
            raise StudioError(f"Unknown estimate {unknown[0] if unknown else '(none)'!r}; use attribution methods "
                              f"({', '.join(METHODS)}) or the controls {' and '.join(CONTROLS)}.")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise StudioError(f"Unknown mode {bad[0] if bad else '(none)'!r}; use roar, kar or both.")
        if not self.fractions or any(not 0 < f < 1 for f in self.fractions):
            raise StudioError(f"Fractions must lie strictly between 0 and 1, not {list(self.fractions)}.")
        check_number("repeats", self.repeats, int, minimum=1, maximum=100)
        if self.fill not in FILLS:
            raise StudioError(f"Unknown fill {self.fill!r}; use {' or '.join(FILLS)}.")
        self.options = {method_name(m) if m not in CONTROLS else m: dict(o) for m, o in self.options.items()}
        extra = sorted(set(self.options) - set(self.estimates))
        if extra:
            raise StudioError(f"Options are given for {extra[0]!r}, which is not among the estimates.")
        for method, options in self.options.items():
            if method in CONTROLS:
                raise StudioError(f"The control {method!r} takes no options.")
            check_options(method, options)  # before hours of training, not after

    def settings(self) -> dict:
        """What the results depend on, for the provenance record and to refuse resuming a different run."""
        return {"data": self.data.description, "labels": int(self.data.train_labels.sum()), "model": self.name,
                "recipe": self.recipe.as_dict(), "estimates": list(self.estimates), "options": self.options,
                "fractions": [float(f) for f in self.fractions], "modes": list(self.modes), "repeats": self.repeats,
                "own_training": self.train_function is not None, "fill": self.fill}


@dataclass
class Cell:
    """One retraining: the estimate, the mode, the fraction removed (ROAR) or kept (KAR), the repeat, the test
    accuracy and the seconds it took (fraction 0 is the clean model, estimate ``none``)."""

    estimate: str
    mode: str
    fraction: float
    repeat: int
    accuracy: float
    seconds: float

    @property
    def key(self) -> tuple[str, str, float, int]:
        return self.estimate, self.mode, round(self.fraction, 6), self.repeat


@dataclass
class RoarResult:
    """Every cell of a benchmark, the test accuracy of chance and the settings it ran with."""

    cells: list[Cell]
    chance: float
    settings: dict

    @property
    def clean(self) -> list[float]:
        """The clean models' accuracies, one per repeat."""
        return [c.accuracy for c in self.cells if c.estimate == "none"]

    def curve(self, estimate: str, mode: str) -> tuple[list[float], list[float], list[float]]:
        """Fractions (0 first: the clean model), mean accuracy and its spread (standard deviation over repeats;
        0 for one repeat)."""
        fractions = sorted({c.fraction for c in self.cells if c.estimate == estimate and c.mode == mode})
        means, spreads = [float(np.mean(self.clean))], [float(np.std(self.clean))]
        for fraction in fractions:
            values = [c.accuracy for c in self.cells if (c.estimate, c.mode, c.fraction) == (estimate, mode, fraction)]
            means.append(float(np.mean(values)))
            spreads.append(float(np.std(values)))
        return [0.0, *fractions], means, spreads

    def table(self) -> list[dict]:
        """One row per estimate, mode and fraction: mean and spread of the accuracy over repeats."""
        rows = []
        for mode in self.settings["modes"]:
            for estimate in self.settings["estimates"]:
                for fraction, mean, spread in zip(*self.curve(estimate, mode)):
                    if fraction:
                        rows.append({"estimate": estimate, "mode": mode, "fraction": fraction, "accuracy": mean,
                                     "spread": spread, "repeats": self.settings["repeats"]})
        return rows


def _clean_model(spec: RoarSpec, out: Path, device: torch.device) -> torch.nn.Module:
    """The model trained on the clean data (seed of the recipe), trained once and kept as weights only (read
    back with ``weights_only``: loading them runs no code)."""
    path = out / "clean-model.pt"
    data = spec.data
    if path.exists():
        net = spec.factory(data.train_images.shape[1], len(data.classes)).to(device)
        net.load_state_dict(torch.load(path, map_location=device, weights_only=True))
        return net.eval()
    net = train(spec.factory, data.train_images, data.train_labels, len(data.classes), spec.recipe,
                spec.recipe.seed, device, spec.train_function)
    atomic_write(path, lambda tmp: torch.save(net.state_dict(), tmp))
    return net


def _maps(spec: RoarSpec, estimate: str, net: torch.nn.Module, out: Path, device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``estimate``'s maps of the training and the test images for their labels, computed once and kept
    (``maps/<estimate>.npz``, read back without pickles)."""
    path = out / "maps" / f"{estimate}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as saved:
            return torch.from_numpy(saved["train"]), torch.from_numpy(saved["test"])
    data = spec.data
    parts = []
    for index, (images, labels) in enumerate(((data.train_images, data.train_labels),
                                              (data.test_images, data.test_labels))):
        if estimate == "random":
            parts.append(random_maps(len(images), tuple(images.shape[2:]), spec.recipe.seed + index))
        elif estimate == "sobel":
            parts.append(sobel_maps(images))
        else:
            model = StudioModel(net, InputSpec(tuple(images.shape[2:]), mean=(0.0,) * images.shape[1],
                                               std=(1.0,) * images.shape[1], channels=images.shape[1]), spec.name)
            maps = [attribute(model, images[a:a + 256].to(device), labels[a:a + 256].tolist(), estimate,
                              **spec.options.get(estimate, {})).cpu() for a in range(0, len(images), 256)]
            parts.append(torch.cat(maps))
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, train=parts[0].float().numpy(), test=parts[1].float().numpy())
    atomic_write(path, write)
    return parts[0].float(), parts[1].float()


def roar(spec: RoarSpec, out: str | os.PathLike, *, device: torch.device | str = "cpu",
         progress: bool = True) -> RoarResult:
    """Run the benchmark ``spec`` into the folder ``out`` (resuming what a killed run there finished) and return
    every cell. The progress bar counts the retrainings of the whole job."""
    out, device = Path(out), torch.device(device)
    settings = spec.settings()
    done = {cell.key: cell for cell in resume_journal(out / CELLS, settings, "a benchmark", lambda r: Cell(**r))}
    data = spec.data
    means = channel_means(data.train_images)
    plan = [("none", "roar", 0.0, r) for r in range(spec.repeats)]
    plan += [(e, m, round(float(f), 6), r) for m in spec.modes for e in spec.estimates for f in spec.fractions
             for r in range(spec.repeats)]
    bar = tqdm(total=len(plan), desc="roar", unit="model", disable=not progress)
    bar.update(sum(1 for key in plan if key in done))
    net = maps = None
    for key in plan:
        estimate, mode, fraction, repeat = key
        if key in done:
            continue
        start = time.perf_counter()
        if estimate == "none":  # the clean model of each repeat; repeat 0's is the one the estimates explain
            train_images, test_images = data.train_images, data.test_images
        else:
            if maps is None or maps[0] != estimate:
                if net is None and estimate not in CONTROLS:
                    net = _clean_model(spec, out, device)
                maps = (estimate, *_maps(spec, estimate, net, out, device))
            keep = mode == "kar"
            train_images = degrade(data.train_images, maps[1], fraction, keep, means, spec.fill, spec.recipe.seed)
            test_images = degrade(data.test_images, maps[2], fraction, keep, means, spec.fill, spec.recipe.seed + 1)
        if estimate == "none" and repeat == 0:
            retrained = net = _clean_model(spec, out, device)
        else:
            retrained = train(spec.factory, train_images, data.train_labels, len(data.classes), spec.recipe,
                              spec.recipe.seed + repeat, device, spec.train_function)
        cell = Cell(estimate, mode, fraction, repeat, accuracy(retrained, test_images, data.test_labels),
                    time.perf_counter() - start)
        append_record(out / CELLS, asdict(cell))
        done[key] = cell
        bar.update(1)
    bar.close()
    return RoarResult([done[key] for key in plan], data.chance, settings)
