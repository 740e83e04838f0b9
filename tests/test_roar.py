"""Remove and retrain: degrading matches its definition, SmoothGrad-Squared and VarGrad match their math,
retraining is deterministic, faithful estimates beat random removal on a set whose label lives in a known
square (and edges do not), a killed run resumes without retraining, and the CLI writes its report."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import studio
from studio.cli import main
from studio.retraining import Recipe, RoarSpec, degrade, demo_cnn, demo_dataset, roar, train, write_roar_report
from studio.retraining import benchmark

QUICK = Recipe(epochs=8, batch=32, lr=5e-3)


def test_degrading_replaces_the_top_fraction_by_the_mean_and_keeping_replaces_the_rest():
    images = torch.arange(2 * 2 * 16, dtype=torch.float32).view(2, 2, 4, 4)
    maps = torch.stack([torch.arange(16.0).view(4, 4), -torch.arange(16.0).view(4, 4)])
    means = torch.tensor([-1.0, -2.0])
    removed = degrade(images, maps, 0.25, False, means)
    top = torch.zeros(2, 4, 4, dtype=torch.bool)
    top[0].view(-1)[12:] = True  # the 4 largest of 16
    top[1].view(-1)[:4] = True
    for channel, mean in enumerate(means):
        assert torch.equal(removed[:, channel][top], torch.full((8,), mean.item()))
        assert torch.equal(removed[:, channel][~top], images[:, channel][~top])
    kept = degrade(images, maps, 0.25, True, means)
    assert torch.equal(kept[:, 0][top], images[:, 0][top]) and (kept[:, 0][~top] == -1).all()


class Squares(nn.Module):
    """``f(x) = sum w * x ** 2`` for both logits (the second negated): the input gradient is ``2 w x``."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        value = (self.w * x ** 2).flatten(1).sum(1)
        return torch.stack([value, -value], 1)


@pytest.mark.parametrize("method", ["smoothgrad", "smoothgrad_squared", "vargrad"])
def test_noise_methods_are_their_statistic_of_the_noisy_gradients(method):
    shape = (3, 5, 6)
    model = studio.load_model(Squares(shape), device="cpu", input=studio.InputSpec((5, 6), mean=(0.0,) * 3, std=(1.0,) * 3))
    image = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    samples, noise = 64, 0.2
    found = studio.attribution.explain(model, image, 0, method, samples=samples, noise=noise, seed=3, batch_size=7)
    draws = torch.randn((samples, *shape), generator=torch.Generator().manual_seed(3))
    sigma = noise * (image.max() - image.min())
    gradients = 2 * model.module.w.detach() * (image + sigma * draws)  # [samples, C, H, W]
    expected = {"smoothgrad": gradients.abs().mean(0), "smoothgrad_squared": gradients.pow(2).mean(0),
                "vargrad": gradients.var(0, unbiased=False)}[method]
    torch.testing.assert_close(found.per_channel[0], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(found.maps[0], expected.amax(0), rtol=1e-4, atol=1e-6)
    if method == "vargrad":  # the variance of 2 w (x + sigma e) is 4 w^2 sigma^2, whatever x
        torch.testing.assert_close(found.per_channel[0].mean(), (4 * model.module.w.detach() ** 2 * sigma ** 2).mean(),
                                   rtol=0.1, atol=0)


def test_retraining_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    data = demo_dataset(128, 64, size=24, seed=1)
    state = torch.random.get_rng_state()
    nets = [train(demo_cnn, data.train_images, data.train_labels, 2, Recipe(epochs=2, batch=32), seed)
            for seed in (5, 5, 6)]
    assert torch.equal(torch.random.get_rng_state(), state)
    same, other = (all(torch.equal(a, b) for a, b in zip(nets[0].state_dict().values(), net.state_dict().values()))
                   for net in nets[1:])
    assert same and not other


@pytest.fixture(scope="module")
def demo_benchmark(tmp_path_factory):
    """The demo benchmark, small: SmoothGrad-Squared against random removal and Sobel edges."""
    spec = RoarSpec(demo_dataset(256, 128, size=24, seed=0), demo_cnn, "demo-cnn", QUICK,
                    ["smoothgrad_squared", "random", "sobel"], {"smoothgrad_squared": {"samples": 8}},
                    fractions=(0.1, 0.5, 0.9), modes=("roar", "kar"))
    out = tmp_path_factory.mktemp("roar")
    return roar(spec, out, progress=False), out


def test_faithful_estimates_remove_the_label_at_smaller_fractions_than_random_and_edges_do_not(demo_benchmark):
    result, _ = demo_benchmark
    for row in result.table():
        print(f"{row['mode']} {row['estimate']:<20} {row['fraction']:.1f} {row['accuracy']:.3f}")
    assert min(result.clean) > 0.9 and result.chance < 0.6
    near_chance = result.chance + 0.12

    def first_at_chance(estimate: str) -> float:
        fractions, means, _ = result.curve(estimate, "roar")
        return next((f for f, m in zip(fractions, means) if m <= near_chance), 2.0)
    assert first_at_chance("smoothgrad_squared") == 0.1 < first_at_chance("random")
    _, random_roar, _ = result.curve("random", "roar")
    _, sobel_roar, _ = result.curve("sobel", "roar")
    assert all(s > r - 0.1 for s, r in zip(sobel_roar, random_roar))  # edges are everywhere: no better than chance
    _, kept, _ = result.curve("smoothgrad_squared", "kar")
    _, random_kar, _ = result.curve("random", "kar")
    assert kept[1] > random_kar[1] + 0.2  # keeping its top 10 % keeps the label; 10 % at random does not


def test_the_report_holds_the_table_the_curves_and_the_settings(demo_benchmark, tmp_path):
    result, _ = demo_benchmark
    written = write_roar_report(result, tmp_path)
    assert [p.name for p in written] == ["roar.csv", "roar.json", "roar.png"]
    record = json.loads((tmp_path / "roar.json").read_text())
    assert len(record["rows"]) == 3 * 3 * 2 and record["settings"]["estimates"][-1] == "sobel"
    assert (tmp_path / "roar.csv").read_text().splitlines()[0] == "estimate,mode,fraction,accuracy,spread,repeats"
    assert studio.read_image(tmp_path / "roar.png").shape[0] == 3


def test_a_killed_run_resumes_without_retraining_finished_cells(tmp_path, monkeypatch):
    spec = RoarSpec(demo_dataset(96, 48, size=18, seed=2), demo_cnn, "demo-cnn", Recipe(epochs=1, batch=32),
                    ["random", "sobel"], fractions=(0.2, 0.6), modes=("roar",))
    trained = []
    real = benchmark.train

    def dies_at_the_fourth(*args, **kwargs):
        if len(trained) == 3:
            raise KeyboardInterrupt  # what a kill between two cells leaves
        trained.append(args[5])
        return real(*args, **kwargs)
    monkeypatch.setattr(benchmark, "train", dies_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        roar(spec, tmp_path, progress=False)
    with open(tmp_path / "cells.jsonl", "a") as cells:
        cells.write('{"estimate": "sobel", "mo')  # and a line cut off mid-write
    monkeypatch.setattr(benchmark, "train", real)
    counted = []
    monkeypatch.setattr(benchmark, "train", lambda *a, **k: counted.append(1) or real(*a, **k))
    resumed = roar(spec, tmp_path, progress=False)
    assert len(trained) == 3 and len(counted) == 5 - 3  # 1 clean + 2 x 2 cells; the 3 finished ones kept
    fresh = roar(spec, tmp_path / "again", progress=False)
    assert [c.accuracy for c in resumed.cells] == [c.accuracy for c in fresh.cells]
    other = RoarSpec(spec.data, demo_cnn, "demo-cnn", Recipe(epochs=2, batch=32), ["random"], fractions=(0.2,))
    with pytest.raises(studio.StudioError, match="other settings"):
        roar(other, tmp_path, progress=False)


def test_studio_roar_runs_a_spec_and_refuses_bad_ones_in_one_sentence(tmp_path, capsys):
    spec = tmp_path / "roar.toml"
    spec.write_text('[data]\ndataset = "demo"\ntrain = 64\ntest = 32\nsize = 16\n[training]\nepochs = 1\n'
                    '[benchmark]\nestimates = ["saliency", "random"]\nfractions = [0.5]\nmodes = ["roar", "kar"]\n')
    assert main(["roar", str(spec), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "clean accuracy" in printed and "ROAR" in printed and "KAR" in printed
    assert (tmp_path / "report" / "roar.png").is_file()
    factory = tmp_path / "net.py"
    factory.write_text("import torch\n\ndef make(channels, classes):\n    return torch.nn.Sequential("
                       "torch.nn.Flatten(), torch.nn.LazyLinear(classes))\n")
    for text, message in (('[model]\nfactory = "net.py:make"\n', "trust = true in [model]"),
                          ('[benchmark]\nestimate = ["saliency"]\n', "no key 'estimate'"),
                          ('[benchmark]\nestimates = ["salency"]\n', "Unknown"),
                          ('[benchmark]\nfractions = [0, 0.5]\n', "strictly between 0 and 1"),
                          ('[options.saliency]\nsamples = 3\n', "do not apply to saliency")):
        spec.write_text(text)
        assert main(["roar", str(spec), "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
