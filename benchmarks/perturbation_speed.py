"""Seconds for LIME and KernelSHAP on one photo at the model's input size (EfficientNet-Lite0, 224 px,
scikit-image's chelsea), the studio's against captum's, the same samples, superpixels and forward batch.

    python benchmarks/perturbation_speed.py                      # 1000 samples, batch 16
    python benchmarks/perturbation_speed.py --samples 256 --batch 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import skimage.data
import torch

import studio
from studio.attribution.perturbation import superpixels
from studio.io import from_uint8
from studio.models import resize_to_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-captum", action="store_true")
    args = parser.parse_args()
    from captum.attr import KernelShap, Lime

    model = studio.load_model(device=args.device)
    photo = resize_to_input(from_uint8(skimage.data.chelsea())[None], model.spec).to(model.device)
    target = 285  # Egyptian cat
    labels = superpixels(photo[0], args.segments, rgb=True).to(model.device)
    forward = lambda x: model.module(model.spec.normalise(x))  # noqa: E731
    rows = []
    for method, peer in (("lime", Lime), ("kernel_shap", KernelShap)):
        start = time.perf_counter()
        studio.attribute(model, photo, target, method=method, samples=args.samples, segments=args.segments,
                         batch_size=args.batch)
        rows.append({"method": method, "library": "studio", "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
        if args.no_captum:
            continue
        start = time.perf_counter()
        with torch.no_grad():
            peer(forward).attribute(photo, baselines=0.5, target=target, feature_mask=labels[None, None],
                                    n_samples=args.samples, perturbations_per_eval=args.batch)
        rows.append({"method": method, "library": "captum", "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    device = torch.cuda.get_device_name() if model.device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(json.dumps({"command": "python " + shlex.join(sys.argv), "device": device, "samples": args.samples,
                      "segments": int(labels.max()) + 1, "batch": args.batch, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
