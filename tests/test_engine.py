"""The render loop: real activation maximisation on the embedded model, determinism, hooks, snapshots, CLI."""

import pytest
import torch

import studio
from studio import objectives as obj
from studio.models import resize_to_input
from studio.hooks import forward_to
from tests.conftest import hook_count

CHANNELS = [0, 1, 2, 3, 7]


@pytest.fixture(scope="module")
def natural_max(lite0, photos):
    """The largest mean activation each blocks.4 channel reaches on scikit-image's RGB photos."""
    batch = torch.stack([resize_to_input(p[None], lite0.spec)[0] for p in photos.values()])
    with torch.no_grad():
        acts = forward_to(lite0.module, lite0.spec.normalise(batch), ["blocks.4"])["blocks.4"]
    return acts.flatten(2).mean(2).max(0).values


@pytest.fixture(scope="module")
def channel_render(lite0):
    return studio.render(lite0, [f"blocks.4:{c}" for c in CHANNELS], steps=96, size=96, seed=0)


def test_rendered_channels_far_exceed_natural_images(lite0, channel_render, natural_max):
    result = channel_render
    # Re-measure independently of the engine: clean forward of the final images.
    with torch.no_grad():
        acts = forward_to(lite0.module, lite0.spec.normalise(resize_to_input(result.images, lite0.spec)), ["blocks.4"])
    clean = acts["blocks.4"][torch.arange(len(CHANNELS)), CHANNELS].flatten(1).mean(1)
    torch.testing.assert_close(clean, result.clean_values, rtol=1e-4, atol=1e-4)
    ratios = clean / natural_max[CHANNELS]
    print("activation ratio to best natural image:", [round(r, 1) for r in ratios.tolist()])
    assert (natural_max[CHANNELS] > 0).all()
    assert (ratios >= 3).all(), ratios


def test_result_carries_history_settings_and_images(channel_render):
    result = channel_render
    assert result.images.shape == (len(CHANNELS), 3, 96, 96)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert result.history.shape == (96, len(CHANNELS))
    assert (result.history[-8:].mean(0) > result.history[:8].mean(0) + 1).all()
    assert result.settings["steps"] == 96 and result.settings["targets"][0] == "blocks.4:0"
    assert len(result.uint8()) == len(CHANNELS)


def test_class_render_is_classified_as_that_class(lite0):
    result = studio.render(lite0, 'logits:"Egyptian cat"', steps=48, size=96, seed=1)
    with torch.no_grad():
        probability = lite0(result.images).softmax(-1)[0, 285].item()
    print("P(Egyptian cat) =", probability)
    assert probability >= 0.9


def test_same_seed_same_image_other_seed_other_image(lite0):
    run = lambda seed: studio.render(lite0, "blocks.2:5", steps=4, size=32, seed=seed).images
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_an_image_depends_on_its_seed_not_its_batch_mates(lite0):
    together = studio.render(lite0, ["blocks.2:3", "blocks.2:5", "blocks.2:9"], steps=6, size=32, seed=[4, 9, 1])
    alone = studio.render(lite0, ["blocks.2:5"], steps=6, size=32, seed=[9])
    torch.testing.assert_close(alone.images[0], together.images[1], atol=1e-4, rtol=0)
    assert together.settings["seeds"] == [4, 9, 1]
    assert studio.render(lite0, ["blocks.2:3", "blocks.2:5"], steps=1, size=32, seed=7).settings["seeds"] == [7, 8]
    with pytest.raises(studio.StudioError, match="one seed per image"):
        studio.render(lite0, ["blocks.2:3", "blocks.2:5"], steps=1, seed=[1])


def test_objective_algebra_and_snapshots_stream(lite0):
    objective = obj.channel("blocks.3", 4) - 0.05 * obj.total_variation() + 0.1 * obj.diversity("blocks.3")
    snapshots = list(studio.optimize(lite0, objective, batch=2, steps=6, size=32, snapshot_every=2))
    assert [s.step for s in snapshots] == [2, 4, 6] and [s.done for s in snapshots] == [False, False, True]
    assert all(s.images.shape == (2, 3, 32, 32) and s.values.shape == (2,) for s in snapshots)
    assert set(snapshots[0].terms) == {"blocks.3:4", "total_variation", "diversity(blocks.3)"}
    assert snapshots[-1].result.objective_name == objective.name


def test_no_hooks_after_success_failure_or_interrupt(lite0):
    module = lite0.module
    flags = [p.requires_grad for p in module.parameters()]
    studio.render(lite0, "blocks.3:1", steps=2, size=32)
    assert hook_count(module) == 0

    def failing(acts):
        raise RuntimeError("objective failed")
    with pytest.raises(RuntimeError, match="objective failed"):
        studio.render(lite0, obj.channel("blocks.3", 1) + obj.as_objective(failing, layers=frozenset({"blocks.5"})),
                      steps=2, size=32)
    assert hook_count(module) == 0

    calls = []

    def interrupt_on_third(acts):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return acts["blocks.3"][:, 0].mean((1, 2))
    with pytest.raises(KeyboardInterrupt):
        studio.render(lite0, obj.as_objective(interrupt_on_third, layers=frozenset({"blocks.3"})), steps=10, size=32)
    assert hook_count(module) == 0

    abandoned = studio.optimize(lite0, "blocks.3:2", steps=50, size=32, snapshot_every=1)
    with torch.no_grad():
        next(abandoned)  # a consumer that stops listening mid-run
        assert not torch.is_grad_enabled()  # the suspended generator leaks no grad mode into the caller
    assert hook_count(module) == 0
    assert [p.requires_grad for p in module.parameters()] == flags  # nor frozen flags between steps
    abandoned.close()
    assert [p.requires_grad for p in module.parameters()] == flags and not module.training


def test_bad_target_fails_before_the_first_step(lite0):
    calls = []
    handle = lite0.module.conv_stem.register_forward_hook(lambda *_: calls.append(1))
    try:
        with pytest.raises(studio.StudioError, match="valid channels are 0 to 111"):
            studio.render(lite0, ["blocks.4:3", "blocks.4:500"], steps=5, size=32)
    finally:
        handle.remove()
    assert calls == []


def test_render_command_writes_pngs_and_prints_activations(tmp_path, capsys):
    import imageio.v3 as iio

    from studio.cli import main

    code = main(["render", "efficientnet_lite0", "blocks.3:1", 'logits:"Egyptian cat"', "--steps", "3",
                 "--size", "32", "--device", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "clean activation" in out and 'logits:285 "Egyptian cat"' in out
    assert iio.imread(tmp_path / "blocks.3_c01.png").shape == (32, 32, 3)  # blocks.3 has 80 channels
    assert iio.imread(tmp_path / "logits_c285.png").shape == (32, 32, 3)
    assert main(["render", "efficientnet_lite0", "blocks.3:1", "--steps", "2", "--size", "32", "--sheet",
                 "--device", "cpu", "--out", str(tmp_path / "sheet.png")]) == 0
    assert main(["render", "efficientnet_lite0", "blocks.9:1", "--steps", "2", "--device", "cpu"]) == 2
    assert "Unknown layer 'blocks.9'" in capsys.readouterr().err


def test_render_command_model_optional_ranges_and_one_png_path(tmp_path, capsys):
    """The model may be left out (the embedded one), ranges name several targets, and one target with a
    .png path writes that file (not a folder of that name)."""
    import imageio.v3 as iio

    from studio.cli import main

    assert main(["render", "blocks.3:1", "--steps", "2", "--size", "32", "--device", "cpu",
                 "--out", str(tmp_path / "c1.png")]) == 0
    assert (tmp_path / "c1.png").is_file() and iio.imread(tmp_path / "c1.png").shape == (32, 32, 3)
    assert main(["render", "blocks.3:4-6", "--steps", "2", "--size", "32", "--device", "cpu",
                 "--param", "maco", "--no-decorrelate", "--out", str(tmp_path / "many")]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["blocks.3_c04.png", "blocks.3_c05.png",
                                                                      "blocks.3_c06.png"]
    capsys.readouterr()
    assert main(["render", "blocks.3:4-6", "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "x.png")]) == 2
    assert "one file but there are 3 targets" in capsys.readouterr().err
    assert main(["render", "blocks.3:1", "--steps", "0", "--device", "cpu"]) == 2
    assert "steps must be at least 1, not 0." in capsys.readouterr().err


@pytest.mark.parametrize("kind, lr", [("maco", 0.05), ("pixel", 0.05), ("cppn", 0.005)])
def test_every_parameterisation_raises_its_unit(lite0, kind, lr):
    result = studio.render(lite0, "blocks.2:3", steps=24, size=48, param=kind, lr=lr, seed=0)
    assert result.history[-6:].mean() > result.history[:3].mean() + 0.5


def test_bfloat16_forward_keeps_the_result_close(lite0):
    targets = ["blocks.2:3", "blocks.2:7"]
    exact = studio.render(lite0, targets, steps=12, size=48, seed=2)
    fast = studio.render(lite0, targets, steps=12, size=48, seed=2, precision="bfloat16")
    assert fast.settings["precision"] == "bfloat16" and fast.images.dtype == torch.float32
    relative = ((fast.clean_values - exact.clean_values).abs() / exact.clean_values.abs()).median()
    assert relative < 0.1, relative
    with pytest.raises(studio.StudioError, match="float32, bfloat16"):
        studio.render(lite0, targets, steps=1, precision="half")


def test_in_place_ops_after_a_captured_layer_do_not_corrupt_it():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(inplace=True), torch.nn.Conv2d(4, 2, 3))
    model = studio.StudioModel(net, studio.InputSpec((20, 20), (0.5,) * 3, (0.5,) * 3), "tiny")
    objective = obj.channel("0", 1) + obj.channel("2", 0)
    result = studio.render(model, objective, steps=2, size=20, transforms="none")
    with torch.no_grad():
        pre_relu = net[0](model.spec.normalise(result.images))
        expected = pre_relu[:, 1].mean((1, 2)) + net[2](torch.relu(pre_relu))[:, 0].mean((1, 2))
    assert (pre_relu[:, 1] < 0).any()  # the in-place ReLU would have changed this channel
    torch.testing.assert_close(result.clean_values, expected)


def test_bad_size_transforms_param_and_device_are_clear_errors(lite0):
    with pytest.raises(studio.StudioError, match="size must be at least 8"):
        studio.render(lite0, "blocks.2:1", steps=1, size=0)
    with pytest.raises(studio.StudioError, match="standard, none"):
        studio.render(lite0, "blocks.2:1", steps=1, transforms="wild")
    with pytest.raises(studio.StudioError, match="fourier, pixel, maco, cppn"):
        studio.render(lite0, "blocks.2:1", steps=1, param="wavelet")
    with pytest.raises(studio.StudioError, match="Device 'gpu' is not available"):
        studio.load_model("torchvision:resnet18", pretrained=False, device="gpu")
