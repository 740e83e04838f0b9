"""Galleries: a dozen units render with agreeing manifest/sidecars/index, SIGKILL + rerun resumes without
recomputing, a changed unit re-renders alone, spec mistakes fail before rendering, determinism, OOM halving."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from studio import batching, cli, gallery
from studio.errors import StudioError
from studio.gallery.loading import weights_sha256
from studio.gallery.output import LOCK, lock
from studio.gallery.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

# Twelve units: a channel range, a list, a class by label, a neuron, a target table, a whole layer.
DOZEN = """\
title = "Test gallery"

[settings]
steps = 5
size = 32
batch = 3

[output]
columns = 4
animation = "gif"
frames = 3

[attribution]
photos = ["chelsea.png", "coffee.png"]

[[models]]
name = "lite0"
model = "efficientnet_lite0"
targets = [
  "blocks.4:0-5",
  "blocks.5:3, 7",
  'logits:"Egyptian cat"',
  "blocks.3:2@3,4",
  { target = "blocks.4:9", steps = 5 },
  "blocks.2",
]
"""
IDS = [f"lite0/blocks.4/c00{c}_s0" for c in range(6)] + [
    "lite0/blocks.5/c003_s0", "lite0/blocks.5/c007_s0", "lite0/logits/c285_s0", "lite0/blocks.3/c02_y3_x4_s0",
    "lite0/blocks.4/c009_s0", "lite0/blocks.2/layer_s0"]


def write_spec(folder: Path, text: str, photos: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, photo in (photos or {}).items():
        iio.imwrite(folder / f"{name}.png", (photo.permute(1, 2, 0)[::4, ::4].numpy() * 255).astype(np.uint8))
    path = folder / "spec.toml"
    path.write_text(text)
    return path


def unit_files(out: Path) -> dict[str, int]:
    """Every file under ``out`` except the run-level ones, with its modification time (ns)."""
    skip = {"manifest.json", "index.html", LOCK}
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and p.name not in skip and "sheets" not in p.parts}


def sidecar_ids(out: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["id"] for p in out.rglob("*_s*.json"))


@pytest.fixture(scope="module")
def dozen(tmp_path_factory, lite0, photos):
    """The dozen-unit spec rendered once, in-process, with the session's model."""
    folder = tmp_path_factory.mktemp("dozen")
    spec = write_spec(folder, DOZEN, {"chelsea": photos["chelsea"], "coffee": photos["coffee"]})
    start = time.perf_counter()
    report = gallery.run(spec, folder / "out", models={"efficientnet_lite0": lite0}, progress=False)
    print(f"dozen: {len(report.rendered)} images in {time.perf_counter() - start:.1f} s "
          f"({report.seconds_per_image:.2f} s per image)")
    return spec, folder / "out", report


def test_dozen_units_render_and_manifest_sidecars_index_agree(dozen, lite0):
    spec, out, report = dozen
    assert sorted(report.rendered) == sorted(IDS) and report.skipped == []
    manifest = json.loads((out / "manifest.json").read_text())
    html = (out / "index.html").read_text()
    assert sorted(i["id"] for i in manifest["items"]) == sorted(IDS)
    assert sidecar_ids(out) == sorted(IDS)
    assert sorted(re.findall(r"data-id='([^']+)'", html)) == sorted(IDS)
    assert manifest["spec"]["text"] == spec.read_text()
    for item in manifest["items"]:
        sidecar = json.loads((out / item["sidecar"]).read_text())
        assert iio.imread(out / sidecar["files"]["image"]).shape == (32, 32, 3)
        assert iio.imread(out / sidecar["files"]["animation"]).shape[0] >= 3  # GIF frames of the trajectory
        assert sidecar["clean_activation"] == item["clean_activation"] and np.isfinite(item["clean_activation"])
        assert sidecar["model"]["weights_sha256"] == weights_sha256(lite0.module)
        assert {"torch", "torchvision", "kornia", "timm", "studio"} <= set(sidecar["versions"])
        assert sidecar["device"]["device"] == "cpu" and sidecar["settings"]["steps"] == 5
        assert sidecar["seed"] == 0 and sidecar["seconds"] > 0 and sidecar["finished"]
        assert f"src='{item['image']}'" in html  # relative paths: browsable without a server
    # The whole layer renders alone (its objective covers every image of a batch); the rest share batches of 3.
    batches = {json.loads((out / i["sidecar"]).read_text())["batch"]["size"] for i in manifest["items"]}
    assert batches == {1, 2, 3}
    caption = json.loads((out / "lite0/logits/c285_s0.json").read_text())
    assert caption["target"] == "logits:285" and "Egyptian cat" in caption["label"] and "Egyptian cat" in html
    # Grad-CAM of each unit on each photo, shown in the index.
    marker = json.loads((out / "lite0/blocks.4/c000.attribution.json").read_text())
    assert marker["method"] == "gradcam" and sorted(marker["files"]) == ["chelsea.png", "coffee.png"]
    for overlay in marker["files"].values():
        assert iio.imread(out / overlay).shape == (224, 224, 3) and f"src='{overlay}'" in html
    # Contact sheets: one per layer, white background, wider than its tiles, with a label strip.
    sheets = sorted(p.name for p in (out / "sheets").iterdir())
    assert sheets == sorted(f"lite0__{layer}.png" for layer in ("blocks.2", "blocks.3", "blocks.4", "blocks.5", "logits"))
    sheet = iio.imread(out / "sheets/lite0__blocks.4.png")
    assert sheet.shape[1] >= 4 * 96 and (sheet[0, 0] == 255).all()
    assert sorted(manifest["sheets"]) == [f"sheets/{s}" for s in sheets]


def test_sigkill_then_rerun_completes_each_unit_once_without_recomputing(dozen, tmp_path, photos):
    spec_text = DOZEN.replace('animation = "gif"', 'animation = "none"').replace("[attribution]\n", "").replace(
        'photos = ["chelsea.png", "coffee.png"]\n', "")
    spec = write_spec(tmp_path, spec_text)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "studio", "gallery", str(spec), "--out", str(out), "--quiet"]
    # The same thread count as this process: CPU reductions differ bitwise between thread counts, and the
    # resumed images are compared with the in-process fresh run below.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 150
    while len(list(out.rglob("*_s*.json"))) < 3 and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()
    before = unit_files(out)
    done_before = sidecar_ids(out)
    assert 3 <= len(done_before) < 12, "the kill should land in the middle of the run"

    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"skipped {len(done_before)} already complete" in finished.stdout
    assert sidecar_ids(out) == sorted(IDS)  # every unit exactly once
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(i["id"] for i in manifest["items"]) == sorted(IDS)
    leftovers = [p.name for p in out.rglob(".*") if p.name != LOCK]
    assert leftovers == [], f"temporary files left: {leftovers}"
    after = unit_files(out)
    assert {name: after[name] for name in before} == before  # nothing done before the kill was rewritten
    # The resumed gallery is the gallery a single uninterrupted run makes (same batches, same device).
    _, fresh, _ = dozen
    for item in IDS:
        assert np.array_equal(iio.imread(out / f"{item}.png"), iio.imread(fresh / f"{item}.png")), item


def test_changing_one_unit_rerenders_only_that_unit(dozen, tmp_path, lite0):
    spec, fresh, _ = dozen
    folder = tmp_path / "copy"
    shutil.copytree(spec.parent, folder)
    out = folder / "out"
    stale = out / "lite0/blocks.4/.c000_s0.png.abcd_123.png"  # what a kill during a write leaves
    stale.write_bytes(b"partial")
    before = unit_files(out)
    del before[str(stale.relative_to(out))]
    changed = DOZEN.replace('{ target = "blocks.4:9", steps = 5 }', '{ target = "blocks.4:9", steps = 4 }')
    (folder / "spec.toml").write_text(changed.replace('"blocks.2",', '"blocks.2",\n  "blocks.4:10",'))
    report = gallery.run(folder / "spec.toml", out, models={"efficientnet_lite0": lite0}, progress=False)
    assert sorted(report.rendered) == ["lite0/blocks.4/c009_s0", "lite0/blocks.4/c010_s0"]
    assert report.attributed == ["lite0/blocks.4/c010"]  # the changed unit's Grad-CAM does not depend on steps
    assert not stale.exists()
    after = unit_files(out)
    changed_files = {name for name in before if after[name] != before[name]}
    # Its unit page shows the new activation; every other page is left as it was.
    assert changed_files == {f"lite0/blocks.4/c009_s0.{ext}" for ext in ("png", "json", "gif")} | {
        "lite0/blocks.4/c009.html"}
    assert json.loads((out / "lite0/blocks.4/c009_s0.json").read_text())["settings"]["steps"] == 4
    assert len(json.loads((out / "manifest.json").read_text())["items"]) == 13

    # A second run while one holds the folder is refused before it renders anything.
    handle = lock(out)
    try:
        with pytest.raises(StudioError, match="Another studio gallery run"):
            gallery.run(folder / "spec.toml", out, models={"efficientnet_lite0": lite0}, progress=False)
    finally:
        handle.close()


def test_a_deleted_image_is_rendered_again_identically(dozen, tmp_path, lite0):
    spec, fresh, _ = dozen
    folder = tmp_path / "copy"
    shutil.copytree(spec.parent, folder)
    out = folder / "out"
    for suffix in ("json", "png"):
        (out / f"lite0/blocks.4/c001_s0.{suffix}").unlink()
    before = unit_files(out)
    report = gallery.run(folder / "spec.toml", out, models={"efficientnet_lite0": lite0}, progress=False)
    assert report.rendered == ["lite0/blocks.4/c001_s0"] and report.attributed == []
    after = unit_files(out)
    assert {name for name in before if after[name] != before[name]} == {"lite0/blocks.4/c001_s0.gif"}
    # Its batch (c000-c002) is rendered whole again, as the first run cut it, so the image comes back unchanged.
    assert np.array_equal(iio.imread(out / "lite0/blocks.4/c001_s0.png"), iio.imread(fresh / "lite0/blocks.4/c001_s0.png"))


BAD_SPECS = {
    "typo": ("[settings]\nstpes = 4\n", r"spec\.toml line 4, \[settings\]: unknown key 'stpes'; did you mean 'steps'\?"),
    "layer": ('targets = ["blocks.4:0-3", "blocks.44:3"]', r"line 9, model 'lite0' targets\[1\] 'blocks\.44:3': "
                                                         r"unknown layer 'blocks\.44'.*did you mean 'blocks\.4'"),
    "channel": ('targets = ["blocks.4:100-120"]', r"line 9, .*'blocks\.4:100-120': channel 120 is out of range for "
                                                  r"'blocks\.4': valid channels are 0 to 111"),
    "value": ("[settings]\nparam = \"fourrier\"\n", r"line 4, \[settings\]: param = 'fourrier' is not one of .*"
                                                    r"did you mean 'fourier'\?"),
    "target key": ('targets = [{ target = "blocks.4:1", sead = 2 }]', r"line 9, .*targets\[0\]: unknown key 'sead'; "
                                                                      r"did you mean 'seeds'\?"),
    "model": ('model = "efficientnet_lite9"', r"line 8, .*unknown model 'efficientnet_lite9'"),
}
BASE = 'title = "bad"\n\n[settings]\nsteps = 2\n\n[[models]]\nname = "lite0"\nmodel = "efficientnet_lite0"\ntargets = ["blocks.4:0-3"]\n'


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_spec_mistakes_fail_before_rendering_naming_line_and_key(case, tmp_path, lite0):
    change, message = BAD_SPECS[case]
    if change.startswith("[settings]"):
        text = BASE.replace("[settings]\nsteps = 2\n", change)
    elif change.startswith("model"):
        text = BASE.replace('model = "efficientnet_lite0"', change)
    else:
        text = BASE.replace('targets = ["blocks.4:0-3"]', change)
    spec = write_spec(tmp_path, text)
    with pytest.raises(StudioError, match=message) as error:
        gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()  # nothing was created, let alone rendered


def test_cli_reports_a_spec_typo_in_one_line(tmp_path, capsys):
    spec = write_spec(tmp_path, BASE.replace("steps = 2", "steps = 2\nsize = 32\nlr = 0.05\ntranforms = \"none\""))
    assert cli.main(["gallery", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("studio: error: spec.toml line 7, [settings]: unknown key 'tranforms'; did you mean 'transforms'?")


def test_same_spec_and_seeds_give_identical_images(tmp_path, lite0):
    text = BASE.replace("steps = 2", "steps = 3\nsize = 32\nseeds = [0, 1]").replace("0-3", "0-1")
    spec = write_spec(tmp_path, text)
    first = gallery.run(spec, tmp_path / "a", models={"efficientnet_lite0": lite0}, progress=False)
    second = gallery.run(spec, tmp_path / "b", models={"efficientnet_lite0": lite0}, progress=False)
    assert sorted(first.rendered) == sorted(second.rendered) and len(first.rendered) == 4  # 2 units x 2 seeds
    images = {}
    for item in first.rendered:
        a, b = iio.imread(tmp_path / "a" / f"{item}.png"), iio.imread(tmp_path / "b" / f"{item}.png")
        assert np.array_equal(a, b), item
        images[item] = a
    assert not np.array_equal(images["lite0/blocks.4/c000_s0"], images["lite0/blocks.4/c000_s1"])  # seeds differ


def test_batcher_halves_on_out_of_memory_and_keeps_the_smaller_size():
    calls = []

    def render(part):
        calls.append(len(part))
        if len(part) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return [x * 10 for x in part]

    batcher = batching.Batcher(8)
    results = list(batcher.run(list(range(11)), render))
    assert [x for part, _ in results for x in part] == list(range(11))  # every item once, in order
    assert all(result == [x * 10 for x in part] for part, result in results)
    assert calls == [8, 4, 2, 2, 2, 2, 2, 1] and batcher.size == 2 and batcher.halvings == [(8, 4), (4, 2)]

    def never(part):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    with pytest.raises(StudioError, match="Out of memory with a batch of one image"):
        list(batching.Batcher(2).run([1, 2], never))


def test_gallery_run_recovers_from_out_of_memory_mid_batch(tmp_path, lite0, monkeypatch):
    real = gallery.rendering.optimize

    def flaky(model, targets, *args, **settings):  # an OOM two steps into any batch of more than two images
        for snapshot in real(model, targets, *args, **settings):
            if len(targets) > 2 and snapshot.step >= 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
            yield snapshot

    monkeypatch.setattr(gallery.rendering, "optimize", flaky)
    spec = write_spec(tmp_path, BASE.replace("steps = 2", "steps = 4\nsize = 32\nbatch = 4"))
    report = gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)
    assert report.halvings == [(4, 2)]
    assert sorted(report.rendered) == [f"lite0/blocks.4/c{c:03d}_s0" for c in range(4)]
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "out").rglob("*_s0.json"))]
    assert [s["batch"]["size"] for s in sidecars] == [2, 2, 2, 2]


def test_batch_for_memory():
    gib = 1 << 30
    assert batching.batch_for_memory(80 * gib, 2 * gib, 0.25 * gib) == 128  # 62 GiB free for 0.25 GiB images
    assert batching.batch_for_memory(8 * gib, 1 * gib, 3 * gib) == 1
    assert batching.batch_for_memory(80 * gib, 0, 1e6) == batching.MAX_AUTO_BATCH


def test_two_models_with_random_weights_resume(tmp_path, lite0):
    text = BASE.replace("steps = 2", "steps = 2\nsize = 32").replace("0-3", "0") + (
        '\n[[models]]\nmodel = "torchvision:resnet18"\npretrained = false\ntargets = ["layer2:0-1"]\n')
    spec = write_spec(tmp_path, text)
    first = gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)
    assert sorted(first.rendered) == ["lite0/blocks.4/c000_s0", "torchvision_resnet18/layer2/c000_s0",
                                      "torchvision_resnet18/layer2/c001_s0"]
    # Random weights come from init_seed, so their hash (part of every unit's key) is the same next time.
    second = gallery.run(spec, tmp_path / "out", models={"efficientnet_lite0": lite0}, progress=False)
    assert second.rendered == [] and len(second.skipped) == 3
    hashes = {m["name"]: m["weights_sha256"] for m in json.loads((tmp_path / "out/manifest.json").read_text())["models"]}
    assert len(set(hashes.values())) == 2


def test_example_specs_are_valid(lite0, photos, tmp_path):
    """Every spec in gallery/, read from a copy beside an out/ folder holding what the README's commands make
    first (the concept sheet's dictionary and index, here from three photos)."""
    import studio
    from studio.io import write_image

    shutil.copytree(REPO / "gallery", tmp_path / "gallery")
    for name, photo in list(photos.items())[:3]:
        write_image(tmp_path / "out" / "crops" / f"{name}.png", photo)
    dictionary = studio.learn_concepts(lite0, tmp_path / "out" / "crops", "blocks.5", tmp_path / "out" / "blocks5.concepts",
                                       concepts=64, epochs=1, workers=0, progress=False)
    studio.build_index(lite0, tmp_path / "out" / "crops", str(dictionary.path), tmp_path / "out" / "concepts.sqlite",
                       workers=0, progress=False)
    for path in sorted((tmp_path / "gallery").glob("*.toml")):
        spec = load_spec(path, models={"efficientnet_lite0": lite0})
        assert spec.items, path
