"""Learning a concept dictionary of one layer: its activations over a folder, standardised, trained with
Overcomplete, measured on held-out rows, and written to one ``.concepts`` file with a record of the model,
layer, method, settings, source folder and quality."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from studio.checks import output_file
from studio.concepts.dictionary import Dictionary, load_dictionary, save_dictionary
from studio.concepts.quality import measure
from studio.concepts.samples import collect_samples
from studio.concepts.training import TrainingSettings, overcomplete, train
from studio.models import StudioModel, load_model, weights_sha256
from studio.targets import layer_key, resolve_layer

#: Share of the rows kept out of training to measure R² and L0 on.
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
    settings.check(max_samples, 1 << 30)
    overcomplete()  # said before the folder is read, not after
    started = time.perf_counter()
    samples = collect_samples(model, folder, layer, max_samples, image_batch, workers, seed, progress)
    rows = samples.rows
    settings.check(len(rows), rows.shape[1])
    mean = torch.zeros(rows.shape[1]) if method == "nmf" else rows.double().mean(0).float()
    scale = float((rows - mean).double().pow(2).mean().sqrt().clamp_min(1e-12))
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))
    cut = int(len(rows) * HELD_OUT) if len(rows) >= 20 else 0
    trained_on = rows[order[cut:]]
    tensors = train((trained_on - mean) / scale, settings, model.device, progress)
    tensors = {name: tensor.cpu() for name, tensor in tensors.items()} | {"mean": mean, "scale": torch.tensor([scale])}
    record = {"model": model.name, "input": model.spec.describe(), "weights": weights_sha256(model.module),
              "layer": resolve_layer(model, layer_key(model, layer)), "layer_name": samples.layer, "method": method,
              "top_k": settings.k if method in ("topk", "batchtopk") else None,
              "settings": asdict(settings) | {"max_samples": max_samples},
              "source": {"folder": str(Path(folder).expanduser().resolve()), "sha256": samples.folder_sha256,
                         "files": samples.files, "images": samples.images, "positions_per_image": samples.positions,
                         "samples_per_image": samples.per_image, "samples": len(rows), "trained_on": len(trained_on)},
              "overcomplete": overcomplete().__version__}
    draft = Dictionary(out, method, tensors["atoms"], mean, scale, tensors.get("encoder_weight"),
                       tensors.get("encoder_bias"), tensors.get("threshold"), record["top_k"], record=record)
    quality, frequency = measure(draft, rows[order[:cut]] if cut else rows, rows)
    record |= {"quality": quality.as_record(), "seconds": round(time.perf_counter() - started, 2)}
    save_dictionary(out, tensors | {"frequency": frequency}, record)
    return load_dictionary(out)
