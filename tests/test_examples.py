"""The dataset-example index: planted patterns ranked first with their crops, kill and resume, unreadable files,
growing folders, the query's errors, the command line, logits, and EfficientNet-Lite0 on real photos."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import warnings
from collections import OrderedDict
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from torch import nn

import studio
from studio.cli import main
from studio.exemplars import UnreadableImage, build_index, examples, index_info, unit_statistics
from studio.exemplars import store
from studio.exemplars.fields import receptive_fields
from studio.targets import layer_info
from tests.conftest import hook_count

SPEC = studio.InputSpec((32, 32), mean=(0.0,), std=(1.0,))
LAYERS = "conv2,logits"


def detector_net() -> nn.Module:
    """Hand-set weights: ``conv1`` channel 0 fires on red (R - G/2 - B/2 over 3 x 3, minus 0.1), 1 on brightness,
    2 on green, 3 on blue; 2 x 2 max pooling; ``conv2`` averages each over 5 x 5; logits 0, 1, 2 are the largest
    red, green and brightness responses."""
    conv1, conv2, fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 5, padding=2), nn.Linear(4, 3)
    with torch.no_grad():
        for layer in (conv1, conv2, fc):
            layer.weight.zero_()
            layer.bias.zero_()
        colours = torch.tensor([[1.0, -0.5, -0.5], [1 / 3, 1 / 3, 1 / 3], [-0.5, 1.0, -0.5], [-0.5, -0.5, 1.0]])
        conv1.weight.copy_(colours[:, :, None, None].expand(4, 3, 3, 3) / 9)
        conv1.bias.copy_(torch.tensor([-0.1, 0.0, -0.1, -0.1]))
        for channel in range(4):
            conv2.weight[channel, channel] = 1 / 25
        fc.weight[0, 0] = fc.weight[1, 2] = fc.weight[2, 1] = 1.0
    return nn.Sequential(OrderedDict(conv1=conv1, relu1=nn.ReLU(), pool=nn.MaxPool2d(2), conv2=conv2,
                                     relu2=nn.ReLU(), peak=nn.AdaptiveMaxPool2d(1), flat=nn.Flatten(), fc=fc))


@pytest.fixture(scope="module")
def detector() -> studio.StudioModel:
    return studio.load_model(detector_net(), device="cpu", input=SPEC)


def grey(rng: np.random.Generator, height: int = 32, width: int = 32) -> np.ndarray:
    """Grey noise (equal R, G, B: silent for the colour detectors), uint8 H x W x 3."""
    return np.repeat(rng.integers(70, 180, (height, width, 1), dtype=np.uint8), 3, axis=2)


#: Planted red squares: file, image size, intensity, square (top, left, side), best first.
PLANTED = [("p0.png", (32, 32), 255, (4, 6, 8)), ("sub/p1.png", (32, 32), 215, (18, 20, 8)),
           ("sub/deeper/p2.png", (64, 64), 180, (36, 8, 16)), ("p3.tif", (32, 32), 140, (10, 22, 8))]
#: Distractors: file, size, colour of a square (or None).
OTHERS = [("n0.png", (32, 32), None), ("n1.jpg", (40, 48), None), ("sub/g.png", (32, 32), (0, 255, 0)),
          ("sub/b.png", (48, 40), (0, 0, 255)), ("w.png", (32, 32), (255, 255, 255)), ("n2.png", (32, 32), None),
          ("sub/deeper/n3.png", (32, 32), None), ("g2.png", (32, 32), (0, 200, 0))]


def write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def planted_image(rng: np.random.Generator, size: tuple[int, int], value: int,
                  square: tuple[int, int, int]) -> np.ndarray:
    image = grey(rng, *size)
    top, left, side = square
    image[top:top + side, left:left + side] = (value, 0, 0)
    return image


@pytest.fixture
def folder(tmp_path) -> Path:
    """Twelve images in nested folders (PNG, JPEG, TIFF; some not at the model's size): four with a red square."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name, size, value, square in PLANTED:
        write(root / name, planted_image(rng, size, value, square))
    for name, size, colour in OTHERS:
        image = grey(rng, *size)
        if colour is not None:
            image[8:20, 8:20] = colour
        write(root / name, image if not name.endswith(".jpg") else np.full_like(image, 128))
    return root


def dump(path: Path) -> dict[str, list]:
    """Every table of an index, in a fixed order."""
    with sqlite3.connect(path) as connection:
        return {table: sorted(connection.execute(f"SELECT * FROM {table}"))
                for table in ("meta", "layers", "images", "examples", "statistics")}


def test_planted_images_rank_first_and_boxes_contain_the_pattern(detector, folder, tmp_path):
    out = tmp_path / "examples.sqlite"
    info = build_index(detector, folder, LAYERS, out, top_k=6, batch=5, workers=0, progress=False)
    assert (info.images, info.unreadable, info.layers, info.top_k) == (12, 0, {"conv2": 4, "logits": 3}, 6)
    top = examples(out, "conv2:0")
    assert [e.path for e in top[:4]] == [folder / name for name, *_ in PLANTED]
    assert all(e.score > 0 for e in top[:4]) and all(e.score == 0 for e in top[4:])
    assert [e.score for e in top] == sorted((e.score for e in top), reverse=True)
    for example, (_, size, _, (y, x, side)) in zip(top, PLANTED):
        (y0, y1), (x0, x1) = example.box
        assert y0 <= y and y + side <= y1 and x0 <= x and x + side <= x1, (example, y, x)
        assert 0 <= y0 < y1 <= size[0] and 0 <= x0 < x1 <= size[1]
        crop = example.crop()
        assert crop.shape == (3, y1 - y0, x1 - x0) and 0 <= crop.min() and crop.max() <= 1
        assert (crop[0] - crop[1] > 0.5).sum() == side * side  # the whole square is in the crop
    assert top[2].box[0][1] - top[2].box[0][0] > 16  # the 64 px image: its box in its own pixels
    stats = unit_statistics(out, "conv2:0")
    assert stats.images == 12 and stats.max == top[0].score and 0 < stats.mean < stats.max_mean <= stats.max
    assert stats.quantiles[0.5] == 0 and 0 < stats.quantiles[0.99] <= stats.max
    assert stats.quantiles[0.9] == pytest.approx(top[1].score, rel=0.02)  # rank ceil(0.9 * 12) = 11: the 2nd best


def test_logits_index_like_channels(detector, folder, tmp_path):
    out = tmp_path / "examples.sqlite"
    build_index(detector, folder, ["logits"], out, top_k=4, batch=12, workers=0, progress=False)
    red = examples(out, "logits:0")
    assert [e.path for e in red] == [folder / name for name, *_ in PLANTED]
    assert red[0].position == () and red[0].box == ((0, 32), (0, 32)) and red[2].box == ((0, 64), (0, 64))
    assert [e.path for e in examples(out, 0)] == [e.path for e in red]  # a bare class number reads the logits
    assert examples(out, "logits:1")[0].path.name in ("g.png", "g2.png")
    assert unit_statistics(out, "logits:2").max == pytest.approx(max(e.score for e in examples(out, "logits:2")))


def test_volumes_index_with_boxes_in_voxels(tmp_path):
    """A 1-channel 3D network that fires on bright voxels; volumes are TIFF stacks, one with a bright cube."""
    net = nn.Sequential(nn.Conv3d(1, 1, 3, padding=1), nn.ReLU(), nn.MaxPool3d(2), nn.Conv3d(1, 1, 3, padding=1))
    with torch.no_grad():
        net[0].weight.fill_(1 / 27), net[0].bias.fill_(-0.6), net[3].weight.fill_(1 / 27), net[3].bias.zero_()
    model = studio.load_model(net, device="cpu", input=studio.InputSpec((12, 12, 12), channels=1))
    rng = np.random.default_rng(0)
    for index in range(5):
        volume = (rng.random((12, 12, 12)) * 0.45 * 65535).astype(np.uint16)
        if index == 3:
            volume[2:6, 4:8, 6:10] = 65535
        write(tmp_path / "volumes" / f"v{index}.tif", volume)
    out = tmp_path / "volumes.sqlite"
    build_index(model, tmp_path / "volumes", "3", out, top_k=2, batch=2, workers=0, progress=False)
    best = examples(out, "3:0")[0]
    assert best.path.name == "v3.tif" and len(best.position) == 3
    assert all(start <= low and high <= stop for (start, stop), (low, high) in zip(best.box, [(2, 6), (4, 8), (6, 10)]))
    assert best.crop().shape == (1, *(stop - start for start, stop in best.box))


def test_receptive_fields_match_the_layer_arithmetic(detector):
    """conv2 neuron i sees pooled rows i-2..i+2, input rows 2i-4..2i+5, widened by conv1 to [2i-5, 2i+7)."""
    rows, columns = receptive_fields(detector, layer_info(detector, "conv2"))
    expected = [(max(0, 2 * i - 5), min(32, 2 * i + 7)) for i in range(16)]
    assert rows == expected and columns == expected
    assert receptive_fields(detector, layer_info(detector, "")) == []
    assert hook_count(detector.module) == 0 and all(p.requires_grad for p in detector.module.parameters())


def test_a_killed_run_resumes_to_the_uninterrupted_index(detector, folder, tmp_path, monkeypatch):
    whole, resumed = tmp_path / "whole.sqlite", tmp_path / "resumed.sqlite"
    build_index(detector, folder, LAYERS, whole, top_k=5, batch=3, workers=0, progress=False)
    calls, save = [], store.save_state

    def killed(*args):
        calls.append(1)
        if len(calls) == 4:  # batch 2, second layer: the batch's transaction is half written
            raise KeyboardInterrupt
        save(*args)

    monkeypatch.setattr(store, "save_state", killed)
    with pytest.raises(KeyboardInterrupt):
        build_index(detector, folder, LAYERS, resumed, top_k=5, batch=3, workers=0, progress=False)
    assert index_info(resumed).images == 3  # the first batch only
    monkeypatch.setattr(store, "save_state", save)
    info = build_index(detector, folder, LAYERS, resumed, top_k=5, batch=3, workers=0, progress=False)
    assert info.images == 12
    assert dump(resumed) == dump(whole)
    with sqlite3.connect(resumed) as connection:
        assert connection.execute("SELECT count(DISTINCT path) FROM images").fetchone() == (12,)
    counts = [sum(json.loads(row[-1])[1]) for row in dump(resumed)["statistics"]]
    assert set(counts) == {12}  # every channel counted every image exactly once


def test_unreadable_images_are_skipped_once_each_with_a_warning(detector, folder, tmp_path):
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "sub" / "empty.jpg").write_bytes(b"")
    good = (folder / "p0.png").read_bytes()
    (folder / "cut.png").write_bytes(good[:len(good) // 2])
    out = tmp_path / "examples.sqlite"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = build_index(detector, folder, LAYERS, out, batch=4, workers=0, progress=False)
    lines = [str(w.message) for w in caught if w.category is UnreadableImage]
    assert len(lines) == 3 and all("\n" not in line for line in lines)
    assert sorted(Path(line.split("'")[1]).name for line in lines) == ["broken.png", "cut.png", "empty.jpg"]
    assert (info.images, info.unreadable) == (15, 3) and unit_statistics(out, "conv2:0").images == 12
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = build_index(detector, folder, LAYERS, out, batch=4, workers=0, progress=False)
    assert not caught and (again.images, again.unreadable) == (15, 3)  # recorded as seen, not retried


def test_adding_images_updates_the_index(detector, folder, tmp_path):
    out = tmp_path / "examples.sqlite"
    build_index(detector, folder, LAYERS, out, top_k=4, batch=4, workers=0, progress=False)
    before = unit_statistics(out, "conv2:0")
    write(folder / "new" / "brightest.png", planted_image(np.random.default_rng(1), (32, 32), 255, (2, 2, 12)))
    info = build_index(detector, folder, LAYERS, out, top_k=4, batch=4, workers=0, progress=False)
    top = examples(out, "conv2:0")
    assert info.images == 13 and top[0].path == folder / "new" / "brightest.png"
    assert [e.path for e in top[1:]] == [folder / name for name, *_ in PLANTED[:3]]
    after = unit_statistics(out, "conv2:0")
    assert after.images == 13 and after.max > before.max and after.mean > before.mean
    os.utime(folder / "p0.png", (0, 0))
    with pytest.warns(UserWarning, match="1 indexed image"):
        assert build_index(detector, folder, LAYERS, out, top_k=4, batch=4, workers=0, progress=False).images == 13
    fresh = tmp_path / "fresh.sqlite"
    build_index(detector, folder, LAYERS, fresh, top_k=4, batch=4, workers=0, progress=False)
    assert examples(fresh, "conv2:0") == top
    assert unit_statistics(fresh, "conv2:0").mean == pytest.approx(after.mean)


def test_query_and_build_errors_are_one_sentence(detector, folder, tmp_path):
    out = tmp_path / "examples.sqlite"
    build_index(detector, folder, LAYERS, out, top_k=2, batch=12, workers=0, progress=False)
    cases = [("conv9:1", re.escape("holds conv2 (4 channels), logits (3 channels), not layer 'conv9'")),
             ("conv2:7", "holds channels 0 to 3 of conv2, not 7"),
             ("conv2", "write conv2:CHANNEL"), ("conv2:1@3,3", "write conv2:CHANNEL"),
             ('logits:"red"', "pass the model"), ("::", "Cannot read target")]
    for target, message in cases:
        with pytest.raises(studio.StudioError, match=message):
            examples(out, target)
    with pytest.raises(studio.StudioError, match="valid channels are 0 to 3"):
        unit_statistics(out, "conv2:9", model=detector)
    assert examples(out, "conv2:0", model=detector) == examples(out, "conv2:0")
    with pytest.raises(studio.StudioError, match="No dataset-example index"):
        examples(tmp_path / "missing.sqlite", "conv2:0")
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(studio.StudioError, match="is not a dataset-example index"):
        examples(tmp_path / "junk.sqlite", "conv2:0")
    other = detector_net()
    with torch.no_grad():
        other.conv1.bias[0] = 0.2
    with pytest.raises(studio.StudioError, match=r"\(weights differ\)"):
        build_index(studio.load_model(other, device="cpu", input=SPEC), folder, LAYERS, out, top_k=2, progress=False)
    with pytest.raises(studio.StudioError, match=r"\(layers differ\)"):
        build_index(detector, folder, "conv2", out, top_k=2, progress=False)
    with pytest.raises(studio.StudioError, match="Index whole layers: write conv2 instead of conv2:3"):
        build_index(detector, folder, "conv2:3", out, progress=False)
    with pytest.raises(studio.StudioError, match="does not exist"):
        build_index(detector, tmp_path / "nowhere", LAYERS, out, progress=False)
    assert index_info(out).images == 12  # refused runs change nothing


def test_cli_indexes_and_shows(folder, tmp_path, capsys):
    factory = tmp_path / "net.py"
    factory.write_text("from tests.test_examples import detector_net as model\n")
    out = tmp_path / "examples.sqlite"
    model = [f"{factory}:model", "--input", "3x32x32", "--mean", "0", "--std", "1", "--device", "cpu"]
    assert main(["index", model[0], str(folder), *model[1:], "--layers", LAYERS, "--out", str(out), "--top-k", "3",
                 "--batch", "5", "--workers", "2"]) == 0
    assert "12 images seen, 0 unreadable" in capsys.readouterr().out
    assert main(["index", "--show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "3x32x32" in shown and "conv2" in shown and "12 images seen" in shown
    assert main(["index", "--show", str(out), "conv2:0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "12 images" in lines[0] and len(lines) == 4 and lines[1].endswith(str(folder / PLANTED[0][0]))
    assert main(["index", "--show", str(out), "conv5:0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not layer 'conv5'" in error
    assert main(["index", model[0], str(folder), *model[1:], "--out", str(out)]) == 2
    assert "--layers and --out" in capsys.readouterr().err


def test_lite0_indexes_photos(lite0, photos, tmp_path):
    """The embedded model (at 96 px, to stay quick) on four scikit-image photos of their own sizes, decoded in a
    worker process."""
    small = studio.StudioModel(lite0.module, studio.InputSpec((96, 96)), lite0.name, lite0.class_names)
    folder = tmp_path / "photos"
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        write(folder / f"{name}.jpg", (photos[name].permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    out = tmp_path / "lite0.sqlite"
    info = build_index(small, folder, "blocks.2,logits", out, top_k=2, batch=3, workers=1, progress=False)
    assert (info.images, info.input, info.layers) == (4, "3x96x96", {"blocks.2": 40, "logits": 1000})
    with sqlite3.connect(out) as connection:
        (fields,) = connection.execute("SELECT fields FROM layers WHERE name = 'blocks.2'").fetchone()
    starts = [start for start, _ in json.loads(fields)[0][4:]]
    assert {b - a for a, b in zip(starts, starts[1:])} == {8}  # blocks.2 has stride 8 (away from the top edge)
    assert examples(out, "logits:281")[0].path.name == "chelsea.jpg"  # tabby: the cat photo
    (y0, y1), (x0, x1) = examples(out, "blocks.2:5")[0].box
    assert examples(out, "blocks.2:5")[0].crop().shape == (3, y1 - y0, x1 - x0)


# ------------------------------------------------------------------------------------------------ honest numbers

def test_a_render_is_compared_with_its_units_dataset_maximum(detector, folder, tmp_path):
    from studio.exemplars.scores import compare_with_dataset

    index = tmp_path / "ex.sqlite"
    build_index(detector, folder, LAYERS, index, top_k=4, workers=0, progress=False)
    stats = unit_statistics(index, "conv2:0")
    channel = compare_with_dataset(index, studio.parse_target("conv2:0", detector), 2 * stats.max_mean)
    assert channel.maximum == stats.max_mean and channel.multiple == pytest.approx(2.0)
    neuron = compare_with_dataset(index, studio.parse_target("conv2:0@3,3", detector), stats.max)
    assert neuron.maximum == stats.max and neuron.multiple == pytest.approx(1.0)  # a neuron against any position's max
    silent = compare_with_dataset(index, studio.parse_target("conv2:0", detector), 1.0)
    assert "x dataset max (of 12 images)" in channel.describe() and silent.images == 12
    with pytest.raises(studio.StudioError, match="names a whole layer"):
        compare_with_dataset(index, studio.parse_target("conv2", detector), 1.0)


def test_the_path_check_matches_its_definition_and_flags_an_image_off_the_natural_path(detector, folder, tmp_path):
    """Pooled activations of the layers below the unit: mean cosine to the top examples minus mean cosine to the
    other images; each top example's leave-one-out score is the natural range, and below all of it is flagged."""
    from studio.exemplars.scores import _pooled, layers_below, path_check, random_images

    index = tmp_path / "ex.sqlite"
    build_index(detector, folder, LAYERS, index, top_k=4, workers=0, progress=False)
    target = studio.parse_target("conv2:0", detector)
    assert layers_below(detector, target) == ["conv1", "relu1", "pool"]
    top = [example.path for example in examples(index, "conv2:0")]
    others = random_images(index, 16, exclude=top)
    assert len(others) == 8 and not set(top) & set(others)

    def pooled(paths):
        images = torch.stack([studio.models.resize_to_input(studio.io.read_input(p)[None], detector.spec)[0]
                              for p in paths])
        return _pooled(detector, images, ["conv1", "relu1", "pool"])

    def cosine(a, b):  # by hand: per layer, then averaged
        return sum((x @ y.T) for x, y in zip(a, b)) / len(a)
    top_acts, other_acts = pooled(top), pooled(others)
    red = studio.io.read_input(top[0])
    check = path_check(detector, index, "conv2:0", red)
    render_acts = pooled([top[0]])
    expected = cosine(render_acts, top_acts).mean() - cosine(render_acts, other_acts).mean()
    assert check.score == pytest.approx(float(expected), abs=1e-5) and check.layers == ("conv1", "relu1", "pool")
    among = cosine(top_acts, top_acts)
    natural = (among.sum(1) - among.diagonal()) / 3 - cosine(top_acts, other_acts).mean(1)
    assert check.natural == pytest.approx(natural.tolist(), abs=1e-5)
    assert not check.flagged and "natural path" in check.describe()
    off_path = torch.zeros(3, 32, 32)
    off_path[1:] = 1.0  # cyan: green and blue detectors, nothing a red example shows
    flagged = path_check(detector, index, "conv2:0", off_path)
    assert flagged.flagged and flagged.score < min(flagged.natural) and "UNNATURAL PATH" in flagged.describe()
    assert hook_count(detector.module) == 0


def test_render_reports_the_dataset_multiple_and_the_path_in_its_table(folder, tmp_path, capsys, monkeypatch):
    factory = tmp_path / "net.py"
    factory.write_text("from tests.test_examples import detector_net\n\ndef make():\n    return detector_net()\n")
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent))
    spec = ["--input", "3x32x32", "--mean", "0", "--std", "1"]
    assert main(["index", f"{factory}:make", str(folder), *spec, "--layers", "conv2", "--out",
                 str(tmp_path / "ex.sqlite"), "--top-k", "4", "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["render", f"{factory}:make", "conv2:0", "fc:1", *spec, "--steps", "8", "--size", "32", "--out",
                 str(tmp_path / "r"), "--examples", str(tmp_path / "ex.sqlite")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"conv2:0 +[\d.]+ +[\d.]+x dataset max \(of 12 images\), path [+-][\d.]+ \((natural path|UNNATURAL"
                     r" PATH); top examples", out), out
    assert "(Index" in out and "not layer 'fc'" in out  # a unit the index does not hold says so in its row
    assert main(["render", f"{factory}:make", "conv2:0", *spec, "--examples", str(tmp_path / "missing.sqlite")]) == 2
