"""A large canvas optimised through random crops, side by side with Horama (the MACO authors' toolbox) in the
same run: EfficientNet-Lite0 channels, the same steps, each render judged by code of its own here.

The judge is a plain forward hook on the layer (no studio code): a channel's spatial mean on the canvas's
centre box (a side of the method's own crop fraction) resized to the model's input, and the mean over an even
grid of such boxes (does the whole canvas activate the unit, or only its middle?), each as a multiple of the
best of scikit-image's photos, resized whole. Horama works in ImageNet-normalised pixels; a wrapper converts
its crops to [0, 1] and then to the model's own normalisation, and its canvas back to [0, 1] for the judge.

    python benchmarks/canvas.py                                    # channels 3 and 11 of blocks.4, 128 steps
    python benchmarks/canvas.py --crops 1,2,6 --crop-size 0.25 --horama --json canvas.json
    python benchmarks/canvas.py --magnitude                        # MACO: natural against 1/f magnitude

Horama goes into benchmarks/.peers, not the environment: its wheel ships a top-level ``tests`` package that
would shadow the studio's own tests:

    pip install --no-deps --target benchmarks/.peers horama==0.3.0
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import studio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
sys.path.append(str(Path(__file__).resolve().parent / ".peers"))  # Horama (see above)
from skimage_photos import _photos  # noqa: E402  (the README's photos)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Horama samples box sides in [0.25, 0.30] of the canvas (its box_size=(0.20, 0.25) read as max + rand * range).
HORAMA_CROP = 0.275


class _Reached(Exception):
    """Raised by the hook once the layer is computed: the rest of the forward is not needed."""


class Judge:
    """A layer's channels read by a forward hook on the model's own module, from images in [0, 1]; the forward
    stops at the layer (for Horama's objective too, so both methods pay for the same part of the model)."""

    def __init__(self, model: studio.StudioModel, layer: str) -> None:
        self.model, self.module = model, dict(model.module.named_modules())[layer]
        self.mean = torch.tensor(model.spec.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(model.spec.std).view(1, -1, 1, 1)

    def channels(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, C]`` spatial means of the layer for ``images`` ``[B, 3, H, W]`` at the model's input size."""
        seen = []

        def reached(_module, _inputs, output):
            seen.append(output)
            raise _Reached

        handle = self.module.register_forward_hook(reached)
        try:
            self.model.module((images - self.mean) / self.std)
        except _Reached:
            pass
        finally:
            handle.remove()
        return seen[0].mean((2, 3))

    def crops(self, canvas: torch.Tensor, fraction: float, grid: int) -> torch.Tensor:
        """``[grid * grid, 3, *input]``: an even grid of boxes of ``fraction`` of the canvas, resized (grid 1: the
        centre box)."""
        side = canvas.shape[-1]
        box = round(side * fraction)
        starts = [(side - box) // 2] if grid == 1 else torch.linspace(0, side - box, grid).round().int().tolist()
        tiles = [canvas[:, y:y + box, x:x + box] for y in starts for x in starts]
        return F.interpolate(torch.stack(tiles), size=self.model.spec.size, mode="bilinear", antialias=True,
                             align_corners=False)


def natural_best(judge: Judge, channels: list[int]) -> torch.Tensor:
    """The largest spatial mean of each channel over the photos, each resized whole to the input."""
    photos = [studio.io.fit(studio.io.from_uint8(photo), judge.model.spec.size) for _, photo in _photos()]
    with torch.no_grad():
        return judge.channels(torch.stack(photos))[:, channels].amax(0)


def photo_magnitude(canvas: int) -> torch.Tensor:
    """MACO's magnitude at canvas size from the RGB photos' centre squares at their own scale (no upsampling:
    :func:`studio.param.natural_magnitude` carries it to the canvas's frequencies)."""
    photos = [studio.io.from_uint8(photo) for name, photo in _photos()]
    side = min(min(photo.shape[1:]) for photo in photos)
    squares = torch.stack([studio.io.fit(photo, (side, side)) for photo in photos])
    return studio.param.natural_magnitude(squares, canvas, canvas)


def horama_render(judge: Judge, channel: int, steps: int, canvas: int, crops: int) -> torch.Tensor:
    """Horama's Fourier canvas for one channel, in [0, 1]."""
    import horama

    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def objective(images: torch.Tensor) -> torch.Tensor:
        return judge.channels((images * std + mean).clamp(0, 1))[:, channel].mean()

    image, _alpha = horama.fourier(objective, total_steps=steps, image_size=canvas,
                                   model_input_size=judge.model.spec.size[-1], crops_per_iteration=crops,
                                   device="cpu")
    return (image.detach().cpu() * std[0] + mean[0]).clamp(0, 1)


def judged(judge: Judge, canvas: torch.Tensor, channel: int, fraction: float, best: float) -> dict:
    grid = math.ceil(1 / fraction - 1e-9)
    with torch.no_grad():
        centre = judge.channels(judge.crops(canvas, fraction, 1))[:, channel].mean().item()
        everywhere = judge.channels(judge.crops(canvas, fraction, grid))[:, channel].mean().item()
    return {"centre_x_natural": round(centre / best, 2), "grid_x_natural": round(everywhere / best, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", default="blocks.4")
    parser.add_argument("--channels", default="3,11")
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--canvas", type=int, default=1280)
    parser.add_argument("--crops", default="6", help="comma-separated crop counts for the studio's canvas (\"\": none)")
    parser.add_argument("--crop-size", default="0.25", help="comma-separated crop fractions for the studio")
    parser.add_argument("--param", default="fourier")
    parser.add_argument("--lr", default="0.05", help="comma-separated learning rates for the studio's canvas")
    parser.add_argument("--horama", action="store_true", help="also run Horama's Fourier canvas (6 crops)")
    parser.add_argument("--plain", action="store_true", help="also run the studio's 128 px image, judged whole")
    parser.add_argument("--magnitude", action="store_true",
                        help="also run MACO canvases with the 1/f magnitude and with one measured on the photos")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_grad_enabled(True)
    model = studio.load_model(device="cpu")
    judge = Judge(model, args.layer)
    channels = [int(c) for c in args.channels.split(",")]
    best = natural_best(judge, channels)
    rows = []

    def report(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    for index, channel in enumerate(channels):
        target, natural = f"{args.layer}:{channel}", best[index].item()
        if args.horama:
            start = time.perf_counter()
            canvas = horama_render(judge, channel, args.steps, args.canvas, 6)
            report({"method": "horama fourier", "channel": channel, "crops": 6, "crop_size": HORAMA_CROP,
                    "seconds": round(time.perf_counter() - start, 1),
                    **judged(judge, canvas, channel, HORAMA_CROP, natural)})
        if args.plain:
            start = time.perf_counter()
            result = studio.render(model, target, steps=args.steps, param=args.param)
            report({"method": "studio 128 px", "channel": channel, "seconds": round(time.perf_counter() - start, 1),
                    **judged(judge, result.images[0], channel, 1.0, natural)})
        for crops, fraction, lr in itertools.product([int(c) for c in args.crops.split(",") if c],
                                                     map(float, args.crop_size.split(",")), map(float, args.lr.split(","))):
            start = time.perf_counter()
            result = studio.render(model, target, steps=args.steps, param=args.param, canvas=args.canvas,
                                   crops=crops, crop_size=fraction, lr=lr)
            report({"method": f"studio canvas ({args.param})", "channel": channel, "crops": crops,
                    "crop_size": fraction, "lr": lr, "seconds": round(time.perf_counter() - start, 1),
                    **judged(judge, result.images[0], channel, fraction, natural)})
        if args.magnitude:
            for name, magnitude in (("1/f", None), ("natural", photo_magnitude(args.canvas))):
                start = time.perf_counter()
                image = studio.param.image(args.canvas, kind="maco", magnitude=magnitude, seed=0)
                result = studio.render(model, target, steps=args.steps, canvas=args.canvas, crops=6, param=image)
                report({"method": f"studio canvas (maco, {name} magnitude)", "channel": channel, "crops": 6,
                        "crop_size": 0.25, "seconds": round(time.perf_counter() - start, 1),
                        **judged(judge, result.images[0], channel, 0.25, natural)})
    summary = {"command": "python " + shlex.join(sys.argv), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "steps": args.steps, "canvas": args.canvas, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
