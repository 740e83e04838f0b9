"""A large canvas optimised through random crops: boxes are exact crops of the canvas, crop-major and
seeded per image; a canvas render activates its unit everywhere far beyond natural images; galleries write
the canvas with a thumbnail; settings, memory and the CLI know the canvas."""

from __future__ import annotations

import imageio.v3 as iio
import pytest
import torch

import studio
from studio.engine import canvas_grid
from studio.io import fit
from studio.models import parse_input, resize_to_input
from studio.settings import RenderSettings
from studio.targets import activations
from studio.transforms import TransformSettings, counter_uniform, random_affine
from tests.synthetic import PatternNet

NONE = TransformSettings.preset("none")


@pytest.fixture(scope="module")
def toy() -> studio.StudioModel:
    return studio.load_model(PatternNet(), device="cpu", input=parse_input("3x32x32", "0.5", "0.25"))


def test_an_untransformed_box_is_the_canvas_cut_there_and_crops_come_crop_major():
    canvas = torch.rand(2, 3, 96, 96)
    origins = torch.tensor([[[10, 4], [50, 60]], [[0, 0], [64, 64]]])  # [B, K, (x, y)]
    out = random_affine(canvas, (32, 32), NONE, torch.zeros(2, 2, 4), origins, side=32, view=32)
    assert out.shape == (4, 3, 32, 32)
    for k in range(2):
        for b in range(2):
            x, y = origins[b, k].tolist()
            torch.testing.assert_close(out[k * 2 + b], canvas[b, :, y:y + 32, x:x + 32], atol=1e-4, rtol=0)


def test_a_box_is_resized_to_the_input_and_outside_the_canvas_is_the_pads_grey():
    canvas = torch.zeros(1, 3, 64, 64, requires_grad=True)
    # a 16 px box in the corner, seen as a 16 px image zoomed out by half: the grey pad shows around it
    settings = TransformSettings(pad=8, jitter=(), scale=(0.5, 0.5), degrees=0.0)
    out = random_affine(canvas, (32, 32), settings, torch.zeros(1, 1, 4), torch.zeros(1, 1, 2), side=16, view=16)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(0.5))  # beyond the canvas's corner: grey
    assert out[0, :, 16, 16].abs().max() < 1e-6               # inside: the canvas
    out.sum().backward()
    assert canvas.grad[0, :, :24, :24].abs().sum() > 0 and canvas.grad[0, :, 40:, 40:].abs().sum() == 0


def test_the_grid_of_judged_boxes_covers_the_canvas():
    settings = RenderSettings(canvas=1000, crop_size=0.3)
    grid = canvas_grid(settings, 2)
    assert settings.box == 300 and len(grid) == 16  # ceil(1 / 0.3) = 4 per axis
    assert grid.min() == 0 and grid.max() == 700 and set(grid[:, 0].tolist()) == {0, 233, 467, 700}


def test_a_canvas_render_is_the_same_alone_and_in_a_batch_and_says_where_its_boxes_were(toy):
    settings = dict(steps=6, size=32, canvas=128, crops=3, crop_size=0.25, seed=[4, 9])
    pair = studio.render(toy, ["detect:1", "detect:5"], **settings)
    alone = studio.render(toy, "detect:5", **{**settings, "seed": [9]})
    assert pair.images.shape == (2, 3, 128, 128)
    torch.testing.assert_close(alone.images[0], pair.images[1], atol=0, rtol=0)
    assert pair.settings["canvas"] == 128 and pair.settings["crops"] == 3
    snapshots = list(studio.optimize(toy, "detect:1", steps=4, size=32, canvas=128, crops=3, snapshot_every=2))
    boxes = snapshots[0].boxes
    assert boxes.shape == (1, 3, 2, 2) and (boxes[..., 1] - boxes[..., 0] == 32).all()
    assert boxes.min() >= 0 and boxes.max() <= 128 and snapshots[-1].done


def channel_means(model: studio.StudioModel, images: torch.Tensor, target: str) -> torch.Tensor:
    layer, channel = target.split(":")
    with torch.no_grad():
        inputs = model.spec.normalise(resize_to_input(images, model.spec))
        return activations(model, inputs, [layer])[layer][:, int(channel)].mean((1, 2))


def test_a_canvas_render_activates_its_unit_everywhere_far_beyond_natural_images(lite0, photos):
    natural = channel_means(lite0, torch.stack([fit(p, lite0.spec.size) for p in photos.values()]), "blocks.3:5").max()
    result = studio.render(lite0, "blocks.3:5", steps=16, size=64, canvas=256, crops=2, crop_size=0.5)
    # the clean value: the mean over a 2 x 2 grid of untransformed boxes that tile the whole canvas
    assert result.clean_values[0] > 3 * natural
    grid = canvas_grid(RenderSettings(canvas=256, crop_size=0.5), 2)
    each = channel_means(lite0, torch.stack([result.images[0, :, y:y + 128, x:x + 128]
                                             for x, y in grid.long().tolist()]), "blocks.3:5")
    # (resized here without the engine's warp: the same to within 2 %)
    torch.testing.assert_close(each.mean(), result.clean_values[0], atol=0, rtol=0.02)
    assert (each > 1.5 * natural).all()  # every part of the canvas, not only its middle


def test_canvas_settings_check_together_and_leave_old_keys_alone():
    assert "canvas" not in RenderSettings().as_dict() and "crops" not in RenderSettings(crops=3).as_dict()
    assert RenderSettings(canvas=640).as_dict()["crop_size"] == 0.25
    assert RenderSettings(canvas=1280, crops=6).describe() == "fourier canvas 1280px, 6 crops of 25%"
    with pytest.raises(studio.StudioError, match="boxes of 5.0 px; give a canvas of at least 32 px"):
        RenderSettings(canvas=20)
    with pytest.raises(studio.StudioError, match="crops"):
        RenderSettings(canvas=256, crops=0)


def test_the_memory_check_counts_every_crop(toy, monkeypatch):
    from studio import memory

    crop, canvas = memory.activation_bytes(toy, ["detect"]), memory.image_bytes(toy, 128, "fourier")
    monkeypatch.setattr(memory, "free_bytes", lambda device: 30 * crop + 8 * canvas)
    memory.check_render(toy, ["detect"], 4, 128, "fourier", crops=6)  # 24 crops' activations fit
    memory.check_render(toy, ["detect"], 8, 128, "fourier")  # and 8 images without crops
    with pytest.raises(studio.StudioError, match="render at most"):
        memory.check_render(toy, ["detect"], 8, 128, "fourier", crops=6)


def test_a_canvas_gallery_writes_the_canvas_and_shows_its_thumbnail(toy, tmp_path):
    spec = {"title": "canvas", "settings": {"steps": 3, "size": 32, "canvas": 320, "crops": 2, "seeds": [0],
                                            "batch": 2, "transforms": "none"},
            "models": [{"name": "toy", "model": "toy", "targets": ["detect:0-1", {"target": "detect:2", "canvas": 0}]}]}
    report = studio.gallery.run(spec, tmp_path, models={"toy": toy}, progress=False)
    assert len(report.rendered) == 3
    assert iio.imread(tmp_path / "toy/detect/c0_s0.png").shape == (320, 320, 3)
    assert iio.imread(tmp_path / "toy/detect/c0_s0.thumb.png").shape == (256, 256, 3)
    assert not (tmp_path / "toy/detect/c2_s0.thumb.png").exists()  # 32 px: no thumbnail needed
    page = (tmp_path / "toy/detect/c0.html").read_text()
    assert "c0_s0.thumb.png" in page and "href='c0_s0.png'" in page
    assert "c0_s0.thumb.png" in (tmp_path / "index.html").read_text()
    again = studio.gallery.run(spec, tmp_path, models={"toy": toy}, progress=False)
    assert again.rendered == [] and len(again.skipped) == 3
    with pytest.raises(studio.StudioError, match="boxes of 3.0 px"):
        studio.gallery.run({**spec, "settings": {**spec["settings"], "canvas": 12}}, tmp_path / "bad",
                           models={"toy": toy}, progress=False)


def test_the_cli_renders_a_canvas(lite0, tmp_path):
    from studio.cli import main

    out = tmp_path / "canvas.png"
    assert main(["render", "blocks.2:3", "--steps", "2", "--size", "32", "--canvas", "160", "--crops", "2",
                 "--crop-size", "0.5", "--device", "cpu", "--out", str(out)]) == 0
    assert iio.imread(out).shape == (160, 160, 3)


def test_a_volume_canvas_is_seen_through_cubes_the_same_alone_and_in_a_batch():
    from tests.synthetic import sphere_net

    torch.manual_seed(0)
    volume = studio.load_model(sphere_net(), device="cpu",
                               input=studio.InputSpec((16, 16, 16), mean=(0.0,), std=(1.0,), channels=1))
    settings = dict(steps=3, size=16, canvas=40, crops=2, crop_size=0.5, seed=[1, 2])
    pair = studio.render(volume, ["0:1", "0:2"], **settings)
    alone = studio.render(volume, "0:2", **{**settings, "seed": [2]})
    assert pair.images.shape == (2, 1, 40, 40, 40)
    torch.testing.assert_close(alone.images[0], pair.images[1], atol=1e-6, rtol=0)  # 3D convolutions sum by batch
    snapshot = next(studio.optimize(volume, "0:1", steps=2, size=16, canvas=40, crops=2, crop_size=0.5,
                                    snapshot_every=1))
    assert snapshot.boxes.shape == (1, 2, 3, 2) and (snapshot.boxes[..., 1] - snapshot.boxes[..., 0] == 20).all()
