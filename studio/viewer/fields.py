"""magicgui fields built from descriptions, shared by the panels: one widget per setting (its choices, range,
default and help) and class-label completion for a text field."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, LineEdit, SpinBox
from magicgui.widgets.bases import ValueWidget
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QCompleter

from studio.models import StudioModel
from studio.settings import SettingField
from studio.viewer.streaming import field_range

#: Labels that read better than the setting's name (any other field is labelled by its name).
LABELS = {"param": "parameterisation", "size": "image size", "lr": "learning rate", "count": "channels at once",
          "every": "update every"}
#: Decimals a float field shows at least (a learning rate of 0.005 must be typeable), and at most.
DECIMALS, MAX_DECIMALS = 4, 10


def setting_widget(spec: SettingField) -> ValueWidget:
    """The field that offers one setting at its default: a combo box of its choices, a check box, or a spin
    box within its range (a text field for free text)."""
    options = {"name": spec.name, "label": LABELS.get(spec.name, spec.name.replace("_", " ")), "tooltip": spec.help}
    if spec.choices is not None:
        widget = ComboBox(choices=list(spec.choices), **options)
    elif spec.kind is bool:
        widget = CheckBox(**options)
    elif spec.kind in (int, float):
        low, high = field_range(spec)
        box = SpinBox if spec.kind is int else FloatSpinBox
        widget = box(min=spec.kind(low), max=spec.kind(high), **options)
    else:
        widget = LineEdit(**options)
    set_value(widget, spec.default)
    return widget


def set_value(widget: ValueWidget, value: object) -> None:
    """Set a field; a float field first widens its decimals so that it holds ``value`` exactly."""
    if isinstance(widget, FloatSpinBox):
        digits = len(np.format_float_positional(float(value)).partition(".")[2])
        widget.native.setDecimals(min(max(widget.native.decimals(), digits, DECIMALS), MAX_DECIMALS))
    widget.value = value


def complete_classes(field: LineEdit, model: StudioModel) -> None:
    """Complete ``field`` with the model's class labels (every synonym, matched anywhere, in any case)."""
    completer = QCompleter(sorted(set(model.class_synonyms()), key=str.lower), field.native)
    completer.setCaseSensitivity(Qt.CaseInsensitive)
    completer.setFilterMode(Qt.MatchContains)
    field.native.setCompleter(completer)
