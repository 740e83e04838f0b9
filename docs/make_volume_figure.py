"""Make docs/volume.png: the studio's 3D view of the tiny sphere CNN's "sphere" class (logits:1) rendered as a
volume, beside a held-out sphere volume with its Grad-CAM overlay.

    xvfb-run -a -s "-screen 0 2200x1300x24" .venv/bin/python docs/make_volume_figure.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.synthetic

import studio  # noqa: E402
from studio.viewer.app import open_studio  # noqa: E402
from tests.synthetic import sphere_net, spheres, train  # noqa: E402

SIZE = 24

if __name__ == "__main__":
    net = train(sphere_net, lambda g: spheres(32, SIZE, generator=g), steps=120)
    model = studio.load_model(net, device="cpu", input=studio.InputSpec((SIZE,) * 3, mean=(0.0,), std=(1.0,),
                                                                          channels=1))
    volumes, labels, _ = spheres(8, SIZE, generator=torch.Generator().manual_seed(98))
    held_out = volumes[int(labels.nonzero()[0])]
    with tempfile.TemporaryDirectory() as folder:  # the screenshot's JSON record stays out of docs/
        shot = Path(folder) / "volume.png"
        open_studio(model, target="logits:1", images=[("held-out sphere", held_out)], method="gradcam",
                    explain=["visualised unit"], settings=studio.RenderSettings(steps=128, size=SIZE),
                    screenshot=str(shot), window_size=(2000, 1000))
        shutil.copy(shot, ROOT / "docs" / "volume.png")
    print(f"wrote {ROOT / 'docs' / 'volume.png'}")
