"""Concept dictionaries on EfficientNet-Lite0: how long learning 512 concepts on 50,000 positions takes (the
studio's whole `learn_concepts`, its training step alone, and Overcomplete's own TopK loop on the same rows for
the same number of steps), the dictionary's quality, and how many concepts and how many channels of the layer
are monosemantic by one proxy: the purity of their top examples' predicted classes.

The images are random crops of the photos scikit-image ships (no download), resized to the model's input; a
layer of 14x14 positions and 270 crops (15 of each of the 18 photos) give 52,920 positions, sub-sampled to 50,000. Purity: the share of a unit's top 8 crops whose
top-1 ImageNet class (Lite0's own) is the most common one among them; a unit is counted monosemantic at 0.75
or more. Crops of one photo often share a class, so purity here also reads "specific to one photo": the
comparison between channels and concepts is the point, on the same crops and the same index.

    python benchmarks/concepts.py                         # blocks.4, 512 concepts, 256 crops, CUDA when present
    python benchmarks/concepts.py --device cpu --json concepts.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import studio
from studio.concepts.samples import collect_samples
from studio.concepts.training import TrainingSettings, train

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
from skimage_photos import PHOTOS, natural_crops  # noqa: E402  (the README's photo folder, cropped here)

TOP = 8
PURE = 0.75


def overcomplete_loop(rows: torch.Tensor, settings: TrainingSettings, device: torch.device) -> float:
    """Seconds for Overcomplete's TopK SAE and ``train_sae`` alone, same rows, batch and epochs."""
    from overcomplete.sae import TopKSAE, train_sae
    from overcomplete.sae.losses import top_k_auxiliary_loss
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(settings.seed)
    sae = TopKSAE(rows.shape[1], settings.concepts, top_k=settings.k, device=str(device))
    batch = settings.batch_for(len(rows))
    loader = DataLoader(TensorDataset(rows), batch_size=batch, shuffle=True, drop_last=True)
    optimizer = torch.optim.Adam(sae.parameters(), lr=settings.lr)
    started = time.perf_counter()
    train_sae(sae, loader, top_k_auxiliary_loss, optimizer, nb_epochs=settings.epochs_for(len(rows)), monitoring=0,
              device=str(device))
    _synchronise(device)
    return time.perf_counter() - started


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def purity(index: Path, units: list[str], classes: dict[str, int], model: studio.StudioModel) -> list[float]:
    """Each unit's top-example class purity (units whose top examples do not respond are left out)."""
    values = []
    for unit in units:
        examples = [e for e in studio.examples(index, unit, model)[:TOP] if e.score > 0]
        if len(examples) == TOP:
            labels = [classes[e.path.name] for e in examples]
            values.append(Counter(labels).most_common(1)[0][1] / TOP)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="blocks.4")
    parser.add_argument("--concepts", type=int, default=512)
    parser.add_argument("--crops", type=int, default=256, help="at least this many crops, as many of each photo")
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = studio.load_model(device=args.device)
    device = model.device
    results = {"command": "python " + shlex.join(sys.argv), "device": str(device), "torch": torch.__version__,
               "layer": args.layer, "concepts": args.concepts}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "crops"
        natural_crops(folder, -(-args.crops // len(PHOTOS)), side=model.spec.size[-1])
        started = time.perf_counter()
        samples = collect_samples(model, folder, args.layer, args.samples, workers=0, progress=False)
        results["collect_s"] = time.perf_counter() - started
        rows = samples.rows
        mean = rows.mean(0)
        scale = float((rows - mean).pow(2).mean().sqrt())
        settings = TrainingSettings("topk", args.concepts)
        started = time.perf_counter()
        train((rows - mean) / scale, settings, device, progress=False)
        _synchronise(device)
        results["train_s"] = time.perf_counter() - started
        results["overcomplete_loop_s"] = overcomplete_loop((rows - mean) / scale, settings, device)
        results |= {"positions": len(rows), "channels": rows.shape[1], "batch": settings.batch_for(len(rows)),
                    "epochs": settings.epochs_for(len(rows)), "top_k": settings.k}
        started = time.perf_counter()
        dictionary = studio.learn_concepts(model, folder, args.layer, Path(tmp) / "layer.concepts",
                                           concepts=args.concepts, max_samples=args.samples, workers=0, progress=False)
        results["learn_concepts_s"] = time.perf_counter() - started
        results["quality"] = dictionary.record["quality"]

        index = Path(tmp) / "index.sqlite"
        studio.build_index(model, folder, [args.layer, str(dictionary.path)], index, top_k=TOP, workers=0,
                           progress=False)
        with torch.no_grad():
            classes = {}
            for path in sorted(folder.iterdir()):
                image = studio.read_image(path)[None].to(device)
                classes[path.name] = int(model.module(model.spec.normalise(image)).argmax())
        channels = studio.targets.layer_info(model, args.layer).channels
        for kind, units in (("channels", [f"{args.layer}:{c}" for c in range(channels)]),
                            ("concepts", [f"{dictionary.path}:{c}" for c in range(dictionary.concepts)])):
            values = purity(index, units, classes, model)
            results[f"purity_{kind}"] = {"units": len(units), "responding": len(values),
                             "monosemantic": sum(v >= PURE for v in values),
                             "share_monosemantic": sum(v >= PURE for v in values) / max(len(values), 1),
                             "median_purity": float(np.median(values)) if values else None}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
