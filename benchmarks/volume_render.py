"""Volume renders: seconds per render, steps/s and peak memory of a 3D class render at a few volume sizes,
for a small 3D CNN (1 channel) and torchvision's R3D-18 (random weights; 3 channels x T x H x W read as a
volume), through the same engine as 2D renders (Fourier over three frequencies, 3D random transforms).

    python benchmarks/volume_render.py                       # 32^3 and 64^3, 256 steps, on CUDA when present
    python benchmarks/volume_render.py --sizes 32 --steps 64 --models small
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch
from torch import nn

import studio


def small_net() -> nn.Module:
    """A 1-channel 3D CNN the size of a quick medical-imaging classifier: four 3D convolutions, two logits."""
    return nn.Sequential(nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                         nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2),
                         nn.Conv3d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv3d(64, 64, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(64, 2))


def r3d() -> nn.Module:
    import torchvision

    return torchvision.models.video.r3d_18(weights=None)


MODELS = {"small": (small_net, 1), "r3d18": (r3d, 3)}


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux: the process's peak RSS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="32,64", help="volume sides, comma-separated")
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--models", default="small,r3d18")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, Fourier, standard transforms")
    for key in args.models.split(","):
        make, channels = MODELS[key]
        for side in (int(s) for s in args.sizes.split(",")):
            torch.manual_seed(0)
            spec = studio.InputSpec((side,) * 3, channels=channels)
            model = studio.load_model(make(), device=device, input=spec)
            studio.render(model, "logits:1", size=side, steps=2)  # warm-up: kernels, allocator
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            result = studio.render(model, "logits:1", size=side, steps=args.steps)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - start
            print(f"{key:7s} {channels}x{side}^3  {seconds:7.1f} s  {args.steps / seconds:6.1f} steps/s  peak "
                  f"{peak_memory_gib(device):5.2f} GiB  logit {result.history[0, 0]:.4f} -> {result.clean_values[0]:.4f} "
                  "(random weights: the speed is the point)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
