"""Render settings, once: every setting besides model, target and seed that decides a rendered image, with
its default, its allowed values and its help text.

``optimize`` takes a :class:`RenderSettings`; the CLI's options, the gallery spec's validation, the viewer's
fields and the provenance record are all derived from :func:`setting_fields`, so a new setting is one new
field here and appears everywhere.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache

from studio.errors import StudioError
from studio.param.image import PARAM_KINDS
from studio.transforms import TRANSFORM_PRESETS

PRECISIONS = ("float32", "bfloat16")


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
        ``StudioError`` naming the setting and what it accepts."""
        names = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
        given = value
        is_number = isinstance(value, (numbers.Integral, numbers.Real)) and not isinstance(value, bool)
        if self.kind is float and is_number:
            value = float(value)
        elif self.kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            value = int(value)
        elif not isinstance(value, self.kind):
            raise StudioError(f"{self.name} must be {names[self.kind]}, not {value!r}.")
        if self.kind is float and not math.isfinite(value):
            raise StudioError(f"{self.name} must be a finite number, not {given!r}.")
        if self.choices is not None and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise StudioError(f"{self.name} = {value!r} is not one of {', '.join(self.choices)}{hint}")
        if self.positive and value <= 0:
            raise StudioError(f"{self.name} must be positive, not {given!r}.")
        if self.minimum is not None and value < self.minimum:
            raise StudioError(f"{self.name} must be at least {self.minimum:g}, not {given!r}.")
        if self.maximum is not None and value > self.maximum:
            raise StudioError(f"{self.name} must be at most {self.maximum:g}, not {given!r}.")
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
    lr: float = _setting(0.05, "Adam learning rate", positive=True)
    transforms: str = _setting("standard", "random transforms each step: standard (Lucid's robust set) or none",
                               choices=TRANSFORM_PRESETS)
    decorrelate: bool = _setting(True, "optimise in decorrelated ImageNet colour")
    decay_power: float = _setting(1.0, "Fourier/MACO spectrum falls as 1/f^decay_power", minimum=0.0)
    precision: str = _setting("float32", "model forward precision (bfloat16: faster on GPUs)", choices=PRECISIONS)

    def __post_init__(self) -> None:
        for spec in setting_fields():
            object.__setattr__(self, spec.name, spec.check(getattr(self, spec.name)))

    def as_dict(self) -> dict:
        """The settings by name (what provenance records)."""
        return asdict(self)

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
