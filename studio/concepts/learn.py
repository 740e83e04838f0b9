"""Learning a concept dictionary of one layer: its activations over a folder, standardised, trained with
Overcomplete, measured on held-out rows, and written to one ``.concepts`` file with a record of the model,
layer, method, settings, source folder and quality."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from studio.checks import output_file
from studio.concepts.dictionary import SUFFIX, Dictionary, is_dictionary_name, load_dictionary, save_dictionary
from studio.concepts.quality import measure
from studio.concepts.samples import Samples, collect_samples
from studio.errors import StudioError
from studio.concepts.training import TrainingSettings, overcomplete, train
from studio.models import StudioModel, load_model, weights_sha256
from studio.targets import resolve_layer

#: Share of the images whose rows are kept out of training to measure R² and L0 on (at least 2 images are
#: needed to hold one out; with fewer, quality is measured on the training rows and says so).
HELD_OUT = 0.1


def learn_concepts(model: StudioModel | str, folder: str | Path, layer: str, out: str | Path,
                   method: str = "topk", concepts: int = 512, top_k: int | None = None, max_samples: int = 100_000,
                   epochs: int | None = None, batch: int = 1024, lr: float = 1e-3, seed: int = 0,
                   image_batch: int = 32, workers: int = 2, progress: bool = True) -> Dictionary:
    """Learn ``concepts`` atoms of ``layer`` (``blocks.5``) from the images below ``folder`` and write them to
    ``out`` (``blocks5.concepts``); ``method`` is ``topk`` (default), ``batchtopk`` or ``nmf``.
    Each spatial position (or patch token) is a sample, at most ``max_samples`` spread evenly over the images.
    Returns the dictionary as read back from the file, so what it reports is what every later run uses."""
    model = load_model(model) if isinstance(model, str) else model
    settings = TrainingSettings(method, concepts, top_k, epochs, batch, lr, seed)
    out = output_file(out, "out")
    if not is_dictionary_name(out.name):
        raise StudioError(f"Name the dictionary file with the {SUFFIX} ending (e.g. blocks5{SUFFIX}), not "
                          f"{out.name!r}: targets find dictionaries by it.")
    settings.check()
    overcomplete()  # said before the folder is read, not after
    started = time.perf_counter()
    samples = collect_samples(model, folder, layer, max_samples, image_batch, workers, seed, progress)
    rows, held = samples.rows, _held_out(samples, seed)
    settings.check(int((~held).sum()))
    trained_on = rows[~held] if held.any() else rows
    mean = torch.zeros(rows.shape[1]) if method == "nmf" else trained_on.double().mean(0).float()
    scale = float((trained_on - mean).double().pow(2).mean().sqrt().clamp_min(1e-12))
    tensors = train((trained_on - mean) / scale, settings, model.device, progress)
    tensors = {name: tensor.cpu() for name, tensor in tensors.items()} | {"mean": mean, "scale": torch.tensor([scale])}
    record = {"model": model.name, "input": model.spec.describe(), "weights": weights_sha256(model.module),
              "layer": resolve_layer(model, layer), "layer_name": samples.layer, "method": method,
              "top_k": settings.k if method in ("topk", "batchtopk") else None,
              "settings": asdict(settings) | {"max_samples": max_samples},
              "source": {"folder": str(Path(folder).expanduser().resolve()), "sha256": samples.folder_sha256,
                         "files": samples.files, "images": samples.images, "positions_per_image": samples.positions,
                         "samples_per_image": samples.per_image, "samples": len(rows), "trained_on": len(trained_on),
                         "held_out_images": int(samples.image_of[held].unique().numel())},
              "overcomplete": overcomplete().__version__}
    draft = Dictionary(out, method, tensors["atoms"], mean, scale, tensors.get("encoder_weight"),
                       tensors.get("encoder_bias"), tensors.get("threshold"), record["top_k"], record=record)
    quality, frequency = measure(draft, rows, held, model.device)
    record |= {"quality": quality.as_record(), "seconds": round(time.perf_counter() - started, 2)}
    save_dictionary(out, tensors | {"frequency": frequency}, record)
    return load_dictionary(out)


def _held_out(samples: Samples, seed: int) -> torch.Tensor:
    """Which rows are held out: every row of a random tenth of the images (at least one, when there are two
    or more), so that R² is measured on images the dictionary never saw."""
    images = samples.image_of.unique()
    count = int(len(images) * HELD_OUT) or (1 if len(images) > 1 else 0)
    chosen = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]]
    return torch.isin(samples.image_of, chosen)
