"""Galleries on a real Ray cluster started here (``ray start --head`` on a free port, with logical CPUs for two
workers of this process's thread count): the same
pixels as one process, each item written once by the driver, a worker killed mid-run replaced and its
batch rendered again."""

from __future__ import annotations

import os
import signal
import socket
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
from tests.synthetic import PatternNet

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
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from studio.gallery import cluster as pool_module

    killed = []
    original = pool_module.WorkerPool.render

    def render_and_kill(self, jobs, output):
        """Kill one worker process once the first job is back, while the others are still running."""
        pids = ray.get([actor.pid.remote() for actor in self.actors])
        for count, result in enumerate(original(self, jobs, output)):
            if count == 0:
                os.kill(pids[-1], signal.SIGKILL)
                killed.append(pids[-1])
            yield result

    monkeypatch.setattr(pool_module.WorkerPool, "render", render_and_kill)
    report = studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=cluster, workers=2)
    assert killed and len(report.rendered) == 16 and len(set(report.rendered)) == 16
    ours, reference = images(tmp_path), images(alone)
    assert ours.keys() == reference.keys() and all(np.array_equal(ours[name], reference[name]) for name in ours)


def test_more_workers_than_the_cluster_holds_are_refused(cluster, toy, tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(studio.StudioError, match=rf"holds 2 worker\(s\) \({2 * THREADS} CPUs, {THREADS} per worker"
                                                 r".*give --workers 2"):
        studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=cluster, workers=3)


def test_without_ray_the_option_says_how_to_install_it(toy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(studio.StudioError, match=r"pip install 'feature-studio\[ray\]'"):
        studio.gallery.run(SPEC, tmp_path, models={"toy": toy}, progress=False, ray=True)


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
