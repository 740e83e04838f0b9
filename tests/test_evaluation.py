"""Scoring heat maps: the pointing game's geometry, Adebayo et al.'s randomisation score, agreement with Quantus,
and ``studio.evaluate`` / ``studio evaluate`` writing a report that a killed run resumes."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

import studio
from studio.attribution.randomisation import cascade, redraw
from studio.cli import main
from studio.io import fit, read_image, write_image
from tests.conftest import hook_count
from tests.test_perturbation import SPEC, QuadrantNet, blocks


@pytest.fixture(scope="module")
def quadrant() -> studio.StudioModel:
    return studio.load_model(QuadrantNet(), device="cpu", input=SPEC)


def test_the_pointing_game_hits_within_the_tolerance_and_weighs_the_mass_inside():
    maps = torch.zeros(4, 40, 60)
    maps[0, 10, 20] = 1.0                      # inside the box
    maps[1, 10, 36] = 1.0                      # 6 px right of it: a hit at tolerance 6, a miss at 5
    maps[2] = 0.5                              # flat: every pixel a peak
    maps[3, 10, 20], maps[3, 30, 50] = 1.0, 1.0  # two peaks, one far outside
    maps[3, 12, 22] = -4.0                     # negative evidence counts for no mass
    box = (15, 5, 31, 20)                      # x0, y0, x1, y1: columns 15-30, rows 5-19
    near = studio.pointing_game(maps, [box] * 4, tolerance=6)
    assert near.hits.tolist() == [True, True, False, False]
    assert studio.pointing_game(maps, [box] * 4, tolerance=5).hits.tolist() == [True, False, False, False]
    torch.testing.assert_close(near.energy, torch.tensor([1.0, 0.0, 16 * 15 / (40 * 60), 0.5]))
    assert studio.pointing_game(maps[2:3], [(0, 0, 60, 40)], tolerance=0).hits.item()  # a box over the whole map
    volume = torch.zeros(1, 8, 9, 10)
    volume[0, 2, 3, 4] = 1.0                   # z, y, x
    assert studio.pointing_game(volume, [(4, 3, 2, 5, 4, 3)], tolerance=0).hits.item()
    for bad, message in (((15, 5, 31), "4 numbers"), ((30, 5, 15, 20), "start before its end"),
                         ((0, 0, 61, 20), "inside the 60x40 map")):
        with pytest.raises(studio.StudioError, match=message):
            studio.pointing_game(maps[:1], [bad])
    with pytest.raises(studio.StudioError, match="one box per map"):
        studio.pointing_game(maps, [box])


def test_the_pointing_game_agrees_with_quantus_on_maps_with_one_peak():
    quantus = pytest.importorskip("quantus")
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(12, 1, 32, 32, generator=generator)
    boxes = [(int(x), int(y), int(x) + 12, int(y) + 10) for x, y in torch.randint(0, 20, (12, 2), generator=generator)]
    masks = np.zeros((12, 1, 32, 32))
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[0, y0:y1, x0:x1] = 1
    theirs = quantus.PointingGame(disable_warnings=True)(model=None, x_batch=np.zeros((12, 3, 32, 32)),
                                                         y_batch=np.zeros(12, dtype=int), a_batch=maps.numpy(),
                                                         s_batch=masks)
    ours = studio.pointing_game(maps[:, 0], boxes, tolerance=0).hits
    assert 0 < ours.sum() < 12 and ours.tolist() == [bool(v) for v in theirs]


def test_deletion_agrees_with_quantus_pixel_flipping(lite0, photos):
    """Quantus's PixelFlipping is the deletion curve: the same pixels removed to the same constant, scored by the
    same softmax. At 240 px and 12 steps its features per step (3 channels of each pixel) line up with ours."""
    quantus = pytest.importorskip("quantus")
    model = dataclasses.replace(lite0, spec=dataclasses.replace(lite0.spec, size=(240, 240)))
    photo = fit(photos["chelsea"], (240, 240))
    heat = torch.rand(240, 240, generator=torch.Generator().manual_seed(0))  # no ties: one order for both
    ours = studio.deletion_insertion(model, photo, heat, 285, steps=12, baseline="black")

    class Normalised(torch.nn.Module):
        def forward(self, x):
            return model.module(model.spec.normalise(x))

    flipping = quantus.PixelFlipping(features_in_step=3 * 240 * 240 // 12, perturb_baseline=0.0, normalise=False,
                                     disable_warnings=True)
    theirs = flipping(model=Normalised().eval(), x_batch=photo[None].numpy(), y_batch=np.array([285]),
                      a_batch=heat[None, None].numpy(), softmax=True, device="cpu")
    assert ours.deletion[0, 0] > 0.3 > ours.deletion[0, -1]  # the curve falls: something to agree on
    np.testing.assert_allclose(ours.deletion[0, 1:].numpy(), np.asarray(theirs)[0], atol=1e-5)


def test_redraw_keeps_each_tensors_mean_and_spread_and_the_cascade_runs_output_first(lite0):
    layer = torch.nn.Conv2d(64, 64, 3)
    before = layer.weight.detach().clone()
    redraw(layer, torch.Generator().manual_seed(0))
    after = layer.weight.detach()
    assert not torch.allclose(before, after)
    assert abs(after.mean() - before.mean()) < 0.05 * before.std() and abs(after.std() / before.std() - 1) < 0.02
    stages = cascade(lite0, 4)
    assert len(stages) == 4 and stages[0][0] == "classifier" and stages[-1][-1] == "conv_stem"
    assert sum(map(len, stages)) == sum(1 for _, m in lite0.module.named_modules()
                                        if any(True for _ in m.parameters(recurse=False)))


class Rooted(torch.nn.Module):
    """A model holding a parameter of its own (as a ViT holds its class token) besides a layer's."""

    def __init__(self) -> None:
        super().__init__()
        self.token = torch.nn.Parameter(torch.randn(3))
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.mean((2, 3)) + self.token)


def test_the_cascade_redraws_the_models_own_parameters_last_and_refuses_a_model_without_any():
    model = studio.load_model(Rooted(), device="cpu", input=SPEC)
    assert cascade(model, 4) == [["head"], [""]]
    empty = studio.load_model(torch.nn.Flatten(), device="cpu", input=SPEC)
    with pytest.raises(studio.StudioError, match="no parameters"):
        cascade(empty, 4)


def test_model_randomisation_scores_methods_that_read_the_weights_low(lite0, photos):
    """On chelsea, fully redrawn (measured Spearman: saliency 0.06, Grad-CAM 0.44, Grad-CAM++ 0.60 — Grad-CAM++'s
    closed-form weights keep only the sign of the class weights, so its map redraws the activations' layout)."""
    state = {k: v.clone() for k, v in lite0.module.state_dict().items()}
    photo = fit(photos["chelsea"], lite0.spec.size)
    saliency = studio.model_randomisation(lite0, photo, "saliency", 285)
    plus = studio.model_randomisation(lite0, photo, "gradcam++", 285)
    assert saliency.spearman.shape == (1, 4) and len(saliency.stages) == 4 and saliency.stages[-1] == "conv_stem"
    assert saliency.score.item() < 0.3 and plus.score.item() > saliency.score.item() + 0.3
    assert all(torch.equal(v, state[k]) for k, v in lite0.module.state_dict().items())  # the copy was redrawn
    assert hook_count(lite0.module) == 0


def test_evaluate_scores_every_method_by_every_metric_and_writes_the_report(quadrant, tmp_path):
    images = torch.stack([blocks(0), blocks(1)])
    rows = []
    evaluation = studio.evaluate(quadrant, images, ["occlusion", "saliency"], target=0, names=["a", "b"],
                                 boxes=[(0, 0, 16, 16)] * 2, options={"occlusion": {"window": 4, "stride": 4}},
                                 steps=8, stages=1, tolerance=0, on_row=rows.append)
    assert [row.key for row in evaluation.rows] == [("a", "occlusion"), ("a", "saliency"), ("b", "occlusion"),
                                                    ("b", "saliency")] and rows == evaluation.rows
    assert evaluation.metrics == ["deletion", "insertion", "road", "randomisation", "pointing"]
    table = evaluation.table()
    # the model reads the top-left quadrant only: both maps point there, and all their mass lies inside
    assert table["occlusion"]["pointing_hit"] == table["saliency"]["pointing_hit"] == 1.0
    assert table["saliency"]["pointing_energy"] == pytest.approx(1.0)
    assert all(row.target == evaluation.rows[0].target for row in evaluation.rows)  # one class for every method
    assert len(evaluation.rows[0].curves["deletion"]) == 9 == len(evaluation.axes["deletion"])

    files = studio.write_report(evaluation, tmp_path / "report")
    with open(files[0], newline="") as handle:
        table_rows = list(csv.DictReader(handle))
    assert len(table_rows) == 4 and float(table_rows[1]["pointing_energy"]) == pytest.approx(1.0)
    data = json.loads(files[1].read_text())
    assert data["better"]["deletion_auc"] == "lower" and data["summary"]["saliency"]["pointing_hit"] == 1.0
    assert [studio.attribution.evaluation.Row.from_dict(r) for r in data["rows"]] == evaluation.rows
    for picture in files[2:]:
        assert min(read_image(picture).shape[1:]) > 150  # a real plot, readable as an image

    again = studio.evaluate(quadrant, images, ["occlusion", "saliency"], target=0, names=["a", "b"],
                            boxes=[(0, 0, 16, 16)] * 2, steps=8, stages=1, done=evaluation.rows[:3],
                            on_row=rows.append, options={"occlusion": {"window": 4, "stride": 4}}, tolerance=0)
    assert len(rows) == 5 and again.rows[:3] == evaluation.rows[:3]  # only the missing row was computed
    with pytest.raises(studio.StudioError, match="pointing game needs"):
        studio.evaluate(quadrant, images, ["saliency"], ["pointing"], target=0)
    with pytest.raises(studio.StudioError, match="Unknown metric"):
        studio.evaluate(quadrant, images, ["saliency"], ["deletion", "roar"], target=0)


def test_studio_evaluate_writes_the_report_and_resumes_a_killed_run(tmp_path, photos, capsys):
    photo = tmp_path / "coffee.png"
    write_image(photo, photos["coffee"])
    (tmp_path / "boxes.json").write_text(json.dumps({"coffee.png": [60, 40, 380, 300]}))
    out = tmp_path / "report"
    command = ["evaluate", "efficientnet_lite0", str(photo), "--device", "cpu", "--methods", "saliency,gradcam",
               "--metrics", "deletion,insertion,pointing", "--boxes", str(tmp_path / "boxes.json"), "--curve-steps", "4",
               "--out", str(out)]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "pointing_hit" in printed and "metrics.csv" in printed
    lines = (out / "rows.jsonl").read_text().splitlines()
    assert len(lines) == 3  # the settings, then one row per map
    (out / "rows.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # killed while writing row 2
    assert main(command) == 0
    assert "resuming: 1 of 2" in capsys.readouterr().out
    with open(out / "metrics.csv", newline="") as handle:
        assert [row["method"] for row in csv.DictReader(handle)] == ["saliency", "gradcam"]
    assert [json.loads(line).get("method") for line in (out / "rows.jsonl").read_text().splitlines()] == [
        None, "saliency", "gradcam"]  # the cut-off line is gone: every line is whole
    assert main(command) == 0  # a finished report: nothing recomputed, the report written again
    assert "resuming: 2 of 2" in capsys.readouterr().out and (out / "curves.png").exists()
    assert main([*command, "--curve-steps", "8"]) == 2  # other settings: refused, not mixed in
    assert "other settings" in capsys.readouterr().err
    assert main([*command, "--samples", "8"]) == 2
    assert "--samples does not apply to saliency, gradcam" in capsys.readouterr().err
