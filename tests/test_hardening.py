"""Hardening (issue 18, first part): weights that cannot be downloaded, numbers that are not finite, seeds
out of range, and gallery specs that would run code from a file without saying so."""

from __future__ import annotations

import urllib.error

import pytest
import torch

import studio
from studio import gallery
from studio.cli import main
from studio.models import runs_code


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
