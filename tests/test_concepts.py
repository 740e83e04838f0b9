"""Concept dictionaries: learned from a folder (planted atoms must come back), stored without pickle, read as
units by targets, rendered far above their best dataset example, indexed, explained by Grad-CAM, and in the
gallery and the CLI; on EfficientNet-Lite0 and a ViT token layer too."""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from tests.synthetic import PatternNet, pattern_images

import studio
from studio.cli import main
from studio.concepts.dictionary import Dictionary, load_dictionary
from studio.concepts.samples import folder_sha256
from studio.concepts.training import TrainingSettings, train
from studio.display import overlay
from studio.errors import StudioNote
from studio.exemplars.maps import example_maps
from studio.exemplars.folder import list_images
from studio.io import fit, preview, write_image
from studio.models import parse_input
from studio.targets import activations, layer_info, parse_target, parse_targets
from tests.conftest import hook_count

PATTERNS, CONCEPTS = 8, 16


def toy_model(net: PatternNet | None = None) -> studio.StudioModel:
    return studio.load_model(net or PatternNet(), device="cpu", input=parse_input("3x32x32", "0.5", "0.25"))


@pytest.fixture(scope="module")
def toy() -> studio.StudioModel:
    return toy_model()


@pytest.fixture(scope="module")
def folders(tmp_path_factory, toy) -> Path:
    """``mixed/``: 48 images of one or two patterns per cell (what the dictionary learns from);
    ``planted/``: two images per pattern with that pattern in every cell."""
    root = tmp_path_factory.mktemp("patterns")
    net = toy.module
    for index, image in enumerate(pattern_images(net, 48)):
        write_image(root / "mixed" / f"m{index:02d}.png", image)
    generator = torch.Generator().manual_seed(5)
    for pattern in range(PATTERNS):
        for copy in range(2):
            write_image(root / "planted" / f"p{pattern}_{copy}.png",
                        pattern_images(net, 1, contrast=0.2, only=pattern, generator=generator)[0])
    return root


@pytest.fixture(scope="module")
def dictionary(folders, toy) -> Dictionary:
    return studio.learn_concepts(toy, folders / "mixed", "mix", folders / "toy.concepts", concepts=CONCEPTS,
                                 top_k=2, epochs=100, workers=0, progress=False)


def matched_concepts(dictionary: Dictionary, atoms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each planted atom, the best cosine with a learned atom and that concept's index."""
    cosines = torch.nn.functional.normalize(dictionary.atoms, dim=1) @ atoms.T
    return cosines.max(0).values, cosines.argmax(0)


def test_a_topk_dictionary_recovers_the_planted_atoms(dictionary, toy, folders):
    cosines, _ = matched_concepts(dictionary, toy.module.atoms)
    assert (cosines >= 0.9).all(), cosines
    quality = dictionary.record["quality"]
    assert quality["r2"] > 0.9 and quality["l0"] == pytest.approx(2.0, abs=0.05)
    # every position has exactly two active concepts, so the frequencies add up to the mean L0
    assert float(dictionary.frequency.sum()) == pytest.approx(quality["l0"], abs=0.05)
    record, source = dictionary.record, dictionary.record["source"]
    assert (record["model"], record["layer"], record["method"], record["top_k"]) == ("PatternNet", "mix", "topk", 2)
    # R² and L0 are measured on the 16 positions of each of 4 images (a tenth) held out of training
    assert source["samples"] == 48 * 16 and source["images"] == 48 and source["held_out_images"] == 4
    assert quality["held_out"] == 4 * 16 and source["trained_on"] == 44 * 16
    assert source["sha256"] == folder_sha256(list_images(folders / "mixed", toy.spec), folders / "mixed")
    assert record["weights"] == studio.models.weights_sha256(toy.module)


def planted_rows(count: int, nonnegative: bool, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows that are sums of one to three of 16 known unit atoms over 32 channels with positive weights."""
    generator = torch.Generator().manual_seed(seed)
    atoms = torch.randn(16, 32, generator=generator)
    atoms = torch.nn.functional.normalize(atoms.abs() if nonnegative else atoms, dim=1)
    codes = torch.zeros(count, 16)
    for row in codes:
        chosen = torch.randperm(16, generator=generator)[:int(torch.randint(1, 4, (1,), generator=generator))]
        row[chosen] = 0.5 + 1.5 * torch.rand(len(chosen), generator=generator)
    return codes @ atoms, atoms


def as_dictionary(method: str, tensors: dict, mean: torch.Tensor, scale: float, top_k: int | None) -> Dictionary:
    return Dictionary(Path("rows.concepts"), method, tensors["atoms"], mean, scale, tensors.get("encoder_weight"),
                      tensors.get("encoder_bias"), tensors.get("threshold"), top_k)


@pytest.mark.parametrize("method", ["topk", "batchtopk"])
def test_the_exported_tensors_compute_what_the_trained_overcomplete_sae_computes(method):
    from studio.concepts.training import export, fit_sae

    rows, _ = planted_rows(2000, nonnegative=False)
    sae = fit_sae(rows, TrainingSettings(method, 32, top_k=3, epochs=3), torch.device("cpu"))
    ours = as_dictionary(method, export(sae, method), torch.zeros(32), 1.0, 3)
    with torch.no_grad():
        pre, codes = sae.encode(rows)
        torch.testing.assert_close(ours.encode(rows), pre)
        torch.testing.assert_close(ours.codes(ours.encode(rows)), codes)
        torch.testing.assert_close(ours.reconstruct(codes), sae.decode(codes))
    assert (codes > 0).sum(1).float().mean() > 1  # a trained code, not all zeros


def test_nmf_recovers_non_negative_atoms_and_batchtopk_reconstructs():
    rows, atoms = planted_rows(20000, nonnegative=True)  # positive atoms overlap (cosines near 0.6): many rows
    scale = float(rows.pow(2).mean().sqrt())
    nmf = as_dictionary("nmf", train(rows / scale, TrainingSettings("nmf", 16, epochs=30), torch.device("cpu")),
                        torch.zeros(32), scale, None)
    assert (matched_concepts(nmf, atoms)[0] >= 0.9).sum() >= 15
    rows, _ = planted_rows(3000, nonnegative=False)
    mean = rows.mean(0)
    scale = float((rows - mean).pow(2).mean().sqrt())
    settings = TrainingSettings("batchtopk", 32, top_k=3, epochs=60)
    batch = as_dictionary("batchtopk", train((rows - mean) / scale, settings, torch.device("cpu"), False),
                          mean, scale, 3)
    reconstructed = batch.reconstruct(batch.codes(batch.encode(rows)))
    assert 1 - (rows - reconstructed).pow(2).sum() / (rows - mean).pow(2).sum() > 0.9
    assert batch.threshold.shape == (1,) and batch.threshold.item() > 0


def test_the_nmf_code_is_the_non_negative_least_squares_solution():
    from scipy.optimize import nnls

    generator = torch.Generator().manual_seed(3)
    atoms = torch.rand(12, 20, generator=generator)
    true = torch.rand(6, 12, generator=generator) * (torch.rand(6, 12, generator=generator) < 0.3)  # sparse
    rows = true @ atoms + 0.05 * torch.randn(6, 20, generator=generator)
    dictionary = as_dictionary("nmf", {"atoms": atoms}, torch.zeros(20), 1.0, None)
    codes = dictionary.codes(dictionary.encode(rows))
    zeros = 0
    for row, code in zip(rows, codes):
        best, residual = nnls(atoms.T.double().numpy(), row.double().numpy())  # unique: the atoms are independent
        torch.testing.assert_close(code, torch.as_tensor(best, dtype=torch.float32), atol=2e-4, rtol=1e-3)
        assert torch.linalg.vector_norm(row - code @ atoms).item() == pytest.approx(residual, rel=1e-4, abs=1e-6)
        zeros += int((torch.as_tensor(best) == 0).sum())
    assert zeros > 6  # the constraint binds: some coordinates are zero at the optimum


def test_a_concept_value_is_its_sparse_code_with_the_pre_code_gradient(dictionary, toy, folders):
    image = pattern_images(toy.module, 1)
    acts = activations(toy, toy.spec.normalise(image), ["mix"])["mix"].detach().requires_grad_()
    values = dictionary.values(acts)
    codes = dictionary.codes(dictionary.encode(acts.movedim(1, -1))).movedim(-1, 1)
    assert torch.equal(values, codes) and ((values > 0).sum(1) <= 2).all()
    silent = int((values[0].amax((1, 2)) == 0).nonzero()[0])  # a concept active nowhere in this image
    values[0, silent].sum().backward()
    gradient = acts.grad.clone()
    acts.grad = None
    dictionary.encode(acts.movedim(1, -1))[0, ..., silent].sum().backward()
    assert gradient.abs().sum() > 0 and torch.allclose(gradient, acts.grad)


def test_a_dictionary_file_round_trips_without_pickle(dictionary, tmp_path):
    from safetensors import safe_open

    path = dictionary.path
    with safe_open(str(path), framework="pt") as opened:  # a safetensors file: a JSON header, then raw tensors
        assert json.loads(opened.metadata()["feature-studio"])["method"] == "topk"
        assert set(opened.keys()) == {"atoms", "mean", "scale", "encoder_weight", "encoder_bias", "frequency"}
    header = int.from_bytes(path.read_bytes()[:8], "little")
    assert json.loads(path.read_bytes()[8:8 + header])  # no pickle opcode anywhere before the tensor bytes
    again = studio.concepts.dictionary._read(path)
    for name in ("atoms", "mean", "encoder_weight", "encoder_bias", "frequency"):
        assert torch.equal(getattr(again, name), getattr(dictionary, name))
    assert again.scale == dictionary.scale and again.record == dictionary.record

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    pickled = tmp_path / "evil.concepts"
    pickled.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(studio.StudioError, match="is not a concept dictionary"):
        load_dictionary(pickled)
    assert not marker.exists()
    truncated = tmp_path / "cut.concepts"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(studio.StudioError, match="is not a concept dictionary"):
        load_dictionary(truncated)
    from safetensors.torch import save_file

    tensors = {name: getattr(dictionary, field) for name, field in
               (("atoms", "atoms"), ("mean", "mean"), ("encoder_weight", "encoder_weight"), ("encoder_bias", "encoder_bias"))}
    tensors["scale"] = torch.tensor([dictionary.scale])
    record = json.dumps({**dictionary.record, "format": "feature-studio/concepts 1"})
    cases = {"no record": ({}, tensors, "without a Feature Studio record"),
             "another format": ({"feature-studio": json.dumps({"format": "other 9"})}, tensors, "in format 'other 9'"),
             "a list record": ({"feature-studio": "[1, 2]"}, tensors, "without a Feature Studio record"),
             "no encoder": ({"feature-studio": record}, {k: v for k, v in tensors.items() if k != "encoder_bias"},
                            "incomplete concept dictionary"),
             "wrong shapes": ({"feature-studio": record}, tensors | {"mean": torch.zeros(5)}, r"inconsistent tensors \(mean\)"),
             "not finite": ({"feature-studio": record}, tensors | {"scale": torch.tensor([float("nan")])}, "non-finite")}
    for name, (metadata, content, message) in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.concepts"
        save_file(content, str(bad), metadata=metadata)
        with pytest.raises(studio.StudioError, match=message):
            load_dictionary(bad)
    with pytest.raises(studio.StudioError, match="No concept dictionary at .*learn one with `studio concepts"):
        load_dictionary(tmp_path / "missing.concepts")
    with pytest.raises(studio.StudioError, match="with the .concepts ending"):
        studio.concepts.dictionary.save_dictionary(tmp_path / "x.safetensors", {}, {})


def test_concept_targets_read_like_channels_of_a_layer(dictionary, toy, lite0, monkeypatch):
    monkeypatch.chdir(dictionary.path.parent)
    target = parse_target("toy.concepts:3@1,2", toy)
    assert (target.layer, target.channel, target.position, target.concepts) == ("mix", 3, (1, 2), str(dictionary.path))
    assert target.name == "toy.concepts:3@1,2" and target.key == f"mix#concepts={dictionary.path}"
    assert layer_info(toy, target.layer_key).describe() == "map 4x4, 16 concepts of mix"
    assert [t.channel for t in parse_targets("toy.concepts:0-3,9", toy)] == [0, 1, 2, 3, 9]
    assert len(parse_targets("toy.concepts:*", toy)) == CONCEPTS
    with pytest.raises(studio.StudioError, match="Concept 16 is out of range for 'toy.concepts': valid concepts are 0 to 15"):
        parse_target("toy.concepts:16", toy)
    with pytest.raises(studio.StudioError, match="No concept dictionary at .*other.concepts"):
        parse_target("other.concepts:1", toy)
    with pytest.raises(studio.StudioError, match="reads layer 'mix' of PatternNet, which efficientnet_lite0 does not have"):
        parse_target("toy.concepts:1", lite0)
    with pytest.raises(studio.StudioError, match="reads 24 channels of 'mix', but PatternNet has 16 there"):
        parse_target("toy.concepts:1", toy_model(PatternNet(channels=16)))
    with pytest.warns(StudioNote, match="learned on other weights"):
        parse_target("toy.concepts:1", toy_model(PatternNet(seed=1)))


def test_a_concept_render_rises_far_above_its_best_dataset_example(dictionary, toy, folders):
    index = folders / "concepts.sqlite"
    studio.build_index(toy, folders, str(dictionary.path), index, top_k=4, workers=0, progress=False)
    _, concepts = matched_concepts(dictionary, toy.module.atoms)
    unit = f"{dictionary.path}:{int(concepts[0])}"
    result = studio.render(toy, unit, steps=64, transforms="none")
    best = studio.unit_statistics(index, unit, toy).max_mean  # the largest mean over positions of any image
    assert result.clean_activations.item() > 2 * best > 0
    assert hook_count(toy.module) == 0


def test_the_index_ranks_the_planted_images_first_for_their_concept(dictionary, toy, folders):
    """64 images, 2 planted per pattern: by chance both would be among a concept's top 6 one time in 100."""
    index = folders / "ranking.sqlite"
    studio.build_index(toy, folders, str(dictionary.path), index, top_k=6, workers=0, progress=False)
    _, concepts = matched_concepts(dictionary, toy.module.atoms)
    first_two = 0
    for pattern, concept in enumerate(concepts.tolist()):
        names = [example.path.name for example in studio.examples(index, f"{dictionary.path}:{concept}", toy)]
        planted = {f"p{pattern}_0.png", f"p{pattern}_1.png"}
        assert planted <= set(names), (pattern, names)
        first_two += set(names[:2]) == planted
    assert first_two >= PATTERNS - 2
    stats = studio.unit_statistics(index, f"toy.concepts:{int(concepts[0])}")  # by file name, without a model
    assert stats.images == 64


def test_grad_cam_and_saliency_of_a_concept_find_the_cell_that_holds_it(dictionary, toy):
    net = toy.module
    _, concepts = matched_concepts(dictionary, net.atoms)
    image = torch.full((1, 3, 32, 32), 0.5)
    image[:, :, 8:16, 16:24] = pattern_images(net, 1, contrast=0.2, only=2)[:, :, 8:16, 16:24]
    unit = f"{dictionary.path}:{int(concepts[2])}"
    cam = studio.explain(toy, image, unit, method="gradcam")
    assert cam.layer == "mix"
    assert divmod(int(cam.maps[0].argmax()), 32) >= (8, 16) and divmod(int(cam.maps[0].argmax()), 32) < (16, 24)
    saliency = studio.attribute(toy, image, unit, method="saliency")[0]
    inside = saliency[8:16, 16:24].sum() / saliency.sum()
    assert inside > 0.9
    assert hook_count(net) == 0


def test_a_gallery_renders_every_concept_with_its_dictionarys_numbers(dictionary, toy, folders):
    spec = folders / "specs" / "concepts.toml"
    spec.parent.mkdir(exist_ok=True)
    studio.build_index(toy, folders, str(dictionary.path), spec.parent / "examples.sqlite", top_k=4, workers=0,
                       progress=False)
    spec.write_text('title = "toy concepts"\n[settings]\nsteps = 8\nsize = 32\ntransforms = "none"\n'
                    '[output]\ndir = "out"\n[examples]\nindex = "examples.sqlite"\ncount = 3\n'
                    '[[models]]\nname = "toy"\nmodel = "toy"\nconcepts = "../toy.concepts"\n')
    report = studio.gallery.run(spec, models={"toy": toy}, progress=False)
    manifest = json.loads((spec.parent / "out" / "manifest.json").read_text())
    assert [item["target"] for item in manifest["items"]] == [f"toy.concepts:{c}" for c in range(CONCEPTS)]
    best = studio.unit_statistics(spec.parent / "examples.sqlite", f"{dictionary.path}:5", toy).max_mean
    assert manifest["items"][5]["dataset_max"] == pytest.approx(best) and len(manifest["items"][5]["examples"]) == 3
    marker = json.loads((spec.parent / "out" / manifest["items"][5]["page"].replace(".html", ".examples.json")).read_text())
    shown = studio.examples(spec.parent / "examples.sqlite", f"{dictionary.path}:5", toy)[:3]
    heat = example_maps(toy, shown[:1], f"{dictionary.path}:5")[0]
    expected = fit(overlay(preview(shown[0].crop()), heat, scale=shown[0].score), (marker["tile"],) * 2, cover=False)
    written = torch.as_tensor(iio.imread(spec.parent / "out" / marker["examples"][0]["map"])).permute(2, 0, 1) / 255
    assert (written - expected).abs().max() <= 1 / 255 + 1e-6
    numbers = manifest["items"][5]["concept"]
    assert numbers["sha256"] == dictionary.sha256 and numbers["frequency"] == pytest.approx(float(dictionary.frequency[5]))
    assert numbers["r2"] == dictionary.record["quality"]["r2"]
    page = (spec.parent / "out" / manifest["items"][5]["page"]).read_text()
    assert f"concept 5: active at {float(dictionary.frequency[5]):.1%} of positions" in page
    assert len(report.rendered) == CONCEPTS and not studio.gallery.run(spec, models={"toy": toy}, progress=False).rendered
    # another dictionary under the same name: the spec refuses the index of the old one, then renders anew
    changed = spec.parent / "toy.concepts"
    tensors = {"atoms": dictionary.atoms.flip(0), "mean": dictionary.mean, "scale": torch.tensor([dictionary.scale]),
               "encoder_weight": dictionary.encoder_weight.flip(0), "encoder_bias": dictionary.encoder_bias.flip(0),
               "frequency": dictionary.frequency.flip(0)}
    studio.concepts.dictionary.save_dictionary(changed, tensors, {k: v for k, v in dictionary.record.items() if k != "format"})
    spec.write_text(spec.read_text().replace('"../toy.concepts"', '"toy.concepts"'))
    with pytest.raises(studio.StudioError, match="holds the examples of another dictionary called 'toy.concepts'"):
        studio.gallery.run(spec, models={"toy": toy}, progress=False)
    spec.write_text(spec.read_text().replace('[examples]\nindex = "examples.sqlite"\ncount = 3\n', ""))
    assert len(studio.gallery.run(spec, models={"toy": toy}, progress=False).rendered) == CONCEPTS


def test_the_cli_learns_shows_and_refuses_with_one_sentence(tmp_path, photos, capsys, monkeypatch):
    folder = tmp_path / "photos"
    for name, photo in list(photos.items())[:6]:
        write_image(folder / f"{name}.png", photo)
    out = tmp_path / "lite5.concepts"
    assert main(["concepts", str(folder), "--layer", "blocks.5", "--out", str(out), "--concepts", "16",
                 "--epochs", "3", "--workers", "0"]) == 0
    assert "16 topk concepts of blocks.5 (efficientnet_lite0)" in capsys.readouterr().out
    assert main(["concepts", "--show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "learned from 294 positions of 6 images" in shown and "most frequent:" in shown
    assert main(["concepts", str(folder), "--layer", "blocks.5", "--out", str(tmp_path / "x.concepts"),
                 "--method", "nmf", "--concepts", "16", "--workers", "0"]) == 2
    assert "NMF needs non-negative activations" in capsys.readouterr().err
    assert main(["concepts", str(folder), "--layer", "blocks.5", "--out", str(tmp_path / "x.npy")]) == 2
    assert "with the .concepts ending" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "overcomplete", None)
    assert main(["concepts", str(folder), "--layer", "blocks.5", "--out", str(tmp_path / "y.concepts")]) == 2
    assert "pip install 'feature-studio[concepts]'" in capsys.readouterr().err


@pytest.mark.parametrize("name,layer,unit,positions", [("efficientnet_lite0", "blocks.5", "3@3,3", 7 * 7),
                                                       ("timm:vit_tiny_patch16_224", "blocks.6", "3@cls", 14 * 14)])
def test_the_whole_path_runs_on_lite0_and_a_vit_token_layer(name, layer, unit, positions, tmp_path, photos):
    torch.manual_seed(0)
    model = studio.load_model(name, pretrained=name == "efficientnet_lite0", device="cpu")
    folder = tmp_path / "photos"
    for photo_name, photo in list(photos.items())[:4]:
        write_image(folder / f"{photo_name}.png", photo)
    dictionary = studio.learn_concepts(model, folder, layer, tmp_path / "layer.concepts", concepts=16,
                                       epochs=5, workers=0, progress=False)
    assert dictionary.layer == layer and dictionary.record["source"]["samples"] == 4 * positions
    index = tmp_path / "index.sqlite"
    studio.build_index(model, folder, str(dictionary.path), index, workers=0, progress=False)
    best = studio.unit_statistics(index, f"{dictionary.path}:3", model)
    result = studio.render(model, f"{dictionary.path}:{unit}", steps=12, size=96)
    assert torch.isfinite(result.clean_activations).all() and best.images == 4
    heat = studio.explain(model, photos["chelsea"], f"{dictionary.path}:3", method="gradcam")
    assert heat.maps.shape[1:] == photos["chelsea"].shape[1:] and torch.isfinite(heat.maps).all()
    assert hook_count(model.module) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same model and weights: no note
        parse_target(f"{dictionary.path}:0", model)


def test_objectives_name_a_dictionary_like_a_layer_and_diversity_spreads_a_concepts_renders(dictionary, toy,
                                                                                              monkeypatch):
    from studio import objectives as obj

    monkeypatch.chdir(dictionary.path.parent)
    _, concepts = matched_concepts(dictionary, toy.module.atoms)
    concept = int(concepts[1])
    alone = studio.render(toy, obj.channel("toy.concepts", concept), batch=3, steps=48, transforms="none", seed=2)
    spread = studio.render(toy, obj.channel("toy.concepts", concept) + 2.0 * obj.diversity("toy.concepts"),
                           batch=3, steps=48, transforms="none", seed=2)

    def similarity(images: torch.Tensor) -> float:  # mean Gram cosine between the batch's concept maps
        values = activations(toy, toy.spec.normalise(images), ["toy.concepts"])["toy.concepts"]
        return -float(obj.diversity("toy.concepts")({"toy.concepts": values}).mean())

    assert similarity(spread.images) < similarity(alone.images)
    assert (alone.clean_activations > 0).all() and (spread.clean_activations > 0).all()


def test_a_units_map_over_an_example_peaks_where_its_concept_is(dictionary, toy, tmp_path):
    from studio.exemplars.query import Example

    net = toy.module
    _, concepts = matched_concepts(dictionary, net.atoms)
    image = torch.full((3, 32, 32), 0.5)
    image[:, 16:24, 0:8] = pattern_images(net, 1, contrast=0.2, only=4)[0, :, 16:24, 0:8]
    path = write_image(tmp_path / "one_cell.png", image)
    unit = f"{dictionary.path}:{int(concepts[4])}"
    whole, corner = example_maps(toy, [Example(path, 0.0, (2, 0), ((0, 32), (0, 32))),
                                       Example(path, 0.0, (2, 0), ((16, 32), (0, 16)))], unit)
    assert whole.shape == (32, 32) and corner.shape == (16, 16)
    row, column = divmod(int(whole.argmax()), 32)
    assert 16 <= row < 24 and column < 8
    torch.testing.assert_close(corner, whole[16:32, 0:16])  # a crop's map is the image's map cut to its box
    with pytest.raises(studio.StudioError, match="has no map over positions"):
        example_maps(toy, [], "logits:1")
