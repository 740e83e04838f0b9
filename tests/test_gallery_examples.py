"""Dataset examples in galleries: a tiny model's index shown beside every render (crops, multiple of the dataset
maximum, path check) in markers, the manifest, index.html, unit pages and examples sheets; a rerun rewrites
nothing; a grown index refreshes the examples without re-rendering; [examples] mistakes fail before rendering."""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import studio
from studio import gallery
from studio.errors import StudioError
from studio.exemplars import build_index, examples
from studio.exemplars.scores import DatasetComparison, channel_of, compare_with_dataset, path_check
from studio.gallery.output import contact_sheet
from studio.io import fit, read_image, to_uint8
from studio.targets import parse_target
from tests.test_gallery import unit_files, write_spec

SPEC = """\
title = "Examples"

[settings]
steps = 4
size = 32

[examples]
index = "ex.sqlite"
count = 4

[[models]]
name = "tiny"
model = "tiny"
targets = ["conv3:0-2", "conv3:1@4,4", "logits:1", "conv3"]
"""
#: Units shown with examples (the whole layer is not), and their file stems.
SHOWN = {"conv3:0": "tiny/conv3/c0", "conv3:1": "tiny/conv3/c1", "conv3:2": "tiny/conv3/c2",
         "conv3:1@4,4": "tiny/conv3/c1_y4_x4", "logits:1": "tiny/logits/c1"}


def tiny_net(seed: int = 0) -> studio.StudioModel:
    """Three convolutions (the second strided) and a linear head on 3 x 32 x 32, random weights from ``seed``."""
    torch.manual_seed(seed)
    module = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), conv2=nn.Conv2d(8, 8, 3, stride=2, padding=1),
        relu2=nn.ReLU(), conv3=nn.Conv2d(8, 8, 3, padding=1), relu3=nn.ReLU(), gap=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(), fc=nn.Linear(8, 4)))
    return studio.load_model(module, device="cpu", input=studio.InputSpec((32, 32)))


def add_photos(folder: Path, count: int, first: int = 0) -> None:
    """``count`` random photos of assorted shapes (smooth noise, so crops have structure)."""
    rng = np.random.default_rng(first)
    for index in range(first, first + count):
        height, width = 32 + 8 * (index % 3), 32 + 8 * (index % 2)
        small = rng.integers(0, 256, (height // 4, width // 4, 3)).astype(np.uint8)
        iio.imwrite(folder / "photos" / f"im{index:02d}.png", small.repeat(4, 0).repeat(4, 1))


def index(folder: Path, model: studio.StudioModel) -> Path:
    return build_index(model, folder / "photos", "conv3,logits", folder / "ex.sqlite", top_k=6, workers=0,
                       progress=False).path


def make_gallery(folder: Path, model: studio.StudioModel, text: str = SPEC) -> Path:
    """A spec beside a folder of 12 photos and their index."""
    (folder / "photos").mkdir(parents=True)
    add_photos(folder, 12)
    index(folder, model)
    return write_spec(folder, text)


def run(spec: Path, model: studio.StudioModel) -> gallery.GalleryReport:
    return gallery.run(spec, spec.parent / "out", models={"tiny": model}, progress=False)


@pytest.fixture(scope="module")
def tiny() -> studio.StudioModel:
    return tiny_net()


@pytest.fixture(scope="module")
def shown(tmp_path_factory, tiny):
    """The spec run once."""
    spec = make_gallery(tmp_path_factory.mktemp("examples"), tiny)
    return spec, spec.parent / "out", run(spec, tiny)


def marker(out: Path, stem: str) -> dict:
    return json.loads((out / f"{stem}.examples.json").read_text())


def test_crops_are_the_index_examples_fitted_into_the_render_size(shown, tiny):
    spec, out, report = shown
    assert sorted(report.examples) == sorted(SHOWN.values())
    assert not (out / "tiny/conv3/layer.examples.json").exists()  # whole layers have no examples
    for target, stem in SHOWN.items():
        expected = examples(spec.parent / "ex.sqlite", channel_of(parse_target(target, tiny)), tiny)[:4]
        crops = marker(out, stem)["examples"]
        assert [c["source"] for c in crops] == [str(e.path) for e in expected]
        assert [c["score"] for c in crops] == [e.score for e in expected]
        for crop, example in zip(crops, expected):
            tile = iio.imread(out / crop["file"])
            assert tile.shape == (32, 32, 3) and crop["file"].startswith(stem)
            assert np.array_equal(tile, to_uint8(fit(example.crop(), (32, 32), cover=False)))
            # Independently: the crop resized by Pillow (aspect kept), centred on white.
            crop_image = Image.fromarray(to_uint8(example.crop()))
            scale = 32 / max(crop_image.size)
            size = tuple(round(side * scale) for side in crop_image.size)
            left, top = (32 - size[0]) // 2, (32 - size[1]) // 2
            inner = tile[top:top + size[1], left:left + size[0]].astype(float)
            resized = np.asarray(crop_image.resize(size, Image.Resampling.BILINEAR), dtype=float)
            assert np.abs(inner - resized).mean() < 8
            padding = tile.copy()
            padding[top:top + size[1], left:left + size[0]] = 255
            assert (padding == 255).all()


def test_numbers_match_the_scores_called_directly(shown, tiny):
    spec, out, _ = shown
    index_path = spec.parent / "ex.sqlite"
    manifest = {item["id"]: item for item in json.loads((out / "manifest.json").read_text())["items"]}
    for target, stem in SHOWN.items():
        unit = parse_target(target, tiny)
        render = marker(out, stem)["renders"][f"{stem}_s0"]
        sidecar = json.loads((out / f"{stem}_s0.json").read_text())
        comparison = compare_with_dataset(index_path, unit, sidecar["clean_activation"], tiny)
        check = path_check(tiny, index_path, unit, read_image(out / f"{stem}_s0.png"))
        assert render["dataset"] == asdict(comparison) and comparison.images == 12
        assert render["path_check"]["score"] == pytest.approx(check.score, abs=1e-6)
        assert render["path_check"]["flagged"] == check.flagged and len(render["path_check"]["natural"]) == 6
        entry = manifest[f"{stem}_s0"]
        assert entry["dataset_max"] == comparison.maximum and entry["of_dataset_max"] == comparison.multiple
        assert entry["path"]["score"] == render["path_check"]["score"] and entry["page"] == f"{stem}.html"
        assert entry["examples"] == [c["file"] for c in marker(out, stem)["examples"]]
    whole = manifest["tiny/conv3/layer_s0"]
    assert whole["dataset_max"] is None and whole["path"] is None and whole["examples"] is None


def test_index_and_unit_pages_show_crops_and_numbers(shown):
    _, out, _ = shown
    html = (out / "index.html").read_text()
    for stem in SHOWN.values():
        record = marker(out, stem)
        render = record["renders"][f"{stem}_s0"]
        numbers = (f"{DatasetComparison(**render['dataset']).describe()} · path {render['path_check']['score']:+.3f}")
        assert "of 12 images" in numbers
        page = (out / f"{stem}.html").read_text()
        figure = re.search(rf"<figure data-id='{stem}_s0'.*?</figure>", html).group(0)
        for text in (figure, page):
            assert numbers in text and ("UNNATURAL PATH" in text) == render["path_check"]["flagged"]
        assert f"href='{stem}.html'" in html
        folder, name = stem.rsplit("/", 1)
        assert "href='../../index.html'" in page and f"src='{name}_s0.png'" in page
        for crop in record["examples"]:
            assert f"src='{crop['file']}'" in html
            assert f"src='{crop['file'].removeprefix(folder + '/')}'" in page
            assert Path(crop["source"]).name in page and f"{crop['score']:.4g}" in page
    flagged = re.findall(r"class='[^']*flagged'", html)
    assert len(flagged) == sum(marker(out, s)["renders"][f"{s}_s0"]["path_check"]["flagged"] for s in SHOWN.values())
    assert (out / "tiny/conv3/layer.html").is_file()  # every unit has a page, examples or not


def test_examples_sheets_have_a_row_per_render(shown):
    _, out, report = shown
    assert {p.name for p in report.sheets} == {"tiny__conv3.png", "tiny__conv3.examples.png", "tiny__logits.png",
                                               "tiny__logits.examples.png"}
    blank = np.full((32, 32, 3), 255, np.uint8)
    for name, rows in (("tiny__conv3", 4), ("tiny__logits", 1)):  # conv3's whole layer has no row
        expected = contact_sheet([blank] * rows * 5, ["x"] * rows * 5, 5, None, "title")
        sheet = iio.imread(out / f"sheets/{name}.examples.png")
        assert sheet.shape == expected.shape
        first_crop = iio.imread(out / f"tiny/{name.split('__')[1]}/c1.example00.png")
        assert not np.array_equal(sheet, np.full_like(sheet, 255)) and first_crop.shape == (32, 32, 3)


def test_a_rerun_rewrites_nothing(shown, tiny):
    spec, out, _ = shown
    before = unit_files(out)
    again = run(spec, tiny)
    assert again.rendered == [] and again.examples == [] and len(again.skipped) == 6
    assert unit_files(out) == before


def test_a_grown_index_refreshes_examples_without_rerendering(tmp_path, tiny):
    spec = make_gallery(tmp_path, tiny)
    out = tmp_path / "out"
    run(spec, tiny)
    before = unit_files(out)
    add_photos(tmp_path, 4, first=12)
    index(tmp_path, tiny)
    report = run(spec, tiny)
    assert report.rendered == [] and sorted(report.examples) == sorted(SHOWN.values())
    after = unit_files(out)
    renders = {name for name in before if re.search(r"_s0\.(png|json)$", name)}
    assert renders and {name: after[name] for name in renders} == {name: before[name] for name in renders}
    for stem in SHOWN.values():
        assert marker(out, stem)["index"]["images"] == 16
        assert marker(out, stem)["renders"][f"{stem}_s0"]["dataset"]["images"] == 16
    assert "(of 16 images)" in (out / "index.html").read_text()


BAD = {
    "unknown key": ("count = 4", "cuont = 4", r"spec\.toml line 9, \[examples\]: unknown key 'cuont'; did you mean "
                                              r"'count'\?"),
    "count 0": ("count = 4", "count = 0", r"spec\.toml line 9, \[examples\]: count must be at least 1, not 0\."),
    "count 65": ("count = 4", "count = 65", r"line 9, \[examples\]: count must be at most 64, not 65\."),
    "missing index": ('index = "ex.sqlite"', 'index = "nope.sqlite"',
                      r"line 8, \[examples\]: index 'nope\.sqlite' does not exist \(paths are relative to the spec's "
                      r"folder\); build it with studio index"),
    "not indexed": ('"conv3:0-2",', '"conv3:0-2", "conv2:5",',
                    r"line 14, model 'tiny' target 'conv2:5': index 'ex\.sqlite' holds conv3 \(channels 0 to 7\), "
                    r"logits \(channels 0 to 3\), not conv2:5; index that layer or remove the target\."),
    "path check type": ("count = 4", "path_check = 1", r"line 9, \[examples\]: path_check must be true or false"),
}


@pytest.fixture(scope="module")
def indexed_folder(tmp_path_factory, tiny) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    make_gallery(folder, tiny)
    return folder


@pytest.mark.parametrize("case", list(BAD))
def test_examples_mistakes_fail_before_rendering_in_one_sentence(case, indexed_folder, tiny):
    old, new, message = BAD[case]
    spec = indexed_folder / "spec.toml"
    spec.write_text(SPEC.replace(old, new))
    with pytest.raises(StudioError, match=message) as error:
        run(spec, tiny)
    assert "\n" not in str(error.value) and not (indexed_folder / "out").exists()


def test_an_index_of_another_model_is_refused(indexed_folder):
    spec = indexed_folder / "spec.toml"
    spec.write_text(SPEC)
    with pytest.raises(StudioError, match=r"line 8, \[examples\]: index 'ex\.sqlite' was built with another model"):
        run(spec, tiny_net(seed=1))
