"""The memory estimate (``studio.memory``) against the measured peak of real renders, each in a fresh
process (peak resident memory on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA).

    python benchmarks/memory_estimate.py            # the CPU cases below
    python benchmarks/memory_estimate.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

CASES = [("efficientnet_lite0", "blocks.4", 16, 224), ("efficientnet_lite0", "blocks.6", 32, 128),
         ("efficientnet_lite0", "blocks.2", 32, 512), ("timm:vit_tiny_patch16_224", "blocks.6", 16, 224)]


def measure(model_name: str, layer: str, batch: int, size: int, device: str) -> dict:
    """One case, in this process: the estimate and the measured peak above the loaded model, in MB."""
    import torch

    import studio
    from studio.memory import activation_bytes, image_bytes

    model = studio.load_model(model_name, pretrained=False, device=device)
    model.output_shapes  # noqa: B018  (the shape probe is not part of the render's peak)
    estimate = batch * (activation_bytes(model, [layer]) + image_bytes(model, size, "fourier"))
    if device == "cpu":  # the resident size now, not the high-water mark that loading left behind
        before = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    else:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    studio.render(model, [f"{layer}:{i}" for i in range(batch)], steps=2, size=size)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if device == "cpu"
            else torch.cuda.max_memory_allocated())
    return {"model": model_name, "layer": layer, "batch": batch, "size": size, "device": device,
            "estimate_mb": round(estimate / 2**20), "measured_mb": round((peak - before) / 2**20),
            "ratio": round(estimate / max(peak - before, 1), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--case", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        name, layer, batch, size = args.case
        print(json.dumps(measure(name, layer, int(batch), int(size), args.device)))
        return
    print(f"{'model':28s} {'layer':9s} {'batch':>5s} {'size':>5s} {'estimate MB':>12s} {'measured MB':>12s} ratio")
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, "--device", args.device, "--case", *map(str, case)],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(f"{row['model']:28s} {row['layer']:9s} {row['batch']:5d} {row['size']:5d} {row['estimate_mb']:12d} "
              f"{row['measured_mb']:12d} {row['ratio']:.2f}")


if __name__ == "__main__":
    main()
