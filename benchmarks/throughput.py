"""Whole-layer throughput of the studio's engine, side by side with lucent, on one GPU.

For each model it renders channels of one layer (512 steps, 128 px Fourier + decorrelated colour, standard
transforms, upsampled to the model's input) and prints channels/s, achieved TFLOP/s (FLOPs of one step
counted with ``torch.utils.flop_counter``, times steps, over wall time), and peak GPU memory for:
the studio at batch 1, the studio at its automatic batch size (float32 and bf16), and, when ``torch-lucent``
is importable, lucent one channel per run and lucent with 32 channels in one batch.

    python benchmarks/throughput.py                 # all three models, on CUDA
    python benchmarks/throughput.py --models lite0 --steps 128 --json out.json
    python benchmarks/throughput.py --allow-cpu --steps 2 --channels 2   # check the harness itself on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

import studio
from studio.batching import auto_batch_size

CASES = {
    "lite0": ("EfficientNet-Lite0", "efficientnet_lite0", True, "blocks.4"),
    "googlenet": ("GoogLeNet (random weights)", "torchvision:googlenet", False, "inception4a"),
    "resnet50": ("ResNet-50 (random weights)", "torchvision:resnet50", False, "layer3"),
}


@dataclass
class Row:
    model: str
    runner: str
    batch: int
    channels: int
    seconds: float
    channels_per_s: float
    tflops: float | None
    peak_gib: float | None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def studio_step_flops(model: studio.StudioModel, targets: list[str], **settings) -> float:
    """FLOPs of one optimisation step: a 2-step render minus a 1-step render (both include one clean pass)."""
    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            studio.render(model, targets, steps=steps, **settings)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def time_studio(model: studio.StudioModel, layer: str, channels: int, batch: int, steps: int,
                **settings) -> tuple[float, float]:
    """Seconds to render ``channels`` channels of ``layer`` in batches of ``batch``, and peak memory."""
    count = studio.targets.layer_info(model, studio.targets.resolve_layer(model, layer)).channels
    targets = [f"{layer}:{c % count}" for c in range(channels)]
    studio.render(model, targets[:batch], steps=2, **settings)  # warm-up: kernels, allocator, cuDNN plans
    device = model.device
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, channels, batch):
        studio.render(model, targets[first:first + batch], steps=steps, **settings)
    synchronize(device)
    return time.perf_counter() - start, peak_gib(device)


def lucent_available() -> bool:
    try:
        import kornia
        import kornia.geometry.transform as geometry

        # lucent 0.1.8 calls kornia.get_rotation_matrix2d / kornia.warp_affine, which kornia 0.9 moved.
        kornia.get_rotation_matrix2d = getattr(kornia, "get_rotation_matrix2d", geometry.get_rotation_matrix2d)
        kornia.warp_affine = getattr(kornia, "warp_affine", geometry.warp_affine)
        from lucent.optvis import objectives, param, render  # noqa: F401
    except ImportError:
        return False
    return True


def time_lucent(module: torch.nn.Module, layer: str, channels: int, batch: int, steps: int) -> tuple[float, float]:
    """Seconds for lucent's ``render_vis`` to render ``channels`` channels, ``batch`` per run."""
    from lucent.optvis import objectives, param, render

    lucent_layer = layer.replace(".", "_")
    device = next(module.parameters()).device

    def run(first: int, count: int, run_steps: int) -> None:
        objective = sum(objectives.channel(lucent_layer, first + i, batch=i if count > 1 else None)
                        for i in range(count))
        render.render_vis(module, objective, lambda: param.image(128, batch=count), thresholds=(run_steps,),
                          show_image=False, progress=False)

    run(0, batch, 2)
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    for first in range(0, channels, batch):
        run(first, min(batch, channels - first), steps)
    synchronize(device)
    return time.perf_counter() - start, peak_gib(device)


def benchmark(key: str, steps: int, channels: int, lucent_channels: int, device: str) -> list[Row]:
    title, spec, pretrained, layer = CASES[key]
    model = studio.load_model(spec, pretrained=pretrained, device=device)
    base = {"size": 128, "param": "fourier", "snapshot_every": steps}
    rows = []
    count = studio.targets.layer_info(model, layer).channels
    runs = [("studio, batch 1", 1, 1, "float32")]
    for precision in ("float32", "bfloat16"):
        settings = studio.RenderSettings(size=base["size"], param=base["param"], steps=steps, precision=precision)
        batch = min(channels, auto_batch_size(model, [f"{layer}:0"], settings))
        runs.append((f"studio, auto batch, {precision}", batch, channels, precision))
    for runner, batch, total, precision in runs:
        seconds, peak = time_studio(model, layer, total, batch, steps, precision=precision, **base)
        flops = studio_step_flops(model, [f"{layer}:{c % count}" for c in range(batch)], precision=precision,
                                  **base) * steps * (total / batch)
        rows.append(Row(title, runner, batch, total, seconds, total / seconds, flops / seconds / 1e12, peak))
    if lucent_available():
        for runner, batch, total in (("lucent, one channel per run", 1, max(1, lucent_channels // 8)),
                                     ("lucent, 32 channels in one batch", 32, max(32, lucent_channels))):
            seconds, peak = time_lucent(model.module, layer, total, batch, steps)
            rows.append(Row(title, runner, batch, total, seconds, total / seconds, None, peak))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lite0,googlenet,resnet50", help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--steps", type=int, default=512)
    parser.add_argument("--channels", type=int, default=256, help="channels rendered by the batched studio runs")
    parser.add_argument("--lucent-channels", type=int, default=32)
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU (to check the harness only)")
    parser.add_argument("--json", help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("throughput.py measures GPU throughput and needs CUDA; this machine has none "
              "(--allow-cpu runs it anyway, to check the harness).", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    rows = [row for key in args.models.split(",") for row in benchmark(key.strip(), args.steps, args.channels,
                                                                        args.lucent_channels, device)]
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"\n{name}, torch {torch.__version__}, {args.steps} steps, 128 px Fourier + decorrelated, standard transforms")
    print(f"{'model':28s} {'runner':36s} {'batch':>5s} {'ch/s':>8s} {'TFLOP/s':>8s} {'peak GiB':>8s}")
    for row in rows:
        tflops = f"{row.tflops:8.2f}" if row.tflops is not None else "       -"
        peak = f"{row.peak_gib:8.2f}" if row.peak_gib is not None else "       -"
        print(f"{row.model:28s} {row.runner:36s} {row.batch:5d} {row.channels_per_s:8.3f} {tflops} {peak}")
    if args.json:
        studio.io.write_json(args.json, [asdict(r) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
