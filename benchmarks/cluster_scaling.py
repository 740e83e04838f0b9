"""Gallery wall time in one process and on Ray with 1 and 2 workers (a Ray started on this machine), same spec:
EfficientNet-Lite0 `blocks.4` channels, one image each. On the CPU each worker uses the driver's thread count
(for the same pixels as one process), so on a machine with few cores the workers share them; on GPUs it is one
worker per GPU. Each Ray run includes starting Ray and its workers (about 10 s here).

    python benchmarks/cluster_scaling.py                      # 8 units, 64 steps, 96 px, workers 1 and 2
    python benchmarks/cluster_scaling.py --units 16 --workers 1,2,4 --json scaling.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch

import studio


def spec(units: int, steps: int, size: int) -> dict:
    return {"title": "scaling", "settings": {"steps": steps, "size": size, "seeds": [0], "batch": 1},
            "models": [{"name": "lite0", "model": "efficientnet_lite0", "targets": [f"blocks.4:0-{units - 1}"]}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=8)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = studio.load_model()
    gallery = spec(args.units, args.steps, args.size)
    results = {"command": "python " + shlex.join(sys.argv), "device": str(model.device), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "units": args.units, "steps": args.steps, "size": args.size, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in [0, *map(int, args.workers.split(","))]:
            started = time.perf_counter()
            report = studio.gallery.run(gallery, Path(tmp) / f"w{workers}", models={"efficientnet_lite0": model},
                                        progress=False, ray=True if workers else None, workers=workers or None)
            seconds = time.perf_counter() - started
            if workers:
                import ray

                ray.shutdown()  # the next run starts Ray with room for its own workers
            run = {"workers": workers or "one process", "seconds": round(seconds, 1),
                   "images_per_s": round(len(report.rendered) / seconds, 3)}
            results["runs"].append(run)
            print(run, flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
