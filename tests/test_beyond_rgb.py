"""Single-channel, N-channel and volume models: the input spec, parameterisations and transforms in 2D and
3D, and renders and heat maps checked against tiny models trained on synthetic data with a known feature."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import studio
from studio.cli import main
from studio.models import InputNote
from studio.param import decorrelation_from, image, rfft_frequencies
from studio.transforms import TransformSettings, random_affine
from tests.conftest import hook_count
from tests.synthetic import sphere_net, spheres, stripe_net, stripes, train

MONO_2D = studio.InputSpec((32, 32), mean=(0.0,), std=(1.0,), channels=1)
MONO_3D = studio.InputSpec((24, 24, 24), mean=(0.0,), std=(1.0,), channels=1)


@pytest.fixture(scope="module")
def stripe_model() -> studio.StudioModel:
    net = train(stripe_net, lambda g: stripes(64, generator=g), steps=150)
    return studio.load_model(net, device="cpu", input=MONO_2D)


@pytest.fixture(scope="module")
def sphere_model() -> studio.StudioModel:
    net = train(sphere_net, lambda g: spheres(32, generator=g), steps=120)
    return studio.load_model(net, device="cpu", input=MONO_3D)


def test_the_issue_call_for_a_volume_network_works():
    """load_model(module, input=InputSpec(channels=1, size=(32, 32, 32), ...)), render with an int size (a
    cube), attribute a [1, D, H, W] volume with Grad-CAM: maps are [1, D, H, W] at the volume's resolution."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 2))
    model = studio.load_model(net, input=studio.InputSpec(channels=1, size=(32, 32, 32), mean=(0.0,), std=(1.0,)))
    result = studio.render(model, "logits:1", size=32, steps=8)
    assert result.images.shape == (1, 1, 32, 32, 32) and result.images.min() >= 0 and result.images.max() <= 1
    volume = torch.rand(1, 20, 24, 28)
    heat = studio.attribute(model, volume, "logits:1", method="gradcam")
    assert heat.shape == (1, 20, 24, 28) and heat.abs().sum() > 0
    for method in ("saliency", "gradient_x_input", "smoothgrad", "integrated_gradients", "gradcam++"):
        options = {"samples": 2} if method == "smoothgrad" else {"steps": 4} if method == "integrated_gradients" else {}
        assert studio.attribute(model, volume, "logits:1", method, **options).shape == (1, 20, 24, 28), method
    assert hook_count(model.module) == 0


def test_input_spec_is_inferred_from_the_first_convolution_and_said_once():
    net = nn.Sequential(nn.Conv2d(5, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with pytest.warns(InputNote, match="input 5x224x224 inferred from its first convolution"):
        model = studio.load_model(net, device="cpu")
    assert (model.spec.channels, model.spec.size, model.spec.mean) == (5, (224, 224), (0.0,) * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an RGB model, or a given spec, is not worth a note
        studio.load_model(nn.Sequential(nn.Conv2d(3, 2, 3)), device="cpu")
        studio.load_model(net, device="cpu", input=studio.InputSpec((16, 16), channels=5))
    result = studio.render(model, "logits:2", size=24, steps=3)
    assert result.images.shape == (1, 5, 24, 24)
    assert studio.attribute(model, torch.rand(5, 40, 30), 2, "gradcam").shape == (1, 40, 30)


@pytest.mark.parametrize("kwargs, message", [
    ({"size": (4,)}, "must be \\(H, W\\) or \\(D, H, W\\)"),
    ({"channels": 2, "mean": (0.1, 0.2, 0.3)}, "3 values for 2 channels"),
    ({"channels": 1, "std": (0.0,)}, "std must be positive"),
])
def test_bad_input_specs_are_one_sentence(kwargs, message):
    with pytest.raises(studio.StudioError, match=message):
        studio.InputSpec(**kwargs)


def test_a_model_that_rejects_its_input_names_the_input_option():
    net = nn.Sequential(nn.Linear(10, 2))
    with pytest.raises(studio.StudioError, match="cannot run on a 3x224x224 input.*--input 1x32x32x32"):
        _ = studio.load_model(net, device="cpu").layer_shapes


def test_fourier_and_maco_spectra_span_three_frequencies():
    freqs = rfft_frequencies(4, 6, 8)
    assert freqs.shape == (4, 6, 5) and freqs[0, 0, 0] == 0
    assert torch.isclose(freqs[1, 0, 0], torch.tensor(0.25)) and torch.isclose(freqs[0, 0, 4], torch.tensor(0.5))
    for kind in ("fourier", "pixel", "maco"):
        param = image(12, batch=2, kind=kind, channels=1, dims=3, seed=0)
        volume = param()
        assert volume.shape == (2, 1, 12, 12, 12), kind
        if kind != "maco":  # the exact inverse: start from a volume, get it back
            target = torch.rand(2, 1, 12, 12, 12) * 0.8 + 0.1
            param.set_images(target)
            torch.testing.assert_close(param(), target, atol=1e-4, rtol=1e-4)
    with pytest.raises(studio.StudioError, match="2D images only"):
        image(8, kind="cppn", dims=3)


def test_decorrelation_basis_is_the_square_root_of_the_channel_covariance():
    g = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [0.1, 0.2, 0.9, 0.0], [0.0, 0.0, 0.3, 0.7]])
    images = torch.einsum("ij,njhw->nihw", mixing, torch.randn(64, 4, 8, 8, generator=g))
    basis = decorrelation_from(images)
    covariance = torch.cov(images.transpose(0, 1).reshape(4, -1))
    torch.testing.assert_close(basis @ basis.T, covariance, atol=1e-4, rtol=1e-4)
    param = image(8, channels=4, basis=basis, seed=0)
    assert param().shape == (1, 4, 8, 8) and not torch.allclose(param.colour.matrix, torch.eye(4))
    assert torch.equal(image(8, channels=4, seed=0).colour.matrix, torch.eye(4))  # unknown statistics: identity


def test_volume_transforms_rotate_about_every_axis_and_resize():
    volume = torch.zeros(1, 1, 16, 16, 16)
    volume[..., 4:12, 7:9, 7:9] = 1  # a rod along z
    settings = TransformSettings(pad=0, jitter=(), scale=(1.0, 1.0), degrees=90.0)
    # angles: draws 4..6 map to -90..90 degrees about x, y, z; 0.5 is no rotation, 1.0 is +90 degrees
    same = random_affine(volume, (16, 16, 16), settings, torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]]))
    torch.testing.assert_close(same, volume, atol=1e-5, rtol=0)
    about_y = random_affine(volume, (16, 16, 16), settings, torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5, 1.0, 0.5]]))
    extent = (about_y[0, 0] > 0.5).nonzero()
    assert (extent[:, 2].max() - extent[:, 2].min()) >= 6 > (extent[:, 0].max() - extent[:, 0].min())  # now along x
    assert random_affine(volume, (8, 10, 12), settings).shape == (1, 1, 8, 10, 12)


def test_a_one_channel_class_render_shows_its_stripes_far_above_held_out_images(stripe_model):
    x, y = stripes(200, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        held = stripe_model.module(x)
    assert (held.argmax(1) == y).float().mean() > 0.95
    for label in (0, 1):
        result = studio.render(stripe_model, f"logits:{label}", size=32, steps=256, param="pixel", lr=0.1,
                               transforms="none")
        own = held[y == label, label]
        assert result.clean_values[0] > own.max() + 2 * own.std(), (float(result.clean_values[0]), float(own.max()))
        power = torch.fft.fft2(result.images[0, 0] - result.images[0, 0].mean()).abs() ** 2
        fy, fx = torch.meshgrid(torch.fft.fftfreq(32).abs(), torch.fft.fftfreq(32).abs(), indexing="ij")
        across_x, across_y = power[fx > fy].sum(), power[fy > fx].sum()  # vertical stripes vary along x
        assert (across_x > 3 * across_y) if label == 0 else (across_y > 3 * across_x), (float(across_x), float(across_y))


def test_a_volume_render_is_a_compact_bright_blob_and_grad_cam_finds_the_sphere(sphere_model):
    v, labels, masks = spheres(100, generator=torch.Generator().manual_seed(98))
    with torch.no_grad():
        held = sphere_model.module(v)
    assert (held.argmax(1) == labels).float().mean() > 0.95
    result = studio.render(sphere_model, "logits:1", size=24, steps=128)
    volume = result.images[0, 0]
    brightest = volume.flatten().topk(int(0.02 * volume.numel())).indices
    coordinates = torch.stack(torch.unravel_index(brightest, volume.shape), 1).float()
    assert coordinates.std(0).max() < 24 / 12 ** 0.5 / 2  # under half the spread of scattered voxels
    concentration = []
    for index in (labels == 1).nonzero()[:5, 0].tolist():
        heat = studio.attribute(sphere_model, v[index], "logits:1", "gradcam")[0]
        assert heat.shape == (24, 24, 24)
        concentration.append(float(heat[masks[index]].sum() / heat.sum() / masks[index].float().mean()))
    assert min(concentration) > 2, concentration  # the sphere holds at least twice its share of the map


def test_cli_input_option(tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef model():\n    return torch.nn.Sequential(torch.nn.Conv3d(2, 3, 3), "
                       "torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))\n")
    assert main(["layers", f"{factory}:model", "--input", "2x16x16x16", "--mean", "0.5", "--std", "0.25",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "input 2x16x16x16" in out and "volume 14x14x14, 3 channels" in out
    assert main(["layers", f"{factory}:model", "--input", "2x16", "--device", "cpu"]) == 2
    assert "Input size must be (H, W) or (D, H, W)" in capsys.readouterr().err


def test_previews_project_volumes_and_composite_channels():
    from studio.io import preview

    volume = torch.zeros(1, 4, 5, 6)
    volume[0, 2, 1, 3] = 1.0
    flat = preview(volume)
    assert flat.shape == (3, 5, 6) and flat[:, 1, 3].tolist() == [1.0, 1.0, 1.0] and flat.sum() == 3
    channels = torch.zeros(4, 2, 2)
    channels[1, 0, 0] = 1.0
    composite = preview(channels)
    assert composite.shape == (3, 2, 2) and composite[:, 0, 0].max() > 0 and composite[:, 1, 1].max() == 0
    rgb = torch.rand(3, 4, 4)
    assert torch.equal(preview(rgb), rgb)


def test_cli_and_gallery_write_volume_previews_and_tiff_stacks(tmp_path, capsys):
    import imageio.v3 as iio
    import numpy as np

    from studio import gallery

    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef model():\n    return torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3), "
                       "torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))\n")
    spec = [f"{factory}:model", "--input", "1x12x12x12", "--device", "cpu"]
    assert main(["render", *spec[:1], "logits:1", *spec[1:], "--steps", "2", "--size", "12",
                 "--out", str(tmp_path / "r")]) == 0
    assert iio.imread(tmp_path / "r/logits_c1.png").shape == (12, 12, 3)  # the maximum-intensity projection
    assert iio.imread(tmp_path / "r/logits_c1.tif").shape == (1, 12, 12, 12)
    volume = (np.random.default_rng(0).random((12, 12, 12)) * 65535).astype(np.uint16)
    iio.imwrite(tmp_path / "v.tif", volume)
    assert main(["attribute", *spec[:1], str(tmp_path / "v.tif"), *spec[1:], "--method", "gradcam",
                 "--out", str(tmp_path / "m.npy")]) == 0
    assert np.load(tmp_path / "m.npy").shape == (12, 12, 12)
    assert main(["attribute", *spec[:1], str(tmp_path / "v.tif"), *spec[1:], "--out", str(tmp_path / "m.png")]) == 0
    assert iio.imread(tmp_path / "m.png").shape == (12, 12, 3)
    (tmp_path / "g.toml").write_text(f'[settings]\nsteps = 2\nsize = 12\n\n[[models]]\nname = "vol"\n'
                                     f'model = "{factory}:model"\ntrust = true\ninput = "1x12x12x12"\nmean = "0"\nstd = "1"\n'
                                     'targets = ["logits:0-1"]\n')
    gallery.run(tmp_path / "g.toml", tmp_path / "g", progress=False, device="cpu")
    assert iio.imread(tmp_path / "g/vol/logits/c0_s0.png").shape == (12, 12, 3)
    assert iio.imread(tmp_path / "g/vol/logits/c0_s0.tif").shape == (1, 12, 12, 12)
    (tmp_path / "g.toml").write_text((tmp_path / "g.toml").read_text().replace('"1x12x12x12"', '"1x12"'))
    with pytest.raises(studio.StudioError, match=r"g.toml line 9, model 'vol': input size must be"):
        gallery.run(tmp_path / "g.toml", tmp_path / "g2", progress=False, device="cpu")


@pytest.mark.parametrize("name", ["resnet10", "DenseNet121"])
def test_monai_volume_networks_load_render_and_attribute(name):
    """Real 3D architectures from MONAI (random weights): the spec comes from the first convolution, a class
    render raises its logit, Grad-CAM maps the volume at its resolution from the last map the score reaches."""
    nets = pytest.importorskip("monai.networks.nets")
    torch.manual_seed(0)
    net = (nets.resnet10(spatial_dims=3, n_input_channels=1, num_classes=2) if name == "resnet10"
           else nets.DenseNet121(spatial_dims=3, in_channels=1, out_channels=2))
    with pytest.warns(InputNote, match="input 1x32x32x32"):
        model = studio.load_model(net, device="cpu")
    result = studio.render(model, "logits:1", size=24, steps=12, param="pixel", lr=0.1, transforms="none")
    assert result.history[-1, 0] > result.history[0, 0]
    heat = studio.attribute(model, torch.rand(1, 32, 32, 32), 1, "gradcam")
    assert heat.shape == (1, 32, 32, 32) and heat.abs().sum() > 0 and hook_count(model.module) == 0


def test_files_of_the_wrong_kind_are_refused_in_one_sentence(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    from studio.io import read_input

    iio.imwrite(tmp_path / "vol.tif", np.zeros((16, 20, 24), np.uint8))
    iio.imwrite(tmp_path / "rgb.png", np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(studio.StudioError, match="vol.tif.*, no photo; an RGB model takes H x W x 3"):
        read_input(tmp_path / "vol.tif")  # an RGB model: a stack is not silently cropped to 3 'channels'
    with pytest.raises(studio.StudioError, match="rgb.png.*is no TIFF stack"):
        read_input(tmp_path / "rgb.png", 1, 3)
    assert read_input(tmp_path / "vol.tif", 1, 3).shape == (1, 16, 20, 24)


def test_a_factorys_own_input_spec_is_kept_and_volume_rgb_is_not_imagenet(tmp_path):
    factory = tmp_path / "net.py"
    factory.write_text("import torch\nimport studio\n\ndef model():\n    return studio.StudioModel(torch.nn.Sequential("
                       "torch.nn.Conv2d(1, 2, 3)), studio.InputSpec((32, 32), mean=(0.5,), std=(0.2,), channels=1), 'mine')\n")
    loaded = studio.load_model(f"{factory}:model", device="cpu")
    assert loaded.spec == studio.InputSpec((32, 32), mean=(0.5,), std=(0.2,), channels=1)
    volume_rgb = studio.InputSpec((8, 8, 8), channels=3)
    assert volume_rgb.mean == (0.0,) * 3 and not volume_rgb.rgb
    assert torch.equal(image(8, channels=3, dims=3).colour.matrix, torch.eye(3))
    one = decorrelation_from(torch.rand(4, 1, 5, 5))
    assert one.shape == (1, 1) and one.item() > 0
    twins = torch.rand(4, 1, 5, 5).expand(4, 2, 5, 5)
    assert torch.linalg.matrix_rank(decorrelation_from(twins)) == 2  # kept invertible


def test_token_grids_of_volume_transformers_are_three_dimensional():
    from studio.targets import layer_info

    model = studio.StudioModel(nn.Identity(), studio.InputSpec((16, 32, 32), channels=1), "volume-vit")
    model.__dict__["output_shapes"] = {"blocks.0": (1, 1 + 2 * 4 * 4, 48), "": (1, 2)}
    assert layer_info(model, "blocks.0").describe() == "tokens: 1 prefix + 2x4x4 grid (prefix inferred from the token count), 48 channels"
