"""Render settings, once: every setting besides model, target and seed that decides a rendered image, with
its default, its allowed values and its help text.

``optimize`` takes a :class:`RenderSettings`; the CLI's options, the gallery spec's validation, the viewer's
fields and the provenance record are all derived from :func:`setting_fields`, so a new setting is one new
field here and appears everywhere.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache

from studio.checks import check_number
from studio.errors import StudioError
from studio.param.image import PARAM_KINDS
from studio.transforms import TRANSFORM_PRESETS

PRECISIONS = ("float32", "bfloat16")
#: Settings that only matter with a canvas.
CANVAS_ONLY = ("canvas", "crops", "crop_size")


@dataclass(frozen=True)
class SettingField:
    """What the CLI, the gallery and the viewer need to offer one setting: its type, default, allowed
    choices or range, and a help line."""

    name: str
    kind: type
    default: object
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False

    def check(self, value):
        """``value`` as this setting's type (a whole number is accepted as a float), or a one-sentence
        ``StudioError`` naming the setting and what it accepts (numbers through :func:`check_number`)."""
        if self.kind in (int, float):
            return check_number(self.name, value, self.kind, minimum=self.minimum, maximum=self.maximum,
                                positive=self.positive)
        names = {bool: "true or false", str: "a string"}
        if not isinstance(value, self.kind):
            raise StudioError(f"{self.name} must be {names[self.kind]}, not {value!r}.")
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise StudioError(f"{self.name} = {value!r} is not one of {', '.join(self.choices)}{hint}")
        return value


def _setting(default, help: str, **limits):
    return field(default=default, metadata={"help": help, **limits})


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides model, target and seed that determines a rendered image (validated on creation)."""

    param: str = _setting("fourier", "image parameterisation (cppn learns slowly: use lr 0.005, 2000+ steps)",
                          choices=PARAM_KINDS)
    steps: int = _setting(512, "optimisation steps", minimum=1, maximum=100_000)
    size: int = _setting(128, "side of the optimised image in pixels (resized to the model's input)",
                         minimum=8, maximum=2048)
    lr: float = _setting(0.05, "Adam learning rate (the images live in [0, 1]: past 10 a step only saturates them)",
                         positive=True, maximum=10.0)
    transforms: str = _setting("standard", "random transforms each step: standard (Lucid's robust set) or none",
                               choices=TRANSFORM_PRESETS)
    decorrelate: bool = _setting(True, "optimise in decorrelated ImageNet colour")
    decay_power: float = _setting(1.0, "Fourier/MACO spectrum falls as 1/f^decay_power", minimum=0.0)
    precision: str = _setting("float32", "model forward precision (bfloat16: faster on GPUs)", choices=PRECISIONS)
    canvas: int = _setting(0, "side of a large canvas optimised through random crops, e.g. 1280 (0: none; the "
                              "image is size px)", minimum=0, maximum=8192)
    crops: int = _setting(6, "random boxes of the canvas each step, each seen at size px through the transforms",
                          minimum=1, maximum=64)
    crop_size: float = _setting(0.25, "side of a canvas box, as a fraction of the canvas side", positive=True,
                                maximum=1.0)

    def __post_init__(self) -> None:
        for spec in setting_fields():
            object.__setattr__(self, spec.name, spec.check(getattr(self, spec.name)))
        if self.canvas and self.canvas * self.crop_size < 8:
            raise StudioError(f"A canvas of {self.canvas} px with crop_size {self.crop_size:g} makes boxes of "
                              f"{self.canvas * self.crop_size:.1f} px; give a canvas of at least "
                              f"{math.ceil(8 / self.crop_size)} px or a larger crop_size.")

    @property
    def side(self) -> int:
        """The side of the optimised image: the canvas, or ``size``."""
        return self.canvas or self.size

    @property
    def box(self) -> int:
        """The side of a canvas box in pixels (the whole image without a canvas)."""
        return max(2, round(self.canvas * self.crop_size)) if self.canvas else self.size

    def describe(self) -> str:
        """The image in a few words: ``fourier 128px``, or ``fourier canvas 1280px, 6 crops of 25%``."""
        if not self.canvas:
            return f"{self.param} {self.size}px"
        return f"{self.param} canvas {self.canvas}px, {self.crops} crops of {self.crop_size:.0%}"

    def as_dict(self) -> dict:
        """The settings by name (what provenance records and gallery keys hash); the crop settings only with a
        canvas, where they change the image, so images rendered before canvases existed keep their keys."""
        values = asdict(self)
        if not self.canvas:
            for name in CANVAS_ONLY:
                values.pop(name)
        return values

    def updated(self, changes: Mapping[str, object]) -> RenderSettings:
        """A copy with ``changes`` applied; an unknown name is a one-sentence error with the closest name."""
        names = [spec.name for spec in setting_fields()]
        for name in changes:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"render settings are {', '.join(names)}."
                raise StudioError(f"Unknown render setting {name!r}; {hint}")
        return replace(self, **changes)


@cache
def setting_fields() -> tuple[SettingField, ...]:
    """Every render setting with its type, default, limits and help, in declaration order."""
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    return tuple(SettingField(f.name, kinds[f.type], f.default, **f.metadata) for f in fields(RenderSettings))
