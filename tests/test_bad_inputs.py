"""The bad-input matrix: mistakes a user can make on the command line, in the Python API, in gallery specs and
in the viewer's fields. Each must end in one sentence (``studio: error: ...`` and a non-zero exit, or one
``StudioError``) with no traceback, nothing written and no hook left on the model.

Models are tiny (a factory file, loaded in milliseconds) and every render that should not start is one step
at most, so the whole matrix stays within the CPU test budget.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import studio
from studio import StudioError, cli, gallery
from studio.attribution import explain
from studio.display import overlay
from studio.io import read_image, read_stack
from studio.models import InputSpec, parse_input
from studio.settings import RenderSettings
from studio.viewer.streaming import VIEWER_FIELDS, RenderRequest
from tests.conftest import hook_count

TINY = '''
import torch
from torch import nn


class Tiny(nn.Module):
    """conv (4 channels, 16x16) -> block (6 channels, 8x8) -> head (5 classes)."""

    def __init__(self, channels=3, conv=nn.Conv2d):
        super().__init__()
        torch.manual_seed(0)
        self.conv = conv(channels, 4, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), conv(4, 6, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        return self.head(self.block(self.conv(x)).flatten(2).mean(2))


def make():
    return Tiny()


def five():
    return Tiny(5)


def cube():
    return Tiny(1, nn.Conv3d)


def number():
    return 3


def linear():
    return nn.Linear(3, 3)


def fails():
    raise ValueError("the weights file is missing")
'''


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels (a decompression bomb, to PIL's eyes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Model files and images, good and bad, that the cases name as ``{in}/...``."""
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "tiny.py").write_text(TINY)
    (folder / "broken.py").write_text("def make(:\n    pass\n")
    rng = np.random.default_rng(0)
    photo = (rng.random((24, 24, 3)) * 255).astype(np.uint8)
    iio.imwrite(folder / "photo.png", photo)
    iio.imwrite(folder / "grey.png", photo[..., 0])
    iio.imwrite(folder / "rgba.png", np.concatenate([photo, photo[..., :1]], axis=-1))
    iio.imwrite(folder / "deep.png", (rng.random((24, 24)) * 65535).astype(np.uint16))
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    (folder / "truncated.png").write_bytes((folder / "photo.png").read_bytes()[:200])
    (folder / "bomb.png").write_bytes(_png_header(40_000, 40_000))
    (folder / "folder.png").mkdir()
    iio.imwrite(folder / "nan.tif", np.full((24, 24, 3), np.nan, np.float32))
    iio.imwrite(folder / "cube.tif", rng.random((8, 8, 8)).astype(np.float32))
    (folder / "garbage.pt").write_bytes(rng.bytes(256))
    (folder / "empty.pt").write_bytes(b"")
    torch.save({"weight": torch.zeros(3)}, folder / "state.pt")
    (folder / "latin1.toml").write_bytes('title = "caf\xe9"\n'.encode("latin-1"))
    (folder / "invalid.toml").write_text("title = \n")
    return folder


@pytest.fixture(scope="module")
def tiny(inputs) -> studio.StudioModel:
    return studio.load_model(f"{inputs}/tiny.py:make", device="cpu")


def _one_sentence(text: str) -> None:
    """A message a user reads in one go: one line, no traceback, not a wall of text."""
    assert text and "\n" not in text.strip() and "Traceback" not in text and len(text) < 600, text


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------------ the CLI

M = "{in}/tiny.py:make"
RENDER = ["render", M, "conv:1", "--steps", "1", "--size", "16"]
ATTRIBUTE = ["attribute", M, "{in}/photo.png", "--method", "saliency"]

CLI_CASES = {
    # commands and arguments
    "no command": [],
    "unknown command": ["rendr"],
    "render without target": ["render"],
    "render model without target": ["render", M],
    "unknown option": [*RENDER, "--stepz", "3"],
    # render settings
    "steps 0": [*RENDER, "--steps", "0"],
    "steps negative": [*RENDER, "--steps", "-5"],
    "steps float": [*RENDER, "--steps", "1.5"],
    "steps text": [*RENDER, "--steps", "many"],
    "steps 1e9": [*RENDER, "--steps", "1000000000"],
    "size 4": [*RENDER, "--size", "4"],
    "size 100000": [*RENDER, "--size", "100000"],
    "size text": [*RENDER, "--size", "big"],
    "lr 0": [*RENDER, "--lr", "0"],
    "lr -1": [*RENDER, "--lr", "-1"],
    "lr nan": [*RENDER, "--lr", "nan"],
    "lr inf": [*RENDER, "--lr", "inf"],
    "lr -inf": [*RENDER, "--lr=-inf"],
    "lr 1e300": [*RENDER, "--lr", "1e300"],
    "lr text": [*RENDER, "--lr", "fast"],
    "decay nan": [*RENDER, "--decay-power", "nan"],
    "decay negative": [*RENDER, "--decay-power", "-1"],
    "param unknown": [*RENDER, "--param", "fourrier"],
    "transforms unknown": [*RENDER, "--transforms", "strong"],
    "precision unknown": [*RENDER, "--precision", "float16"],
    "seed negative": [*RENDER, "--seed", "-1"],
    "seed past 64 bits": [*RENDER, "--seed", str(2**64)],
    "seed text": [*RENDER, "--seed", "one"],
    # devices
    "device meta": [*RENDER, "--device", "meta"],
    "device cuda:7": [*RENDER, "--device", "cuda:7"],
    "device nonsense": [*RENDER, "--device", "gpu0"],
    # targets
    "channel out of range": ["render", M, "conv:99", "--steps", "1"],
    "channel superscript": ["render", M, "conv:²", "--steps", "1"],
    "channel negative": ["render", M, "conv:-1", "--steps", "1"],
    "channel text": ["render", M, "conv:a", "--steps", "1"],
    "range reversed": ["render", M, "conv:3-1", "--steps", "1"],
    "range past the end": ["render", M, "conv:0-9", "--steps", "1"],
    "list with a bad member": ["render", M, "conv:1, 9", "--steps", "1"],
    "unknown layer": ["render", M, "conv2:1", "--steps", "1"],
    "empty layer": ["render", M, ":1", "--steps", "1"],
    "empty channel": ["render", M, "conv:", "--steps", "1"],
    "two colons": ["render", M, "conv:1:2", "--steps", "1"],
    "empty target": ["render", M, "", "--steps", "1"],
    "position out of range": ["render", M, "conv:1@999,999", "--steps", "1"],
    "position one number": ["render", M, "conv:1@3", "--steps", "1"],
    "position text": ["render", M, "conv:1@x,y", "--steps", "1"],
    "position three numbers": ["render", M, "conv:1@1,2,3", "--steps", "1"],
    "token on a cnn": ["render", M, "conv:1@cls", "--steps", "1"],
    "class out of range": ["render", M, "logits:9", "--steps", "1"],
    "class label without names": ["render", M, 'logits:"tabby"', "--steps", "1"],
    "class negative": ["render", M, "logits:-2", "--steps", "1"],
    "whole layer in a list": ["render", M, "conv", "conv:1", "--steps", "1"],
    # models
    "unknown embedded model": ["render", "efficientnet_lite9", "blocks.4:1"],
    "a model name as a target": ["render", "resnet18", "layer3:3"],
    "unknown torchvision model": ["render", "torchvision:resnet999", "layer3:3"],
    "unknown timm model": ["render", "timm:vit_nonexistent_patch16", "blocks.0:1"],
    "missing factory file": ["render", "{in}/missing.py:make", "conv:1"],
    "factory not defined": ["render", "{in}/tiny.py:nothing", "conv:1"],
    "factory returns a number": ["render", "{in}/tiny.py:number", "conv:1"],
    "factory returns nn.Linear": ["render", "{in}/tiny.py:linear", "logits:1", "--steps", "1"],
    "factory raises": ["render", "{in}/tiny.py:fails", "conv:1"],
    "factory file with a syntax error": ["render", "{in}/broken.py:make", "conv:1"],
    "missing checkpoint": ["render", "{in}/missing.pt", "conv:1"],
    "garbage checkpoint": ["render", "{in}/garbage.pt", "conv:1"],
    "empty checkpoint": ["render", "{in}/empty.pt", "conv:1"],
    "state dict without architecture": ["render", "{in}/state.pt", "conv:1"],
    # input specs
    "input zero channels": [*RENDER, "--input", "0x16x16"],
    "input zero size": [*RENDER, "--input", "3x0x16"],
    "input one size": [*RENDER, "--input", "3x16"],
    "input text": [*RENDER, "--input", "rgb"],
    "input wrong channels": [*RENDER, "--input", "1x16x16"],
    "mean without input": [*RENDER, "--mean", "0.5"],
    "mean text": [*RENDER, "--input", "3x16x16", "--mean", "a,b,c"],
    "mean two of three": [*RENDER, "--input", "3x16x16", "--mean", "0.5,0.5"],
    "mean nan": [*RENDER, "--input", "3x16x16", "--mean", "nan"],
    "std zero": [*RENDER, "--input", "3x16x16", "--std", "0"],
    "std negative": [*RENDER, "--input", "3x16x16", "--std", "-1"],
    "std inf": [*RENDER, "--input", "3x16x16", "--std", "inf"],
    # output paths
    "out is a file": [*RENDER, "--out", "afile"],
    "out under a file": [*RENDER, "--out", "afile/renders"],
    "out png under a file": [*RENDER, "--out", "afile/x.png"],
    "out png is a folder": [*RENDER, "--out", "adir.png"],
    "out tif": [*RENDER, "--out", "render.tif"],
    "out one file two targets": ["render", M, "conv:1", "conv:2", "--steps", "1", "--out", "x.png"],
    "out read-only": [*RENDER, "--out", "readonly/renders"],
    # attribute: photos
    "photo missing": ["attribute", M, "{in}/missing.png"],
    "photo empty": ["attribute", M, "{in}/empty.png"],
    "photo text": ["attribute", M, "{in}/text.png"],
    "photo truncated": ["attribute", M, "{in}/truncated.png"],
    "photo huge": ["attribute", M, "{in}/bomb.png"],
    "photo is a folder": ["attribute", M, "{in}/folder.png"],
    "photo nan": ["attribute", M, "{in}/nan.tif"],
    "photo a volume": ["attribute", M, "{in}/cube.tif"],
    "grey photo for five channels": ["attribute", "{in}/tiny.py:five", "{in}/grey.png"],
    "rgba photo for five channels": ["attribute", "{in}/tiny.py:five", "{in}/rgba.png"],
    "png for a volume model": ["attribute", "{in}/tiny.py:cube", "{in}/grey.png"],
    "second photo missing": ["attribute", M, "{in}/photo.png", "{in}/missing.png"],
    # attribute: methods and options
    "method unknown": ["attribute", M, "{in}/photo.png", "--method", "deconvnet"],
    "option of another method": [*ATTRIBUTE, "--samples", "4"],
    "ig steps 0": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--steps", "0"],
    "ig steps 1e8": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--steps", "100000000"],
    "ig rule unknown": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--rule", "simpson"],
    "baseline nan": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--baseline", "nan"],
    "baseline 2": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--baseline", "2"],
    "baseline missing file": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--baseline",
                              "{in}/missing.png"],
    "baseline nan image": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--baseline",
                           "{in}/nan.tif"],
    "blur sigma 0": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--baseline", "blurred",
                     "--blur-sigma", "0"],
    "blur sigma nan": ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--baseline",
                       "blurred", "--blur-sigma", "nan"],
    "samples 0": ["attribute", M, "{in}/photo.png", "--method", "smoothgrad", "--samples", "0"],
    "samples 1e6": ["attribute", M, "{in}/photo.png", "--method", "smoothgrad", "--samples", "1000000"],
    "noise nan": ["attribute", M, "{in}/photo.png", "--method", "smoothgrad", "--noise", "nan"],
    "noise negative": ["attribute", M, "{in}/photo.png", "--method", "smoothgrad", "--noise", "-0.1"],
    "noise 5": ["attribute", M, "{in}/photo.png", "--method", "smoothgrad", "--noise", "5"],
    "smoothgrad seed negative": ["attribute", M, "{in}/photo.png", "--method", "smoothgrad", "--seed", "-3"],
    "batch size 0": [*ATTRIBUTE, "--batch-size", "0"],
    "gradcam unknown layer": ["attribute", M, "{in}/photo.png", "--method", "gradcam", "--layer", "conv9"],
    "attention on a cnn": ["attribute", M, "{in}/photo.png", "--method", "attention"],
    "target class out of range": [*ATTRIBUTE, "--target", "9"],
    "target unknown layer": [*ATTRIBUTE, "--target", "conv9:1"],
    "target channel out of range": [*ATTRIBUTE, "--target", "conv:40"],
    "alpha 5": [*ATTRIBUTE, "--out", "o.png", "--alpha", "5"],
    "alpha nan": [*ATTRIBUTE, "--out", "o.png", "--alpha", "nan"],
    "colormap unknown": [*ATTRIBUTE, "--out", "o.png", "--colormap", "rainbowish"],
    "attribute out txt": [*ATTRIBUTE, "--out", "maps.txt"],
    "attribute out is a folder": [*ATTRIBUTE, "--out", "adir.npy"],
    "attribute out under a file": [*ATTRIBUTE, "--out", "afile/maps.npy"],
    # gallery, layers, view
    "gallery spec missing": ["gallery", "{in}/missing.toml", "--out", "g"],
    "gallery spec not utf-8": ["gallery", "{in}/latin1.toml", "--out", "g"],
    "gallery spec invalid toml": ["gallery", "{in}/invalid.toml", "--out", "g"],
    "gallery spec is a folder": ["gallery", "{in}/folder.png", "--out", "g"],
    "layers unknown model": ["layers", "efficientnet_lite9"],
    "layers bad input": ["layers", M, "--input", "3x16"],
    "view without display": ["view", M, "--device", "cpu"],
    "view screenshot jpg": ["view", M, "--screenshot", "x.jpg"],
    "view window size": ["view", M, "--window-size", "big"],
    "view count 0": ["view", M, "--count", "0"],
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_sentence_and_writes_nothing(case, inputs, tmp_path, monkeypatch, capsys):
    argv = [arg.replace("{in}", str(inputs)) for arg in CLI_CASES[case]]
    (tmp_path / "afile").write_text("a file")
    for folder in ("adir.png", "adir.npy", "readonly"):
        (tmp_path / folder).mkdir()
    import studio.checks as checks
    real_access = checks.os.access  # the test may run as root, who may write anywhere: read-only is planted
    monkeypatch.setattr(checks.os, "access",
                        lambda path, mode: False if Path(path).name == "readonly" else real_access(path, mode))
    monkeypatch.setenv("DISPLAY", "")
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    err = capsys.readouterr().err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert code not in (0, None) and len(errors) == 1 and lines[-1] == errors[0], err
    _one_sentence(errors[0])
    assert _files(tmp_path) == before


# ------------------------------------------------------------------------------------------------ the Python API

def _zeros(*shape):
    return torch.zeros(*shape)


API_CASES = {
    "load unknown model": lambda m, i: studio.load_model("resnet5000"),
    "load a number": lambda m, i: studio.load_model(42),
    "load bad device": lambda m, i: studio.load_model(f"{i}/tiny.py:make", device="meta"),
    "load bad input": lambda m, i: studio.load_model(f"{i}/tiny.py:make", input=InputSpec((16,), channels=3)),
    "input spec zero std": lambda m, i: InputSpec((16, 16), std=(0.0, 1.0, 1.0)),
    "input spec nan mean": lambda m, i: InputSpec((16, 16), mean=(math.nan, 0.0, 0.0)),
    "input spec wrong count": lambda m, i: InputSpec((16, 16), mean=(0.5, 0.5)),
    "parse input negative": lambda m, i: parse_input("3x-4x4"),
    "render no targets": lambda m, i: studio.render(m, [], steps=1),
    "render bad channel": lambda m, i: studio.render(m, "conv:40", steps=1),
    "render bad layer": lambda m, i: studio.render(m, "convv:1", steps=1),
    "render a float target": lambda m, i: studio.render(m, 1.5, steps=1),
    "render steps 0": lambda m, i: studio.render(m, "conv:1", steps=0),
    "render steps float": lambda m, i: studio.render(m, "conv:1", steps=1.5),
    "render steps bool": lambda m, i: studio.render(m, "conv:1", steps=True),
    "render steps string": lambda m, i: studio.render(m, "conv:1", steps="1"),
    "render size huge": lambda m, i: studio.render(m, "conv:1", steps=1, size=10**6),
    "render lr nan": lambda m, i: studio.render(m, "conv:1", steps=1, lr=math.nan),
    "render lr numpy inf": lambda m, i: studio.render(m, "conv:1", steps=1, lr=np.float64("inf")),
    "render lr 1e300": lambda m, i: studio.render(m, "conv:1", steps=1, size=16, lr=1e300),
    "render lr past float": lambda m, i: studio.render(m, "conv:1", steps=1, size=16, lr=10**400),
    "render unknown setting": lambda m, i: studio.render(m, "conv:1", stepz=1),
    "render param unknown": lambda m, i: studio.render(m, "conv:1", steps=1, param="fft"),
    "render seed negative": lambda m, i: studio.render(m, "conv:1", steps=1, seed=-1),
    "render seed 2**64": lambda m, i: studio.render(m, "conv:1", steps=1, seed=2**64),
    "render seed float": lambda m, i: studio.render(m, "conv:1", steps=1, seed=0.5),
    "render seeds too few": lambda m, i: studio.render(m, ["conv:1", "conv:2"], steps=1, seed=[1]),
    "render init nan": lambda m, i: studio.render(m, "conv:1", steps=1, size=16, init=torch.full((1, 3, 16, 16), math.nan)),
    "render init wrong shape": lambda m, i: studio.render(m, "conv:1", steps=1, size=16, init=_zeros(1, 5, 16, 16)),
    "render model string unknown": lambda m, i: studio.render("nosuchmodel", "conv:1", steps=1),
    "optimize whole layer in list": lambda m, i: studio.render(m, ["conv", "conv:1"], steps=1),
    "settings size 4": lambda m, i: RenderSettings(size=4),
    "settings lr inf": lambda m, i: RenderSettings(lr=math.inf),
    "settings decorrelate text": lambda m, i: RenderSettings(decorrelate="yes"),
    "settings precision": lambda m, i: RenderSettings(precision="half"),
    "settings updated typo": lambda m, i: RenderSettings().updated({"sizee": 3}),
    "attribute nan images": lambda m, i: studio.attribute(m, torch.full((1, 3, 16, 16), math.nan), 1),
    "attribute inf images": lambda m, i: studio.attribute(m, torch.full((1, 3, 16, 16), math.inf), 1),
    "attribute uint8 images": lambda m, i: studio.attribute(m, torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 1),
    "attribute wrong channels": lambda m, i: studio.attribute(m, _zeros(1, 5, 16, 16), 1),
    "attribute empty batch": lambda m, i: studio.attribute(m, _zeros(0, 3, 16, 16), 1),
    "attribute a list": lambda m, i: studio.attribute(m, [[0.0]], 1),
    "attribute missing file": lambda m, i: studio.attribute(m, f"{i}/missing.png", 1),
    "attribute truncated file": lambda m, i: studio.attribute(m, f"{i}/truncated.png", 1),
    "attribute method unknown": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, method="deconvnet"),
    "attribute option unknown": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, stepz=3),
    "attribute ig steps 0": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "integrated_gradients", steps=0),
    "attribute ig steps huge": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "integrated_gradients", steps=10**8),
    "attribute ig steps float": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "integrated_gradients", steps=2.5),
    "attribute baseline nan": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "integrated_gradients",
                                                            baseline=math.nan),
    "attribute baseline nan tensor": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "integrated_gradients",
                                                                   baseline=torch.full((3, 16, 16), math.nan)),
    "attribute baseline unknown": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "integrated_gradients",
                                                                baseline="white"),
    "attribute noise inf": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "smoothgrad", noise=math.inf),
    "attribute samples 0": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "smoothgrad", samples=0),
    "attribute targets mismatch": lambda m, i: studio.attribute(m, _zeros(2, 3, 16, 16), [1, 2, 3]),
    "attribute class out of range": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 7),
    "attribute gradcam layer": lambda m, i: studio.attribute(m, _zeros(1, 3, 16, 16), 1, "gradcam", layer="nope"),
    "explain attention on a cnn": lambda m, i: explain(m, _zeros(1, 3, 16, 16), 1, "attention"),
    "overlay alpha 2": lambda m, i: overlay(_zeros(3, 8, 8), _zeros(8, 8), alpha=2.0),
    "overlay colormap": lambda m, i: overlay(_zeros(3, 8, 8), _zeros(8, 8), colormap="nope"),
    "read image folder": lambda m, i: read_image(f"{i}/folder.png"),
    "read image bomb": lambda m, i: read_image(f"{i}/bomb.png"),
    "read image nan": lambda m, i: read_image(f"{i}/nan.tif"),
    "read stack png volume": lambda m, i: read_stack(f"{i}/grey.png", 1, 3),
    "read stack wrong channels": lambda m, i: read_stack(f"{i}/cube.tif", 2, 3),
    "parse target superscript": lambda m, i: studio.parse_target("conv:²", m),
    "parse target none": lambda m, i: studio.parse_target(None, m),
    "parse targets star with position": lambda m, i: studio.parse_targets("conv:*@999,0", m),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_api_bad_input_is_one_studio_error_and_leaves_no_hook(case, inputs, tiny):
    with pytest.raises(StudioError) as error:
        API_CASES[case](tiny, inputs)
    _one_sentence(str(error.value))
    assert hook_count(tiny.module) == 0
    assert not torch.nn.modules.module._global_forward_hooks


# ------------------------------------------------------------------------------------------------ gallery specs

SPEC = '''title = "bad"

[settings]
steps = 1
size = 16

[[models]]
name = "tiny"
model = "{in}/tiny.py:make"
trust = true
targets = ["conv:0-1"]
'''

SPEC_CASES = {
    "settings typo": ("steps = 1", "stpes = 1"),
    "steps 0": ("steps = 1", "steps = 0"),
    "steps text": ("steps = 1", 'steps = "one"'),
    "steps 1e9": ("steps = 1", "steps = 1000000000"),
    "steps float": ("steps = 1", "steps = 1.5"),
    "size 4": ("size = 16", "size = 4"),
    "size huge": ("size = 16", "size = 100000"),
    "lr 0": ("size = 16", "size = 16\nlr = 0"),
    "lr nan": ("size = 16", "size = 16\nlr = nan"),
    "lr inf": ("size = 16", "size = 16\nlr = inf"),
    "lr negative": ("size = 16", "size = 16\nlr = -0.1"),
    "param unknown": ("size = 16", 'size = 16\nparam = "fourrier"'),
    "transforms wrong type": ("size = 16", "size = 16\ntransforms = 3"),
    "decorrelate text": ("size = 16", 'size = 16\ndecorrelate = "yes"'),
    "seeds negative": ("size = 16", "size = 16\nseeds = [-1]"),
    "seeds past 64 bits": ("size = 16", "size = 16\nseeds = [18446744073709551615]"),
    "seeds text": ("size = 16", 'size = 16\nseeds = "0"'),
    "batch 0": ("size = 16", "size = 16\nbatch = 0"),
    "batch text": ("size = 16", 'size = 16\nbatch = "many"'),
    "no models": ('[[models]]\nname = "tiny"\nmodel = "{in}/tiny.py:make"\ntrust = true\ntargets = ["conv:0-1"]\n', ""),
    "model missing key": ('model = "{in}/tiny.py:make"\n', ""),
    "model unknown": ("{in}/tiny.py:make", "{in}/missing.py:make"),
    "model without trust": ("trust = true\n", ""),
    "trust text": ("trust = true", 'trust = "yes"'),
    "model name twice": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[[models]]\nname = "tiny"\n'
                         'model = "{in}/tiny.py:make"\ntrust = true\ntargets = ["conv:2"]\n'),
    "targets empty": ('targets = ["conv:0-1"]', "targets = []"),
    "targets not a list": ('targets = ["conv:0-1"]', 'targets = "conv:0"'),
    "target channel": ('targets = ["conv:0-1"]', 'targets = ["conv:0-40"]'),
    "target layer": ('targets = ["conv:0-1"]', 'targets = ["cnv:0"]'),
    "target position": ('targets = ["conv:0-1"]', 'targets = ["conv:0@999,999"]'),
    "target table typo": ('targets = ["conv:0-1"]', 'targets = [{ target = "conv:1", stesp = 2 }]'),
    "target table steps 0": ('targets = ["conv:0-1"]', 'targets = [{ target = "conv:1", steps = 0 }]'),
    "target number": ('targets = ["conv:0-1"]', "targets = [3.5]"),
    "input bad": ("trust = true", 'trust = true\ninput = "3x16"'),
    "output unknown key": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[output]\ncolums = 3\n'),
    "output animation": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[output]\nanimation = "avi"\n'),
    "attribution method": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[attribution]\nmethod = "deconvnet"\nphotos = ["{in}/photo.png"]\n'),
    "attribution photo missing": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[attribution]\nphotos = ["missing.png"]\n'),
    "unknown table": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[setting]\nsize = 3\n'),
    "attribution photo truncated": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[attribution]\nphotos = ["{in}/truncated.png"]\n'),
    "output columns 0": ('targets = ["conv:0-1"]\n', 'targets = ["conv:0-1"]\n\n[output]\ncolumns = 0\n'),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_gallery_spec_mistakes_are_one_sentence_and_create_nothing(case, inputs, tmp_path):
    old, new = SPEC_CASES[case]
    text = SPEC.replace("{in}", str(inputs))
    old = old.replace("{in}", str(inputs))
    assert old in text, case
    spec = tmp_path / "spec.toml"
    spec.write_text(text.replace(old, new.replace("{in}", str(inputs)), 1))
    with pytest.raises(StudioError) as error:
        gallery.run(spec, tmp_path / "out", progress=False)
    _one_sentence(str(error.value))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ viewer fields

VIEWER_CASES = {
    "kind unknown": {"layer": "conv", "kind": "neurons"},
    "unit empty": {"layer": "conv", "unit": " "},
    "unit out of range": {"layer": "conv", "unit": 40},
    "unit text": {"layer": "conv", "unit": "twelve"},
    "neuron without position": {"layer": "conv", "kind": "neuron"},
    "neuron out of range": {"layer": "conv", "kind": "neuron", "position": (999, 0)},
    "token on a cnn": {"layer": "conv", "kind": "token"},
    "count past the channels": {"layer": "conv", "unit": 2, "count": 8},
    "layer unknown": {"layer": "blocks.4"},
    "class out of range": {"layer": "logits", "unit": 12},
}
FIELD_CASES = [("count", 0), ("count", 1000), ("every", 0), ("seed", -1), ("seed", 2.5), ("count", "4")]


@pytest.mark.parametrize("case", list(VIEWER_CASES))
def test_viewer_render_fields_are_checked_in_one_sentence(case, tiny):
    with pytest.raises(StudioError) as error:
        RenderRequest(**VIEWER_CASES[case]).targets(tiny)
    _one_sentence(str(error.value))
    assert hook_count(tiny.module) == 0


@pytest.mark.parametrize(("name", "value"), FIELD_CASES)
def test_viewer_own_fields_are_checked_like_the_settings(name, value):
    spec = next(spec for spec in VIEWER_FIELDS if spec.name == name)
    with pytest.raises(StudioError) as error:
        spec.check(value)
    _one_sentence(str(error.value))


def test_the_controls_succeed_so_each_case_fails_for_its_own_reason(inputs, tmp_path, monkeypatch, capsys):
    """The commands the cases change one thing of, as they are: they run, so a case's error is its own."""
    monkeypatch.chdir(tmp_path)
    for argv in (RENDER, ATTRIBUTE, ["render", M, "conv:1", "--steps", "1", "--out", "x.png"],
                 ["attribute", M, "{in}/photo.png", "--method", "integrated_gradients", "--steps", "4"]):
        assert cli.main([arg.replace("{in}", str(inputs)) for arg in argv]) == 0, capsys.readouterr().err
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC.replace("{in}", str(inputs)))
    assert gallery.run(spec, tmp_path / "out", progress=False).rendered
