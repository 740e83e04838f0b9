"""Objectives: what the engine maximises, one value per image, composable with ``+ - * /``."""

from studio.objectives.base import IMAGE, Activations, Objective, as_objective
from studio.objectives.library import (
    blur,
    caricature,
    channel,
    class_logit,
    direction,
    diversity,
    l1,
    l2,
    layer,
    neuron,
    total_variation,
    units,
)

__all__ = [
    "IMAGE", "Activations", "Objective", "as_objective", "blur", "caricature", "channel", "class_logit", "direction",
    "diversity", "l1", "l2", "layer", "neuron", "total_variation", "units",
]
