"""Render settings, once: every setting besides model, target and seed that decides a rendered image, with
its default, its allowed values and its help text.

``optimize`` takes a :class:`RenderSettings`; the CLI's options, the gallery spec's validation, the viewer's
fields and the provenance record are all derived from :func:`setting_fields`, so a new setting is one new
field here and appears everywhere.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cache

from studio.checks import check_number
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
