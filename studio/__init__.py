"""Feature Studio: feature visualisation and activation maximisation for vision networks.

    import studio
    model = studio.load_model()                       # EfficientNet-Lite0, ImageNet weights
    result = studio.render(model, ["blocks.4:12", "blocks.4:40"], steps=256)
    large = studio.render(model, "blocks.4:12", canvas=1280, crops=6)                # a canvas for print
    heat = studio.attribute(model, studio.read_image("cat.jpg"), "blocks.4:12", method="gradcam")
    studio.deletion_insertion(model, studio.read_image("cat.jpg"), heat, "blocks.4:12").deletion_auc  # faithful?
    report = studio.evaluate(model, ["cat.jpg"], ["saliency", "gradcam"])  # methods x metrics, side by side
    parts = studio.blocks(model, "cat.jpg", "blocks.5", "Egyptian cat", top=6)  # the channels behind it
    studio.accentuate(model, "cat.jpg", "blocks.4:3").result.images              # the unit, in this photo
    studio.probe(model, "cat.jpg", "blocks.5", (120, 140)).target                # the neuron under a point
    studio.render(model, studio.objectives.caricature(studio.read_image("cat.jpg"), "blocks.4"))  # what it sees
    studio.write_report(report, "report/")                                 # CSV, JSON, curves and table plots
    studio.roar(studio.RoarSpec(studio.demo_dataset(), studio.demo_cnn, "demo-cnn"), "roar/")  # remove and retrain
    studio.gallery.run("gallery/example.toml", "out/example")
    studio.build_index(model, "photos/", "blocks.4,blocks.5", "examples.sqlite")   # dataset examples
    top = studio.examples("examples.sqlite", "blocks.4:12")                      # best first, with crops
    studio.learn_concepts(model, "photos/", "blocks.5", "blocks5.concepts")      # an SAE of a layer
    studio.render(model, "blocks5.concepts:17")                                  # its concept 17
"""

from studio import gallery, objectives, param
from studio.attribution import (Attribution, Evaluation, Faithfulness, Pointing, Randomisation, Road, attribute,
                                deletion_insertion, evaluate, explain, model_randomisation, pointing_game, road,
                                write_report)
from studio.accentuation import Accentuation, accentuate
from studio.building_blocks import BuildingBlocks, ablate, blocks
from studio.concepts import Dictionary, load_dictionary
from studio.concepts.learn import learn_concepts
from studio.engine import RenderResult, Snapshot, optimize, render
from studio.errors import StudioError
from studio.exemplars import build_index, examples, unit_statistics
from studio.hooks import capture, forward_to
from studio.io import read_image, write_image
from studio.models import DEFAULT_MODEL, InputSpec, StudioModel, load_model
from studio.probing import ActivationGrid, Probe, activation_grid, probe
from studio.retraining import RoarResult, RoarSpec, demo_cnn, demo_dataset, roar, write_roar_report
from studio.settings import RenderSettings
from studio.targets import Target, parse_target, parse_targets
from studio.transforms import TransformSettings

__all__ = [
    "DEFAULT_MODEL", "Accentuation", "ActivationGrid", "Attribution", "BuildingBlocks", "Dictionary",
    "Evaluation", "Faithfulness", "InputSpec", "Pointing", "Probe", "Randomisation", "RenderResult",
    "RenderSettings", "Road", "RoarResult", "RoarSpec", "Snapshot", "StudioError", "StudioModel", "Target", "TransformSettings", "ablate",
    "accentuate", "activation_grid", "attribute", "blocks", "build_index", "capture", "deletion_insertion",
    "demo_cnn", "demo_dataset", "evaluate", "examples", "explain", "forward_to", "gallery", "learn_concepts", "load_dictionary",
    "load_model", "model_randomisation", "objectives", "optimize", "param", "parse_target", "parse_targets",
    "pointing_game", "probe", "read_image", "render", "road", "roar", "unit_statistics", "write_image",
    "write_report", "write_roar_report",
]
