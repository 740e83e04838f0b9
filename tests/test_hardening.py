"""Hardening (issue 18): weights that cannot be downloaded, numbers that are not finite, gallery specs that
would run code from a file without saying so, memory checked before allocation, NaN during a run, files cut
short or a full disk in a gallery, and the awkward but valid images (CMYK, 16-bit, float TIFF, grey, RGBA).
The bad-input matrix itself is ``tests/test_bad_inputs.py``."""

from __future__ import annotations

import errno
import json
import urllib.error
import warnings
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import studio
import studio.memory
from studio import gallery
from studio.batching import Batcher
from studio.cli import main
from studio.commands.view import display_problem
from studio.errors import MemoryShortage, StudioNote
from studio.io import read_image
from studio.models import runs_code
from tests.conftest import hook_count


def tiny_model() -> studio.StudioModel:
    """Two convolutions and a linear head on 3x32x32: fast enough to render in every fault test."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                           nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    return studio.load_model(module, device="cpu", input=studio.InputSpec((32, 32)))


def test_weights_that_cannot_be_downloaded_are_one_sentence(monkeypatch, capsys):
    import torchvision

    def offline(*_args, **_kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(torchvision.models, "get_model", offline)  # no test ever downloads: the failure is planted
    assert main(["layers", "torchvision:resnet18", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert "Cannot get the pretrained weights of torchvision:resnet18 (URLError)" in error
    assert "--random-weights" in error and "\n" not in error.strip()


@pytest.mark.parametrize("argument", [["--lr", "nan"], ["--lr", "inf"], ["--lr", "-1"], ["--decay-power", "nan"],
                                      ["--seed", str(2**64)], ["--seed", "-1"], ["--steps", "1000000000"],
                                      ["--size", "100000"]])
def test_bad_numbers_fail_before_any_work(argument, capsys):
    assert main(["render", "blocks.2:1", "--device", "cpu", *argument]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("studio: error: ") and "\n" not in error and "Traceback" not in error


def test_gallery_specs_that_run_code_from_a_file_need_trust(tmp_path, lite0):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef model():\n    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), "
                       "torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[settings]\nsteps = 1\nsize = 16\n\n[[models]]\nmodel = "{factory}:model"\ntargets = ["logits:1"]\n')
    with pytest.raises(studio.StudioError, match="runs code from its file when loaded.*trust = true"):
        gallery.run(spec, tmp_path / "out", progress=False, device="cpu")
    assert not (tmp_path / "out").exists()
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                 torch.nn.Linear(4, 2))
    torch.jit.save(torch.jit.script(module), tmp_path / "scripted.pt")
    torch.save(module, tmp_path / "pickled.pt")
    assert runs_code(f"{factory}:model") and runs_code(str(tmp_path / "pickled.pt"))
    assert not runs_code(str(tmp_path / "scripted.pt")) and not runs_code("efficientnet_lite0")
    spec.write_text(spec.read_text().replace(f"{factory}:model", str(tmp_path / "scripted.pt")))
    assert gallery.run(spec, tmp_path / "out", progress=False, device="cpu").rendered  # TorchScript is safe


# ------------------------------------------------------------------------------------------------ memory

def test_a_render_that_would_not_fit_is_refused_before_allocating_naming_the_batch_that_fits(monkeypatch):
    model = tiny_model()
    per_image = studio.memory.activation_bytes(model, ["2"]) + studio.memory.image_bytes(model, 64, "fourier")
    monkeypatch.setattr(studio.memory, "free_bytes", lambda device: int(per_image * 5.5))
    allocated, real = [], studio.engine.image
    monkeypatch.setattr(studio.engine, "image", lambda *a, **k: allocated.append(1) or real(*a, **k))
    with pytest.raises(MemoryShortage, match=r"^8 images of 64 px need about .* but cpu has .* free; render at "
                                             r"most 5 at once") as error:
        studio.render(model, [f"2:{c}" for c in range(8)], steps=1, size=64)
    assert error.value.fits == 5 and not allocated and hook_count(model.module) == 0
    studio.render(model, [f"2:{c}" for c in range(5)], steps=1, size=64)  # what it named fits
    assert allocated == [1]


def test_a_volume_too_large_for_the_machine_is_refused_naming_the_largest_size(monkeypatch):
    """A 2048^3 volume needs about 400 GB; with 16 GB free it is refused in one sentence, at once."""
    monkeypatch.setattr(studio.memory, "free_bytes", lambda device: 16 * 2**30)
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                           nn.Linear(4, 2))
    model = studio.load_model(module, device="cpu", input=studio.InputSpec((16, 16, 16), channels=1))
    with pytest.raises(MemoryShortage, match=r"^One image of 2048 px needs about \d+\.\d GB but cpu has .* free; "
                                             r"render one image at a time at about \d+ px or less\.$") as error:
        studio.render(model, "0:1", steps=1, size=2048)
    largest = int(str(error.value).rsplit("about ", 1)[1].split()[0])
    assert studio.memory.image_bytes(model, largest, "fourier") < 16 * 2**30
    assert 8 <= largest < 2048
    assert studio.render(model, "0:1", steps=1, size=min(largest, 64)).images.shape[-1] == min(largest, 64)


def test_the_batcher_shrinks_to_what_the_estimate_says_fits():
    calls = []

    def render_batch(part):
        calls.append(len(part))
        if len(part) > 3:
            raise MemoryShortage("too many", 3)
        return len(part)
    batcher = Batcher(8)
    assert [len(part) for part, _ in batcher.run(list(range(8)), render_batch)] == [3, 3, 2]
    assert calls == [8, 3, 3, 2] and batcher.halvings == [(8, 3)]

    def cpu_out_of_memory(part):
        if len(part) > 2:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")
        return len(part)
    assert [len(part) for part, _ in Batcher(4).run(list(range(4)), cpu_out_of_memory)] == [2, 2]


def test_attribution_chunks_shrink_to_fit_memory_and_give_the_same_maps(monkeypatch):
    model = tiny_model()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = studio.attribute(model, images, 1, "integrated_gradients", steps=16, batch_size=16)
    per_image = studio.memory.activation_bytes(model, [""])
    monkeypatch.setattr(studio.memory, "free_bytes", lambda device: int(per_image * 3.5))
    chunks = []
    real = studio.attribution.gradients.input_gradients
    monkeypatch.setattr(studio.attribution.gradients, "input_gradients",
                        lambda m, x, t, batch_size: chunks.append(batch_size) or real(m, x, t, batch_size))
    tight = studio.attribute(model, images, 1, "integrated_gradients", steps=16, batch_size=16)
    assert set(chunks) == {3}
    torch.testing.assert_close(tight, reference)
    monkeypatch.setattr(studio.memory, "free_bytes", lambda device: int(per_image * 0.5))
    with pytest.raises(MemoryShortage, match="One image needs .* of activations"):
        studio.attribute(model, images, 1, "saliency")


# ------------------------------------------------------------------------------------------------ NaN during a run

class TurnsNaN(nn.Module):
    """Its activations become NaN from the ``at``-th optimisation step on (forward passes with gradients; the
    shape probes run without): a model that breaks mid-run."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.conv, self.at, self.steps = nn.Conv2d(3, 4, 3), at, 0

    def forward(self, x):
        self.steps += torch.is_grad_enabled()
        return self.conv(x * float("nan") if self.steps >= self.at else x)


def test_nan_during_a_run_stops_it_naming_the_step():
    model = studio.load_model(TurnsNaN(at=5), device="cpu", input=studio.InputSpec((16, 16)))
    with pytest.raises(studio.StudioError, match=r"^The objective became NaN or infinite at step 5; lower the "
                                                 r"learning rate"):
        studio.render(model, "conv:1", steps=100, size=16)  # checked every 3 steps: the window 4-6 names 5
    assert hook_count(model.module) == 0


# ------------------------------------------------------------------------------------------------ gallery faults

SPEC = '''[settings]
steps = 2
size = 16
batch = 1

[[models]]
name = "tiny"
model = "tiny"
targets = ["2:0-3"]
'''


def _gallery(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return spec


def test_a_truncated_png_in_the_output_is_rendered_again(tmp_path):
    model, spec, out = tiny_model(), _gallery(tmp_path), tmp_path / "out"
    first = gallery.run(spec, out, models={"tiny": model}, progress=False)
    png = out / "tiny/2/c1_s0.png"
    whole = png.read_bytes()
    png.write_bytes(whole[: len(whole) // 2])  # cut short, its sidecar intact
    again = gallery.run(spec, out, models={"tiny": model}, progress=False)
    assert len(first.rendered) == 4 and again.rendered == ["tiny/2/c1_s0"]
    assert png.read_bytes() == whole  # the same image again, and the sheets could be built
    assert all(sheet.is_file() for sheet in again.sheets)


def test_a_full_disk_fails_in_one_sentence_and_loses_no_finished_unit(tmp_path, monkeypatch, capsys):
    model, spec, out = tiny_model(), _gallery(tmp_path), tmp_path / "out"
    import studio.gallery.output as output

    real, written = output.iio.imwrite, []

    def disk_fills(path, image, **kwargs):
        if len(written) == 2 and str(kwargs.get("extension")) == ".png":
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real(path, image, **kwargs)
    monkeypatch.setattr(output.iio, "imwrite", disk_fills)
    with pytest.raises(studio.StudioError, match=r"^Cannot write .*c2_s0\.png': the disk is full; nothing there was "
                                                 r"changed, so fix that and run again\.$"):
        gallery.run(spec, out, models={"tiny": model}, progress=False)
    assert sorted(p.name for p in out.rglob("*.json")) == ["c0_s0.json", "c1_s0.json"]
    assert not [p for p in out.rglob(".*") if p.name != ".lock"]  # no temporary left behind
    monkeypatch.setattr(output.iio, "imwrite", real)
    rerun = gallery.run(spec, out, models={"tiny": model}, progress=False)
    assert rerun.skipped == ["tiny/2/c0_s0", "tiny/2/c1_s0"] and len(rerun.rendered) == 2


# ------------------------------------------------------------------------------------------------ awkward images

def test_awkward_but_valid_images_are_read_as_what_they_show(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    assert torch.allclose(read_image(tmp_path / "cmyk.jpg")[:, 4, 4], torch.tensor([1.0, 0, 0]), atol=0.02)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    assert torch.equal(read_image(tmp_path / "cmyk.tif")[:, 4, 4], torch.tensor([1.0, 0, 0]))
    grey16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    iio.imwrite(tmp_path / "deep.png", grey16)
    assert torch.allclose(read_image(tmp_path / "deep.png")[1], torch.from_numpy(grey16 / 65535.0).float())
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 7, np.uint8)], axis=-1)
    iio.imwrite(tmp_path / "rgba.png", rgba)
    assert read_image(tmp_path / "rgba.png").shape == (3, 8, 8) and read_image(tmp_path / "rgba.png")[0].min() == 1
    iio.imwrite(tmp_path / "grey.png", rgb[..., 0])
    assert read_image(tmp_path / "grey.png").shape == (3, 8, 8)
    iio.imwrite(tmp_path / "float255.tif", rgb.astype(np.float32) * 0.5)
    with pytest.warns(StudioNote, match="float32 values in \\[0, 127.5\\]; read them as 0-255"):
        assert read_image(tmp_path / "float255.tif").max().item() == pytest.approx(0.5)
    iio.imwrite(tmp_path / "unit.tif", rgb.astype(np.float32) / 255)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # floats in [0, 1] are read as they are, without a note
        assert read_image(tmp_path / "unit.tif").max().item() == 1.0


# ------------------------------------------------------------------------------------------------ outputs

def test_a_unit_named_twice_keeps_both_images_and_a_jpeg_sheet_is_one_file(tmp_path, monkeypatch, capsys):
    factory = tmp_path / "tiny.py"
    factory.write_text("import torch\nfrom torch import nn\n\ndef make():\n    torch.manual_seed(0)\n"
                       "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    monkeypatch.chdir(tmp_path)
    assert main(["render", f"{factory}:make", "0:1", "0:1", "--steps", "2", "--size", "16", "--out", "r",
                 "--input", "3x16x16"]) == 0
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert files == ["0_c1_seed0.png", "0_c1_seed1.png"]
    assert (tmp_path / "r/0_c1_seed0.png").read_bytes() != (tmp_path / "r/0_c1_seed1.png").read_bytes()
    assert main(["render", f"{factory}:make", "0:0-1", "--steps", "1", "--size", "16", "--sheet",
                 "--out", "sheet.jpg", "--input", "3x16x16"]) == 0
    assert (tmp_path / "sheet.jpg").is_file() and iio.immeta(tmp_path / "sheet.jpg").get("jfif") is not None


def test_studio_view_knows_when_there_is_no_display():
    assert display_problem({}, "linux") == "no display is set (DISPLAY is empty)"
    assert display_problem({"DISPLAY": ":4242"}, "linux") == "no X server answers on DISPLAY=:4242"
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({"DISPLAY": "remote:10.0"}, "linux") is None  # over ssh: cannot be probed cheaply
    assert display_problem({}, "darwin") is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None


def test_a_truncated_attribution_overlay_is_made_again(tmp_path):
    model, out = tiny_model(), tmp_path / "out"
    iio.imwrite(tmp_path / "photo.png", (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC + '\n[attribution]\nphotos = ["photo.png"]\nmethod = "saliency"\n')
    first = gallery.run(spec, out, models={"tiny": model}, progress=False)
    overlay = next(out.rglob("*saliency*.png"))
    whole = overlay.read_bytes()
    overlay.write_bytes(whole[:100])
    again = gallery.run(spec, out, models={"tiny": model}, progress=False)
    assert len(first.attributed) == 4 and len(again.attributed) == 1 and again.rendered == []
    assert overlay.read_bytes() == whole
