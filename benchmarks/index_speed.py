"""Images per second of the dataset-example indexer: EfficientNet-Lite0 with four layers over a generated folder
of JPEGs at the model's input size, decoded in this process (workers 0) and in worker processes.

The receptive fields are measured once when an index is created; that one-time cost is timed on its own (an
index of an empty folder), and every timed run starts from a copy of that index, so the figures are the
steady indexing rate: decoding, the forward pass, the top-k and statistics updates and one committed SQLite
transaction per batch.

    python benchmarks/index_speed.py                            # 512 images, workers 0 and 2, CUDA when present
    python benchmarks/index_speed.py --images 128 --workers 0,2 --device cpu
    python benchmarks/index_speed.py --layers blocks.4,logits --batch 64 --json speed.json
    python benchmarks/index_speed.py --ray 1,2                  # also on 1 and 2 Ray workers started here

A Ray run includes starting Ray and its workers; this process reads the files' bytes and writes the index,
the workers decode and run the model (each with this process's thread count on the CPU, or one GPU).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

import studio
from studio.exemplars import build_index


def generate(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> None:
    """``count`` JPEGs of smooth random colour fields with noise (they compress and decode like photos)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        coarse = torch.from_numpy(rng.random((1, 3, 8, 8), dtype=np.float32))
        smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=False)[0]
        image = (smooth.permute(1, 2, 0).numpy() + rng.normal(0, 0.05, (*size, 3))).clip(0, 1)
        iio.imwrite(folder / f"{index:06d}.jpg", (image * 255).astype(np.uint8), quality=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512, help="JPEGs in the generated folder")
    parser.add_argument("--layers", default="blocks.2,blocks.3,blocks.4,blocks.5")
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts to time")
    parser.add_argument("--ray", default="", help="comma-separated Ray worker counts to time as well (a Ray started "
                                                  "here; needs feature-studio[ray])")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA when present)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    model = studio.load_model("efficientnet_lite0", device=args.device)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        generate(root / "photos", args.images, model.spec.size)
        (root / "empty").mkdir()
        start = time.perf_counter()
        build_index(model, root / "empty", args.layers, root / "fresh.sqlite", batch=args.batch, progress=False)
        setup = time.perf_counter() - start
        rows = []
        runs = [("workers", int(w)) for w in args.workers.split(",")] + [("ray", int(w)) for w in args.ray.split(",") if w]
        for kind, workers in runs:
            out = root / f"{kind}{workers}.sqlite"
            shutil.copy(root / "fresh.sqlite", out)
            start = time.perf_counter()
            build_index(model, root / "photos", args.layers, out, batch=args.batch, workers=workers, progress=False,
                        ray=kind == "ray")
            seconds = time.perf_counter() - start
            if kind == "ray":
                import ray

                ray.shutdown()  # the next run starts Ray with room for its own workers
            rows.append({"kind": kind, "workers": workers, "images": args.images, "seconds": seconds,
                         "images_per_s": args.images / seconds, "index_mib": out.stat().st_size / 2 ** 20})

    device = model.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"$ python benchmarks/index_speed.py {shlex.join(sys.argv[1:] if argv is None else argv)}")
    print(f"efficientnet_lite0, layers {args.layers}, {args.images} JPEGs at {model.spec.describe()}, batch "
          f"{args.batch}, on {name}")
    print(f"receptive fields (once per index): {setup:.1f} s")
    for row in rows:
        what = f"decoding workers {row['workers']}" if row["kind"] == "workers" else f"Ray workers {row['workers']}"
        print(f"  {what:20s}: {row['images_per_s']:7.1f} images/s ({row['seconds']:.1f} s, index "
              f"{row['index_mib']:.1f} MiB)")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "layers": args.layers, "batch": args.batch,
                                               "setup_s": setup, "runs": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
