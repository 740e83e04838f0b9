"""Quality of the bf16 path: final clean activations (always measured in float32) of 32 channels of
EfficientNet-Lite0 blocks.4 rendered with a bf16 model forward vs a float32 one, same seeds.

    python benchmarks/bf16_quality.py          # on CUDA when present, else the CPU's bf16 autocast
"""
import time

import torch

import studio

m = studio.load_model()
targets = [f"blocks.4:{c}" for c in range(32)]
out = {}
for precision in ("float32", "bfloat16"):
    t = time.time()
    r = studio.render(m, targets, steps=128, size=128, seed=0, precision=precision)
    out[precision] = r.clean_activations
    print(precision, f"{time.time()-t:.0f}s", r.clean_activations[:6].tolist(), flush=True)
rel = (out["bfloat16"] - out["float32"]) / out["float32"].abs()
print("median relative difference", rel.median().item(), "median |rel|", rel.abs().median().item(),
      "max |rel|", rel.abs().max().item(), "mean f32", out["float32"].mean().item(), "mean bf16", out["bfloat16"].mean().item())
