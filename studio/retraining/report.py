"""A remove-and-retrain benchmark on disk: ``roar.csv`` (one row per estimate, mode and fraction: mean accuracy
and its spread over repeats), ``roar.json`` (those rows, the clean accuracy, chance and the settings) and
``roar.png`` (accuracy against the fraction removed or kept, one line per estimate, chance dashed). Each file is
written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from studio.io import write_figure, write_text
from studio.retraining.benchmark import RoarResult

#: Each mode's plot title and x axis.
PANELS = {"roar": ("ROAR: top pixels removed, retrained (lower: better estimate)", "fraction removed"),
          "kar": ("KAR: only top pixels kept, retrained (higher: better estimate)", "fraction kept")}


def csv_text(result: RoarResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, ["estimate", "mode", "fraction", "accuracy", "spread", "repeats"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.table())
    return buffer.getvalue()


def roar_figure(result: RoarResult):
    """Accuracy against fraction, one panel per mode, one line per estimate (the spread as a band)."""
    from matplotlib.figure import Figure

    modes = result.settings["modes"]
    figure = Figure(figsize=(5.2 * len(modes), 3.8), layout="constrained")
    for axis, mode in zip(figure.subplots(1, len(modes), squeeze=False)[0], modes):
        for estimate in result.settings["estimates"]:
            fractions, means, spreads = (np.array(v) for v in result.curve(estimate, mode))
            dashed = ":" if estimate in ("random", "sobel") else "-"
            line, = axis.plot(fractions, means, dashed, marker="o", markersize=3, label=estimate)
            axis.fill_between(fractions, means - spreads, means + spreads, color=line.get_color(), alpha=0.15)
        axis.axhline(result.chance, color="grey", linestyle="--", linewidth=1, label="chance")
        title, x_label = PANELS[mode]
        axis.set(title=title, xlabel=x_label, ylabel="test accuracy", ylim=(0, 1.02), xlim=(0, 1))
        axis.title.set_fontsize(9)
        axis.legend(fontsize=7)
    return figure


def write_roar_report(result: RoarResult, out: str | os.PathLike) -> list[Path]:
    """Write ``roar.csv``, ``roar.json`` and ``roar.png`` into ``out``; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"settings": result.settings, "chance": result.chance, "clean": result.clean, "rows": result.table()}
    return [write_text(out / "roar.csv", csv_text(result)), write_text(out / "roar.json", json.dumps(record, indent=1)),
            write_figure(out / "roar.png", roar_figure(result))]
