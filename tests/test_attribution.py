"""Attribution heat maps: analytic identities, completeness, localisation, sanity checks, captum, hygiene, CLI.

Small hand-built models carry the exact identities; the embedded EfficientNet-Lite0 (real ImageNet weights)
carries the checks that need a trained network. Everything runs on the CPU in well under a minute.
"""

from __future__ import annotations

import copy
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import nn

import studio
from studio.attribution import attribute, default_cam_layer, explain
from studio.attribution.faithfulness import QUICK_STEPS, auc_summary
from studio.cli import main
from studio.errors import StudioError
from studio.hooks import forward_to
from studio.io import write_image
from studio.models import InputSpec, StudioModel, resize_to_input

from tests.conftest import hook_count

CAT, ESPRESSO = 285, 967


# ------------------------------------------------------------------------------------------ hand-built models

def linear_model() -> tuple[StudioModel, torch.Tensor]:
    """f(x) = W · normalise(x) on 3x8x8 images, with a non-trivial mean/std so the chain rule shows."""
    torch.manual_seed(0)
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    spec = InputSpec((8, 8), (0.5, 0.4, 0.3), (0.2, 0.25, 0.5))
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    weights_in_image_space = module[1].weight.detach().view(4, 3, 8, 8) / std  # d f / d x, x in [0, 1]
    return StudioModel(module.eval(), spec, "linear"), weights_in_image_space


def cam_model() -> StudioModel:
    """conv (stride 2) -> ReLU -> global average pool -> linear: the architecture CAM was defined on."""
    torch.manual_seed(1)
    module = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                           nn.Flatten(), nn.Linear(6, 5))
    return StudioModel(module.eval(), InputSpec((16, 16), (0.5,) * 3, (0.5,) * 3), "cam")


class InPlaceNet(nn.Module):
    """conv -> ReLU(inplace) -> conv2 -> functional in-place ReLU and ``+=`` -> pool -> linear."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        skip = self.relu(self.conv1(x))
        out = self.conv2(skip)
        if self.inplace:
            out += skip
            out = F.relu(out, inplace=True)
        else:
            out = F.relu(out + skip)
        return self.fc(out.mean((2, 3)))


# ----------------------------------------------------------------------------------------------- analytic

def test_linear_model_gradient_is_the_weights_and_ig_is_w_times_difference():
    model, w = linear_model()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 8, 8)
    c = 2
    saliency = explain(model, x, c, "saliency")
    assert torch.allclose(saliency.per_channel, w[c].abs().expand_as(x), atol=1e-6)
    assert torch.allclose(saliency.maps, w[c].abs().amax(0).expand(2, 8, 8), atol=1e-6)
    assert torch.allclose(attribute(model, x, c, "gradient_x_input"), (w[c] * x).sum(1), atol=1e-6)
    # SmoothGrad of a linear model is its gradient whatever the noise.
    assert torch.allclose(explain(model, x, c, "smoothgrad", samples=3).per_channel, w[c].abs().expand_as(x), atol=1e-6)

    given = torch.rand(3, 8, 8)
    for baseline, start in (("black", torch.zeros_like(x)), (0.5, torch.full_like(x, 0.5)), (given, given.expand_as(x))):
        ig = explain(model, x, c, "integrated_gradients", baseline=baseline, steps=4)
        assert torch.allclose(ig.per_channel, w[c] * (x - start), atol=1e-5)
        assert torch.allclose(ig.maps, (w[c] * (x - start)).sum(1), atol=1e-5)
        assert ig.completeness_error.max() < 1e-4
    blurred = explain(model, x, c, "integrated_gradients", baseline="blurred", steps=4)
    assert blurred.completeness_error.max() < 1e-4 and not torch.allclose(blurred.maps, ig.maps)


def test_gradcam_on_conv_gap_linear_equals_cam_upsampled():
    model = cam_model()
    torch.manual_seed(3)
    images = torch.rand(2, 3, 24, 20)  # not the model's 16x16: resized in, maps resized back
    assert default_cam_layer(model) == "1"  # the ReLU'd 8x8 feature map, last before pooling
    features = torch.relu(model.module[0](model.spec.normalise(resize_to_input(images, model.spec))))
    weights = model.module[4].weight.detach()
    for c in (0, 3):
        cam = torch.einsum("k,bkhw->bhw", weights[c], features).clamp_min(0) / features[0, 0].numel()
        expected = F.interpolate(cam[:, None], size=(24, 20), mode="bilinear", align_corners=False)[:, 0]
        got = attribute(model, images, c, "gradcam")
        assert got.shape == (2, 24, 20)
        assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(attribute(model, images, 0, "gradcam"), attribute(model, images, 3, "gradcam"))


def test_gradcam_plus_plus_closed_form_on_gap_model():
    """With score = sum_k w_k mean(A_k), dS/dA_k = w_k / HW =: g_k everywhere, so eq. 19 of Grad-CAM++ gives
    alpha_k = 1 / (2 + g_k sum(A_k)) and channel weights HW * relu(g_k) * alpha_k."""
    model = cam_model()
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    features = torch.relu(model.module[0](model.spec.normalise(images)))[0]
    hw = features[0].numel()
    g = model.module[4].weight.detach()[1] / hw
    weights = hw * g.clamp_min(0) / (2 + g * features.sum((1, 2)))
    cam = torch.einsum("k,khw->hw", weights, features).clamp_min(0)
    expected = F.interpolate(cam[None, None], size=(16, 16), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(attribute(model, images, 1, "gradcam++"), expected, atol=1e-5)


# ----------------------------------------------------------------------------------- the embedded model

def test_integrated_gradients_completeness_on_embedded_model(lite0, photos):
    """Sum of the map = f(x) - f(black) within 2 % at the default settings, checked against the model itself."""
    image = resize_to_input(photos["chelsea"][None], lite0.spec)  # at the model's size: no resize of the map
    result = explain(lite0, image, CAT, "integrated_gradients")
    with torch.no_grad():
        change = (lite0(image)[0, CAT] - lite0(torch.zeros_like(image))[0, CAT]).item()
    error = abs(result.maps.sum().item() - change) / abs(change)
    print(f"IG completeness: sum {result.maps.sum().item():.4f} vs f(x)-f(x') {change:.4f}: {100 * error:.2f} % "
          f"at the default {studio.attribution.DEFAULT_STEPS} steps")
    assert error < 0.02
    assert result.completeness_error.item() == pytest.approx(error, abs=1e-4)


def test_gradcam_mass_falls_on_the_espresso_cup(lite0, photos):
    """skimage's coffee: one espresso cup on a saucer on a wooden table, predicted 'espresso'. The class is
    the drink in its cup, so the cup (rim, crema and body: rows 15-270, columns 170-415 of the 400x600
    photo, 26 % of its area) is the object; saucer, spoon and table are context."""
    image = photos["coffee"]
    box = (slice(15, 270), slice(170, 415))
    area = 255 * 245 / (400 * 600)
    for method in ("gradcam", "gradcam++"):
        heat = attribute(lite0, image, None, method)[0]
        assert heat.shape == image.shape[1:]
        inside = (heat[box].sum() / heat.sum()).item()
        print(f"{method}: {100 * inside:.1f} % of the mass in the cup box ({100 * area:.0f} % of the area)")
        assert inside > 0.5 and inside > 2 * area


def _randomise_top(model: StudioModel) -> StudioModel:
    """Adebayo et al.'s cascading randomisation, on a copy: re-initialise logits down to blocks.5."""
    twin = copy.deepcopy(model)
    torch.manual_seed(0)
    for name in ("classifier", "bn2", "conv_head", "blocks.6", "blocks.5"):
        for module in twin.module.get_submodule(name).modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return twin


def test_model_randomisation_changes_the_maps(lite0, photos):
    """Re-initialising the top layers must change the explanation (Adebayo et al. 2018): the Spearman rank
    correlation with the trained model's map falls below 0.5 (measured: saliency 0.28, IG -0.03, Grad-CAM
    0.40). A method that only redraws the image's structure stays high, which is the failure the check
    catches: Grad-CAM++ scores 0.91 here (its closed-form weights ~ 1/mean(A_k) for every channel with a
    positive gradient, so only the sign of the class weights matters). Control: 1/255 noise on the photo
    leaves Grad-CAM at 0.999 (IG 0.79, SmoothGrad 0.89; raw saliency is noisy by nature, 0.54)."""
    state = {k: v.clone() for k, v in lite0.module.state_dict().items()}
    twin = _randomise_top(lite0)
    image = resize_to_input(photos["chelsea"][None], lite0.spec)
    for method, options in (("saliency", {}), ("integrated_gradients", {"rule": "gausslegendre", "steps": 16}),
                            ("gradcam", {})):
        trained = attribute(lite0, image, CAT, method, **options)[0].flatten().numpy()
        randomised = attribute(twin, image, CAT, method, **options)[0].flatten().numpy()
        rho = spearmanr(trained, randomised).statistic
        rho = 0.0 if np.isnan(rho) else rho  # a constant map (all-zero Grad-CAM) has no rank correlation
        print(f"{method}: Spearman(trained, randomised) = {rho:.3f}")
        assert rho < 0.5
    noisy = (image + torch.randn(image.shape, generator=torch.Generator().manual_seed(0)) / 255).clamp(0, 1)
    control = spearmanr(attribute(lite0, image, CAT, "gradcam")[0].flatten().numpy(),
                        attribute(lite0, noisy, CAT, "gradcam")[0].flatten().numpy()).statistic
    assert control > 0.9
    assert all(torch.equal(v, state[k]) for k, v in lite0.module.state_dict().items())


def test_agrees_with_captum(lite0, photos):
    captum_attr = pytest.importorskip("captum.attr")
    photo = photos["chelsea"]
    image = resize_to_input(photo[None], lite0.spec)

    def forward(x):
        return lite0.module(lite0.spec.normalise(x))

    ours = explain(lite0, image, CAT, "saliency")
    theirs = captum_attr.Saliency(forward).attribute(image.clone(), target=CAT, abs=True)
    assert torch.allclose(ours.per_channel, theirs, atol=1e-6, rtol=1e-4)

    ours = explain(lite0, image, CAT, "integrated_gradients", rule="gausslegendre", steps=16)
    theirs, delta = captum_attr.IntegratedGradients(forward).attribute(
        image.clone(), baselines=0.0, target=CAT, n_steps=16, method="gausslegendre", internal_batch_size=16,
        return_convergence_delta=True)
    scale = theirs.abs().max()
    assert torch.allclose(ours.per_channel, theirs, atol=1e-4 * float(scale))
    change = ours.scores - ours.baseline_scores
    assert ours.completeness_error.item() == pytest.approx(abs(delta.item()) / abs(change.item()), rel=1e-2, abs=1e-4)

    ours = attribute(lite0, photo, CAT, "gradcam", layer="bn2")
    layer_cam = captum_attr.LayerGradCam(forward, lite0.module.bn2).attribute(image.clone(), target=CAT,
                                                                             relu_attributions=True)
    theirs = captum_attr.LayerAttribution.interpolate(layer_cam, tuple(photo.shape[1:]), "bilinear")[:, 0].detach()
    assert torch.allclose(ours, theirs, atol=1e-5 * float(theirs.abs().max()))


def test_unit_target_is_the_units_activation(lite0, photos):
    """"Where does channel blocks.5:17 fire": Grad-CAM at the unit's own layer is its ReLU'd activation map."""
    image = resize_to_input(photos["chelsea"][None], lite0.spec)
    result = explain(lite0, image, "blocks.5:17", "gradcam")
    activation = forward_to(lite0.module, lite0.spec.normalise(image), ["blocks.5"])["blocks.5"][0, 17]
    expected = F.interpolate((activation.clamp_min(0) / activation.numel())[None, None], size=(224, 224),
                             mode="bilinear", align_corners=False)[0]
    assert result.layer == "blocks.5" and [t.name for t in result.targets] == ["blocks.5:17"]
    assert result.scores.item() == pytest.approx(activation.mean().item(), abs=1e-5)
    assert torch.allclose(result.maps, expected, atol=1e-6)
    neuron = explain(lite0, image, "blocks.5:17@3,4", "saliency")
    assert neuron.scores.item() == pytest.approx(activation[3, 4].item(), abs=1e-5)


def test_batch_equals_one_image_at_a_time(lite0, photos):
    images = torch.stack([F.interpolate(photos[n][None], size=(160, 200), mode="bilinear")[0]
                          for n in ("chelsea", "coffee")])
    targets = [None, "blocks.5:17"]
    for method, options in (("saliency", {}), ("gradcam++", {}), ("smoothgrad", {"samples": 3}),
                            ("integrated_gradients", {"steps": 4, "rule": "riemann_middle"})):
        batch = attribute(lite0, images, targets, method, **options)
        single = torch.cat([attribute(lite0, images[i], targets[i], method, **options) for i in range(2)])
        assert batch.shape == (2, 160, 200) and batch.dtype == torch.float32
        assert torch.allclose(batch, single, atol=1e-5 * float(single.abs().max())), method


def test_in_place_relu_does_not_corrupt_results():
    torch.manual_seed(5)
    inplace, plain = InPlaceNet(True).eval(), InPlaceNet(False).eval()
    plain.load_state_dict(inplace.state_dict())
    models = [StudioModel(m, InputSpec((12, 12)), "net") for m in (inplace, plain)]
    images = torch.rand(2, 3, 12, 12)
    for method, options in (("gradcam", {"layer": "conv2"}), ("gradcam++", {"layer": "conv2"}), ("saliency", {}),
                            ("integrated_gradients", {"steps": 8})):
        a, b = (attribute(m, images, 1, method, **options) for m in models)
        assert torch.allclose(a, b, atol=1e-6), method
    # Why the clone matters: without it, the captured conv2 output is overwritten by the later in-place ReLU.
    x = models[0].spec.normalise(images)
    assert forward_to(inplace, x, ["conv2", ""])["conv2"].min() >= 0
    assert forward_to(inplace, x, ["conv2", ""], clone=True)["conv2"].min() < 0


# ---------------------------------------------------------------------------------------- errors, hygiene

def _flags(module: nn.Module):
    return [m.training for m in module.modules()], [p.requires_grad for p in module.parameters()]


def _one_sentence(error: Exception) -> bool:
    text = str(error)
    return "\n" not in text and text[-1] in ".?" and len(text) < 300


def test_bad_inputs_are_one_sentence_errors(lite0, photos, tmp_path):
    bad_file = tmp_path / "broken.png"
    bad_file.write_bytes(b"not an image")
    image = photos["chelsea"]
    cases = [
        lambda: attribute(lite0, str(bad_file)),
        lambda: attribute(lite0, str(tmp_path / "missing.jpg")),
        lambda: attribute(lite0, image, None, "gradcam", layer="blocks.99"),
        lambda: attribute(lite0, image, 1000),
        lambda: attribute(lite0, image, -1),
        lambda: attribute(lite0, image, "logits:1000"),
        lambda: attribute(lite0, image, "Egyptian kat"),
        lambda: attribute(lite0, image, "blocks.5:999"),
        lambda: attribute(lite0, image, None, "deconvnet"),
        lambda: attribute(lite0, image, [1, 2]),
        lambda: attribute(lite0, (image * 255).byte()),
        lambda: attribute(lite0, image, None, "gradcam", layer="global_pool"),
        lambda: attribute(lite0, image, None, "integrated_gradients", steps=0),
        lambda: attribute(lite0, image, None, "integrated_gradients", stpes=16),
        lambda: attribute(lite0, image, None, "gradcam", samples=4),  # a SmoothGrad option
        lambda: attribute(lite0, image, None, "saliency", layer="blocks.5"),  # Grad-CAM's layer
        lambda: attribute(lite0, image, None, "gradient"),  # no silent alias of the absolute gradient
        lambda: attribute(lite0, image, None, "integrated_gradients", baseline="grey"),
        # Fails after a hooked forward pass: the unit in blocks.2 does not depend on the later bn2.
        lambda: attribute(lite0, image, "blocks.2:3", "gradcam", layer="bn2"),
    ]
    before = _flags(lite0.module)
    for case in cases:
        with pytest.raises(StudioError) as info:
            case()
        assert _one_sentence(info.value), str(info.value)
        assert hook_count(lite0.module) == 0
        assert _flags(lite0.module) == before


def test_hooks_removed_and_flags_restored_on_every_exit_path():
    torch.manual_seed(6)
    model = StudioModel(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten(), nn.Linear(4, 2)), InputSpec((10, 10)), "small")
    model.module.train()
    model.module[5].weight.requires_grad_(False)
    before = _flags(model.module)
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    images = torch.rand(2, 3, 10, 10)

    first = attribute(model, images, 1, "gradcam")
    assert torch.equal(first, attribute(model, images, 1, "gradcam"))  # eval mode inside: dropout is off
    assert _flags(model.module) == before and hook_count(model.module) == 0

    class Interrupt(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt
    model.module[2] = Interrupt()  # runs after the hooked conv, before the output
    before = _flags(model.module)
    for method, options in (("gradcam", {"layer": "0"}), ("saliency", {})):
        with pytest.raises(KeyboardInterrupt):
            attribute(model, images, 1, method, **options)
        assert hook_count(model.module) == 0 and _flags(model.module) == before
    assert all(torch.equal(v, state[k]) for k, v in model.module.state_dict().items())


# ----------------------------------------------------------------------------------------------------- CLI

def test_cli_writes_npy_maps_and_png_overlays(lite0, photos, tmp_path, capsys):
    photo = tmp_path / "coffee.png"
    write_image(photo, photos["coffee"])
    small = tmp_path / "chelsea.png"
    write_image(small, photos["chelsea"])

    assert main(["attribute", "efficientnet_lite0", str(photo), "--device", "cpu", "--out", str(tmp_path / "m.npy")]) == 0
    printed = capsys.readouterr().out
    assert "1. espresso (967)" in printed and "5. " in printed
    heat = np.load(tmp_path / "m.npy")
    assert heat.shape == (400, 600) and heat.dtype == np.float32 and heat.max() > 0
    scored = studio.deletion_insertion(lite0, photos["coffee"], torch.from_numpy(heat), steps=QUICK_STEPS)
    assert auc_summary(scored.deletion_auc.item(), scored.insertion_auc.item()) in printed  # beside every map

    assert main(["attribute", "efficientnet_lite0", str(photo), "--device", "cpu", "--method", "saliency",
                 "--out", str(tmp_path / "o.png"), "--no-faithfulness"]) == 0
    assert "deletion AUC" not in capsys.readouterr().out
    overlay = studio.read_image(tmp_path / "o.png")
    assert overlay.shape == (3, 400, 600) and not torch.allclose(overlay, photos["coffee"], atol=0.05)

    assert main(["attribute", "efficientnet_lite0", str(photo), str(photo), str(small), "--device", "cpu",
                 "--target", "blocks.5:17", "--out", str(tmp_path / "several.npy"), "--no-faithfulness"]) == 0
    assert [np.load(tmp_path / f"several-{i}.npy").shape for i in range(3)] == [(400, 600), (400, 600), (300, 451)]
    assert main(["attribute", "efficientnet_lite0", str(photo), str(photo), "--device", "cpu",
                 "--out", str(tmp_path / "same.npy"), "--no-faithfulness"]) == 0
    assert np.load(tmp_path / "same.npy").shape == (2, 400, 600)
    assert main(["attribute", "efficientnet_lite0", str(photo), "--device", "cpu", "--out", str(tmp_path / "UP.NPY"),
                 "--no-faithfulness"]) == 0
    assert np.load(tmp_path / "UP.NPY").shape == (400, 600)  # an upper-case suffix still holds the data
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporary files

    assert main(["attribute", "efficientnet_lite0", str(tmp_path / "nope.png"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_gradcam_layer_after_a_unit_target_is_an_error_even_in_a_mixed_batch(lite0, photos):
    from studio.models import resize_to_input

    batch = torch.cat([resize_to_input(photos[name][None], lite0.spec) for name in ("chelsea", "coffee")])
    with pytest.raises(StudioError, match="blocks.2:1 is computed before Grad-CAM layer 'blocks.5'"):
        studio.attribute(lite0, batch, ["blocks.2:1", "logits:285"], method="gradcam", layer="blocks.5")
    assert hook_count(lite0.module) == 0


def test_each_method_takes_exactly_the_options_of_its_signature(lite0, photos):
    """Options are each method's own keyword arguments; the CLI offers each with that method's default."""
    from studio.attribution import METHOD_FUNCTIONS, method_options
    from studio.cli import build_parser

    assert method_options("ig") == {"steps": studio.attribution.DEFAULT_STEPS, "rule": "gausslegendre",
                                    "baseline": "black", "blur_sigma": None, "batch_size": 16}
    assert set(method_options("gradcam")) == {"layer", "batch_size"}
    for method, function in METHOD_FUNCTIONS.items():
        signature = inspect.signature(function).parameters.values()
        assert not any(p.kind == p.VAR_KEYWORD for p in signature), f"{method} swallows options"
    with pytest.raises(StudioError, match="'samples'.*do not apply to gradcam: it takes layer, batch_size"):
        attribute(lite0, photos["chelsea"], None, "gradcam", samples=4)
    help_text = build_parser()._subparsers._group_actions[0].choices["attribute"].format_help()
    assert "--samples" in help_text and "--blur-sigma" in help_text and "default 256" in help_text
    assert main(["attribute", "efficientnet_lite0", "x.png", "--method", "gradcam", "--samples", "3"]) == 2


def test_cli_baseline_names_and_model_typos(photos, tmp_path, capsys):
    """--baseline takes a name, a grey level or an image; a first argument that is neither a model, a target
    nor a file hints that it may be a model named without its source."""
    photo = tmp_path / "cat.png"
    write_image(photo, F.interpolate(photos["chelsea"][None], size=(64, 64), mode="bilinear")[0])
    assert main(["attribute", str(photo), "--method", "integrated_gradients", "--steps", "2", "--baseline", "blurred",
                 "--device", "cpu"]) == 0
    assert main(["attribute", "resnet50", str(photo), "--device", "cpu"]) == 2
    assert "if 'resnet50' is a model, name it torchvision:resnet50" in capsys.readouterr().err
    assert main(["render", "resnet50", "blocks.3:1", "--device", "cpu", "--steps", "1"]) == 2
    assert "if 'resnet50' is a model, name it torchvision:resnet50" in capsys.readouterr().err


def test_every_method_option_has_cli_help_and_bad_option_values_are_sentences(lite0, photos):
    from studio.commands.attribute import OPTION_HELP, option_types

    assert set(OPTION_HELP) == set(option_types())
    image = photos["chelsea"]
    for method, options in (("smoothgrad", {"samples": 2, "seed": "a"}),
                            ("integrated_gradients", {"steps": 2, "blur_sigma": -1.0, "baseline": "blurred"}),
                            ("integrated_gradients", {"steps": 2, "baseline": (image * 255).byte()})):
        with pytest.raises(StudioError) as info:
            attribute(lite0, image, None, method, **options)
        assert _one_sentence(info.value), str(info.value)
    with pytest.raises(StudioError, match="floats"):
        studio.attribution.top_classes(lite0, (image * 255).byte())
