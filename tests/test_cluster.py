"""Galleries and dataset-example indexes on a real Ray cluster started here (``ray start --head`` on a free
port, with logical CPUs for two workers of this process's thread count): the same pixels and the same index as
one process, each item written once by the driver, a worker killed mid-run replaced and its batch run again."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import studio
from studio.models import parse_input
from tests.synthetic import PatternNet, ScarceMemoryNet, pattern_images

RAY = Path(sys.executable).parent / "ray"
#: Each worker takes as many CPUs as this process has threads; the cluster holds two such workers.
THREADS = torch.get_num_threads()
SPEC = {"title": "cluster", "settings": {"steps": 24, "size": 32, "seeds": [0, 1], "batch": 2, "transforms": "none"},
        "models": [{"name": "toy", "model": "toy", "targets": ["mix:0-7"]}]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on this machine with room for two workers, joined by its address, stopped afterwards."""
    import ray

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "RAY_AUTH_MODE": "disabled"}
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", f"--num-cpus={2 * THREADS}", "--include-dashboard=false",
                    "--disable-usage-stats"], check=True, env=env, capture_output=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        ray.shutdown()
        subprocess.run([str(RAY), "stop", "--force"], env=env, capture_output=True)


@pytest.fixture(scope="module")
def toy() -> studio.StudioModel:
    return studio.load_model(PatternNet(), device="cpu", input=parse_input("3x32x32", "0.5", "0.25"))


@pytest.fixture(scope="module")
def alone(tmp_path_factory, toy) -> Path:
    out = tmp_path_factory.mktemp("alone")
    studio.gallery.run(SPEC, out, models={"toy": toy}, progress=False)
    return out


def images(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): iio.imread(p) for p in sorted(out.glob("toy/**/*_s*.png"))}


def test_a_cluster_renders_the_same_pixels_as_one_process(cluster, toy, alone, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    report = studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=cluster, workers=2)
    assert sorted(report.rendered) == sorted(f"toy/mix/c{c:02d}_s{s}" for c in range(8) for s in (0, 1))
    ours, reference = images(tmp_path), images(alone)
    assert ours.keys() == reference.keys() and len(ours) == 16
    assert all(np.array_equal(ours[name], reference[name]) for name in ours)
    again = studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=cluster, workers=2)
    assert again.rendered == [] and len(again.skipped) == 16


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(cluster, toy, alone, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    killed = kill_a_worker_after_the_first_result(monkeypatch)
    report = studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=cluster, workers=2)
    assert killed and len(report.rendered) == 16 and len(set(report.rendered)) == 16
    ours, reference = images(tmp_path), images(alone)
    assert ours.keys() == reference.keys() and all(np.array_equal(ours[name], reference[name]) for name in ours)


def test_a_worker_out_of_memory_halves_its_batch_as_one_process_does(cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    scarce = studio.load_model(ScarceMemoryNet(room=2), device="cpu", input=parse_input("3x32x32", "0.5", "0.25"))
    spec = {**SPEC, "settings": {**SPEC["settings"], "batch": 4}}
    here = studio.gallery.run(spec, tmp_path / "here", models={"toy": scarce}, progress=False)
    there = studio.gallery.run(spec, tmp_path / "ray", models={"toy": scarce}, progress=False, ray=cluster, workers=2)
    assert here.halvings == [(4, 2)] and there.halvings == [(4, 2)] * 4  # each job starts at the spec's batch
    assert sorted(there.rendered) == sorted(here.rendered) and len(here.rendered) == 16
    ours, theirs = images(tmp_path / "ray"), images(tmp_path / "here")
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[name], theirs[name]) for name in ours)


def kill_a_worker_after_the_first_result(monkeypatch) -> list[int]:
    """Make every WorkerPool kill its last worker's process once the first result is back, while the others are
    still running; returns the process ids killed."""
    import ray

    from studio.cluster import WorkerPool

    killed, original = [], WorkerPool.map

    def map_and_kill(self, function, tasks, ordered=False):
        pids = ray.get([actor.pid.remote() for actor in self.actors])
        for count, result in enumerate(original(self, function, tasks, ordered)):
            if count == 0:
                os.kill(pids[-1], signal.SIGKILL)
                killed.append(pids[-1])
            yield result

    monkeypatch.setattr(WorkerPool, "map", map_and_kill)
    return killed


@pytest.fixture(scope="module")
def folder(tmp_path_factory, toy) -> Path:
    """Twenty pattern photos, two of them copies (tied scores), and a file that is no image."""
    root = tmp_path_factory.mktemp("photos")
    images = pattern_images(toy.module, 18)
    for number, image in enumerate([*images, images[3], images[7]]):
        iio.imwrite(root / f"p{number:02d}.png", (image.permute(1, 2, 0) * 255).round().byte().numpy())
    (root / "broken.png").write_bytes(b"no image")
    return root


def index_rows(path: Path) -> dict[str, list]:
    """Every row of every table of an index, sorted."""
    connection = sqlite3.connect(path)
    try:
        return {table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("meta", "layers", "images", "examples", "statistics")}
    finally:
        connection.close()


@pytest.fixture(scope="module")
def index_alone(tmp_path_factory, toy, folder) -> dict[str, list]:
    out = tmp_path_factory.mktemp("index") / "alone.sqlite"
    with pytest.warns(UserWarning, match="Skipped an unreadable image"):
        studio.build_index(toy, folder, "detect,mix", out, top_k=4, batch=3, workers=0, progress=False)
    return index_rows(out)


def test_an_index_built_on_the_cluster_is_the_one_one_process_builds(cluster, toy, folder, index_alone, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    out = tmp_path / "ray.sqlite"
    with pytest.warns(UserWarning, match="Skipped an unreadable image: Cannot read .*broken.png"):
        info = studio.build_index(toy, folder, "detect,mix", out, top_k=4, batch=3, progress=False, ray=cluster,
                                  workers=2)
    assert info.images == 21 and info.unreadable == 1
    ours = index_rows(out)
    assert ours == index_alone and len(ours["examples"]) == 4 * (8 + 24)
    # a rerun finds nothing new and starts no workers
    again = studio.build_index(toy, folder, "detect,mix", out, top_k=4, batch=3, progress=False, ray=cluster,
                               workers=2)
    assert again.images == 21 and index_rows(out) == index_alone


def test_an_index_survives_a_worker_killed_mid_run(cluster, toy, folder, index_alone, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    killed = kill_a_worker_after_the_first_result(monkeypatch)
    out = tmp_path / "killed.sqlite"
    with pytest.warns(UserWarning, match="Skipped an unreadable image"):
        studio.build_index(toy, folder, "detect,mix", out, top_k=4, batch=3, progress=False, ray=cluster, workers=2)
    assert killed and index_rows(out) == index_alone


def test_more_workers_than_the_cluster_holds_are_refused(cluster, toy, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(studio.StudioError, match=rf"holds 2 worker\(s\) \({2 * THREADS} CPUs, {THREADS} per worker"
                                                 r".*give --workers 2"):
        studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=cluster, workers=3)


def test_without_ray_the_option_says_how_to_install_it(toy, folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(studio.StudioError, match=r"pip install 'feature-studio\[ray\]'"):
        studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=True)
    with pytest.raises(studio.StudioError, match=r"pip install 'feature-studio\[ray\]'"):
        studio.build_index(toy, folder, "mix", tmp_path / "index.sqlite", progress=False, ray=True)


def test_the_cli_indexes_on_the_cluster(cluster, folder, index_alone, tmp_path, monkeypatch, capsys):
    from studio.cli import main

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    factory = tmp_path / "net.py"
    factory.write_text("from tests.synthetic import PatternNet as model\n")
    out = tmp_path / "cli.sqlite"
    assert main(["index", f"{factory}:model", str(folder), "--input", "3x32x32", "--mean", "0.5", "--std", "0.25",
                 "--device", "cpu", "--layers", "detect,mix", "--out", str(out), "--top-k", "4", "--batch", "3",
                 "--ray", cluster, "--workers", "2"]) == 0
    assert "21 images seen, 1 unreadable" in capsys.readouterr().out
    rows = index_rows(out)
    assert rows["examples"] == index_alone["examples"] and rows["statistics"] == index_alone["statistics"]


def test_a_driver_killed_mid_run_resumes_with_the_same_command(cluster, lite0, tmp_path):
    spec = tmp_path / "lite0.toml"
    spec.write_text('title = "resume"\n[settings]\nsteps = 6\nsize = 32\nseeds = [0]\nbatch = 1\n'
                    '[output]\ndir = "out"\n[[models]]\nname = "lite0"\nmodel = "efficientnet_lite0"\n'
                    'targets = ["blocks.2:0-7"]\n')
    command = [sys.executable, "-m", "studio", "gallery", str(spec), "--ray", cluster, "--workers", "2", "--quiet"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sidecars = tmp_path / "out" / "lite0" / "blocks.2"
    deadline = time.monotonic() + 240
    while len(list(sidecars.glob("*.json"))) < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    first = {p.name for p in sidecars.glob("*.json")}
    assert 2 <= len(first) < 8, first  # killed part way
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert f"skipped {len(first)} already complete" in finished.stdout
    reference = studio.gallery.run(spec, tmp_path / "alone", models={"efficientnet_lite0": lite0}, progress=False)
    ours = {p.name: iio.imread(p) for p in sidecars.glob("*.png")}
    theirs = {p.name: iio.imread(p) for p in (tmp_path / "alone" / "lite0" / "blocks.2").glob("*.png")}
    assert len(reference.rendered) == 8 and ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[name], theirs[name]) for name in ours)
