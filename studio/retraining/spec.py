"""A remove-and-retrain benchmark written as TOML, for ``studio roar SPEC.toml``::

    [model]
    factory = "demo-cnn"            # or timm:NAME, torchvision:NAME, or file.py:function (with trust = true)
    [data]
    dataset = "demo"                # or a folder with train/ and test/ in ImageFolder layout (beside this file)
    size = 24                       # images are fitted to size x size
    [training]
    epochs = 10                     # batch, optimiser ("adam", "sgd"), lr, weight_decay, seed;
                                    # function = "file.py:train" (with trust = true) trains your way
    [benchmark]
    estimates = ["saliency", "smoothgrad_squared", "vargrad", "random", "sobel"]
    fractions = [0.1, 0.3, 0.5, 0.7, 0.9]
    modes = ["roar", "kar"]
    repeats = 1
    fill = "mean"                   # or "impute": ROAD's noisy linear imputation, which leaks less
    [options.smoothgrad_squared]    # any method's own options
    samples = 16

Paths are read relative to the spec's folder. A factory or training function from a file runs its code, so it
needs ``trust = true`` in its table.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from studio.errors import StudioError
from studio.models import function_from_file, untrusted_code
from studio.retraining.benchmark import DEFAULT_ESTIMATES, FRACTIONS, MODES, RoarSpec
from studio.retraining.data import demo_dataset, folder_dataset
from studio.retraining.training import Recipe, named_factory

#: The keys each table takes, and the tables.
KEYS = {"model": {"factory", "trust"}, "data": {"dataset", "size", "channels", "train", "test", "seed"},
        "training": {"epochs", "batch", "optimiser", "lr", "weight_decay", "seed", "function", "trust"},
        "benchmark": {"estimates", "fractions", "modes", "repeats", "fill"}, "options": None}


def _table(spec: dict, name: str, path: Path) -> dict:
    table = spec.get(name, {})
    if not isinstance(table, dict):
        raise StudioError(f"{path.name}: [{name}] must be a table.")
    unknown = sorted(set(table) - KEYS[name]) if KEYS[name] is not None else []
    if unknown:
        raise StudioError(f"{path.name}: [{name}] has no key {unknown[0]!r}; it takes {', '.join(sorted(KEYS[name]))}.")
    return table


def _from_file(entry: str, table: dict, name: str, path: Path):
    """A function named ``file.py:function`` (relative to the spec), refused unless the table trusts it."""
    file, _, function = entry.rpartition(":")
    located = f"{(path.parent / file).resolve()}:{function}"
    if table.get("trust") is not True:
        raise StudioError(f"{path.name}: " + untrusted_code(located, f"write trust = true in [{name}]"))
    return function_from_file(located, "(channels, classes) -> nn.Module" if name == "model"
                              else "(net, images, labels, recipe, seed)")


def load_spec(path: str | os.PathLike) -> RoarSpec:
    """The benchmark a TOML file describes (every mistake is one sentence naming the table and key)."""
    path = Path(path)
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StudioError(f"Cannot read the benchmark spec {str(path)!r}: {error.strerror}.") from None
    except tomllib.TOMLDecodeError as error:
        raise StudioError(f"{path.name} is not valid TOML: {error}.") from None
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise StudioError(f"{path.name} has no table [{unknown[0]}]; its tables are {', '.join(KEYS)}.")
    model, data, training, benchmark = (_table(spec, name, path) for name in ("model", "data", "training", "benchmark"))
    options = _table(spec, "options", path)

    name = model.get("factory", "demo-cnn")
    factory = _from_file(name, model, "model", path) if ".py:" in name else named_factory(name)
    dataset = data.get("dataset", "demo")
    size = data.get("size", 24)
    if dataset == "demo":
        loaded = demo_dataset(data.get("train", 512), data.get("test", 256), size, data.get("seed", 0))
    else:
        loaded = folder_dataset(path.parent / dataset, size, data.get("channels", 3))
    function = training.get("function")
    recipe = Recipe(**{k: v for k, v in training.items() if k not in ("function", "trust")})
    return RoarSpec(loaded, factory, name, recipe, benchmark.get("estimates", DEFAULT_ESTIMATES), options,
                    benchmark.get("fractions", FRACTIONS), benchmark.get("modes", MODES), benchmark.get("repeats", 1),
                    _from_file(function, training, "training", path) if function else None,
                    benchmark.get("fill", "mean"))
