"""Quality of the bf16 path: the final clean activations (always measured in float32) of channels of
EfficientNet-Lite0 ``blocks.4`` rendered with a bf16 model forward, against a float32 forward, same seeds.

    python benchmarks/bf16_quality.py                      # on CUDA when present, else the CPU's bf16 autocast
    python benchmarks/bf16_quality.py --channels 32 --steps 512
"""

from __future__ import annotations

import argparse
import sys
import time

import studio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    model = studio.load_model()
    targets = [f"blocks.4:{channel}" for channel in range(args.channels)]
    clean = {}
    for precision in studio.settings.PRECISIONS:
        start = time.perf_counter()
        result = studio.render(model, targets, steps=args.steps, size=args.size, seed=0, precision=precision)
        clean[precision] = result.clean_values
        print(f"{precision:9s} {time.perf_counter() - start:6.0f} s on {model.device}, mean clean activation "
              f"{result.clean_values.mean():.3f}", flush=True)
    relative = (clean["bfloat16"] - clean["float32"]) / clean["float32"].abs()
    print(f"bf16 vs float32 over {args.channels} channels: median {relative.median():+.2%}, "
          f"median |difference| {relative.abs().median():.2%}, largest |difference| {relative.abs().max():.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
