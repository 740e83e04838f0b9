"""An evaluation on disk: ``metrics.csv`` (one row per photo and method), ``metrics.json`` (the rows, their
curves, their x axes and the method means), ``curves.png`` (each curve averaged over the photos, one line per
method) and ``table.png`` (method x score means, each column coloured from its worst to its best value). Every
file is written atomically, so a reader never sees half a report."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from studio.attribution.evaluation import COLUMNS, Evaluation
from studio.io import write_figure, write_text

#: The title of each curve plotted, and its x axis.
CURVES = {"deletion": ("Deletion (low area: faithful)", "fraction of pixels removed"),
          "insertion": ("Insertion (high area: faithful)", "fraction of pixels restored"),
          "road_morf": ("ROAD, most relevant first (low: faithful)", "fraction imputed"),
          "road_lerf": ("ROAD, least relevant first (high: faithful)", "fraction imputed"),
          "randomisation": ("Cascading randomisation (low: depends on weights)", "redrawn down to")}


def csv_text(evaluation: Evaluation) -> str:
    """The rows as CSV: photo, method, target, seconds, then each score column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "method", "target", "seconds", *evaluation.columns])
    for row in evaluation.rows:
        writer.writerow([row.image, row.method, row.target, f"{row.seconds:.3f}",
                         *(f"{row.values[c]:.6g}" for c in evaluation.columns)])
    return buffer.getvalue()


def json_text(evaluation: Evaluation) -> str:
    """The whole evaluation as JSON (no NaN: a missing mean is null)."""
    summary = {method: {c: (None if math.isnan(v) else v) for c, v in scores.items()}
               for method, scores in evaluation.table().items()}
    better = {column: "higher" if COLUMNS[column][1] else "lower" for column in evaluation.columns}
    return json.dumps({"model": evaluation.model, "metrics": evaluation.metrics, "better": better,
                       "axes": evaluation.axes, "summary": summary,
                       "rows": [row.as_dict() for row in evaluation.rows]}, indent=1)


def curves_figure(evaluation: Evaluation):
    """Every curve the evaluation holds, averaged over its photos, one line per method."""
    from matplotlib.figure import Figure

    shown = [name for name in CURVES if any(name in row.curves for row in evaluation.rows)]
    columns = min(3, max(1, len(shown)))
    rows = max(1, math.ceil(len(shown) / columns))
    figure = Figure(figsize=(4.4 * columns, 3.4 * rows + 0.4), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False).ravel()
    for spare in panels[len(shown):]:
        spare.set_visible(False)
    for axis, name in zip(panels, shown):
        title, label = CURVES[name]
        x = evaluation.axes["road" if name.startswith("road") else name]
        positions = np.arange(len(x)) if name == "randomisation" else np.asarray(x)
        for method in evaluation.methods:
            axis.plot(positions, evaluation.mean_curve(method, name), marker="o" if len(x) < 12 else None,
                      markersize=3, label=method)
        if name == "randomisation":
            axis.set_xticks(positions, [str(stage) for stage in x], rotation=30, ha="right", fontsize=7)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel(label, fontsize=8)
        axis.grid(alpha=0.3)
        axis.set_ylabel("Spearman with the trained map" if name == "randomisation" else "score", fontsize=8)
    if shown:
        panels[0].legend(fontsize=7)
    figure.suptitle(f"{evaluation.model}: mean over {len({r.image for r in evaluation.rows})} photo(s)", fontsize=10)
    return figure


def table_figure(evaluation: Evaluation):
    """The method x score table: each cell its mean, coloured by its place between the column's worst and
    best method (green best), with whether higher or lower is better in the header."""
    from matplotlib.figure import Figure

    table, columns, methods = evaluation.table(), evaluation.columns, evaluation.methods
    values = np.array([[table[m][c] for c in columns] for m in methods], dtype=float)
    goodness = np.full_like(values, 0.5)
    for j, column in enumerate(columns):
        low, high = np.nanmin(values[:, j]), np.nanmax(values[:, j])
        if high > low:
            goodness[:, j] = (values[:, j] - low) / (high - low)
            goodness[:, j] = goodness[:, j] if COLUMNS[column][1] else 1 - goodness[:, j]
    figure = Figure(figsize=(1.5 + 1.25 * len(columns), 0.9 + 0.42 * len(methods)), layout="constrained")
    axis = figure.subplots()
    axis.imshow(goodness, cmap="RdYlGn", vmin=-0.2, vmax=1.2, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        axis.text(j, i, "—" if math.isnan(value) else f"{value:.3g}", ha="center", va="center", fontsize=8)
    arrows = ["↑" if COLUMNS[c][1] else "↓" for c in columns]
    axis.set_xticks(range(len(columns)), [f"{c.replace('_', ' ')} {a}" for c, a in zip(columns, arrows)],
                    rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(methods)), methods, fontsize=8)
    axis.set_title(f"{evaluation.model}: mean over photos (↑ higher is better, ↓ lower)", fontsize=9)
    return figure


def write_report(evaluation: Evaluation, out: str | os.PathLike) -> list[Path]:
    """Write the report files into folder ``out``; returns their paths."""
    out = Path(out)
    files = [out / "metrics.csv", out / "metrics.json", out / "curves.png", out / "table.png"]
    write_text(files[0], csv_text(evaluation))
    write_text(files[1], json_text(evaluation))
    write_figure(files[2], curves_figure(evaluation))
    write_figure(files[3], table_figure(evaluation))
    return files
