"""``studio.evaluate``: every method's heat maps scored by every metric, on the same photos and the same targets,
side by side. Metrics disagree (deletion rewards maps whose removals leave the model's distribution, ROAR-like
scores reward blur, the pointing game only asks where the peak is), so one score alone says little.

Each (photo, method) pair is one :class:`Row`, computed on its own and handed to ``on_row`` as soon as it is
done, so a caller can keep rows on disk and resume a killed run by passing them back as ``done``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from studio.attribution.api import TargetSpec, explain, method_name, resolve_targets
from studio.attribution.faithfulness import deletion_insertion, road
from studio.attribution.localisation import TOLERANCE, box_slices, pointing_game
from studio.attribution.machinery import as_batch, attribution_mode
from studio.attribution.randomisation import model_randomisation
from studio.checks import check_number
from studio.errors import StudioError
from studio.models import StudioModel, resize_to_input

METRICS = ("deletion", "insertion", "road", "randomisation", "pointing")
#: Each score column: the metric that gives it and whether a higher value means a more faithful map.
COLUMNS = {
    "deletion_auc": ("deletion", False), "insertion_auc": ("insertion", True),
    "road_morf_auc": ("road", False), "road_lerf_auc": ("road", True),
    "randomisation_spearman": ("randomisation", False), "randomisation_ssim": ("randomisation", False),
    "pointing_hit": ("pointing", True), "pointing_energy": ("pointing", True),
}
#: The methods compared when none are named: gradients, a path method, a CAM and a perturbation method.
DEFAULT_METHODS = ("saliency", "integrated_gradients", "gradcam", "rise")


@dataclass
class Row:
    """One photo's map by one method: its scores (:data:`COLUMNS`), its curves (``deletion``, ``insertion``,
    ``road_morf``, ``road_lerf``, ``randomisation``: the Spearman correlation per cascade stage) and their x
    axes (by metric), the target it explains and the seconds the map took."""

    image: str
    method: str
    target: str
    seconds: float
    values: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.image, self.method

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Row:
        return cls(str(data["image"]), str(data["method"]), str(data["target"]), float(data["seconds"]),
                   {k: float(v) for k, v in data["values"].items()},
                   {k: [float(x) for x in v] for k, v in data["curves"].items()},
                   {k: list(v) for k, v in data.get("axes", {}).items()})


@dataclass
class Evaluation:
    """The rows of an evaluation, in photo then method order, and the x axis of each curve (fractions of the
    pixels removed; the cascade stages' layer names for ``randomisation``)."""

    model: str
    metrics: list[str]
    rows: list[Row]
    axes: dict[str, list]

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(row.method for row in self.rows))

    @property
    def columns(self) -> list[str]:
        return [name for name, (metric, _) in COLUMNS.items() if metric in self.metrics]

    def table(self) -> dict[str, dict[str, float]]:
        """Method -> score column -> its mean over the photos."""
        return {method: {column: _mean([row.values[column] for row in self.rows if row.method == method])
                         for column in self.columns} for method in self.methods}

    def mean_curve(self, method: str, curve: str) -> list[float]:
        """One curve of one method, averaged over the photos."""
        curves = [row.curves[curve] for row in self.rows if row.method == method]
        return [_mean(values) for values in zip(*curves)]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def metric_names(metrics: Iterable[str] | None, dims: int, boxes: bool) -> list[str]:
    """The metrics asked for, checked (default: all that apply; ROAD needs 2D photos, the pointing game boxes)."""
    if metrics is None:
        return [m for m in METRICS if (m != "road" or dims == 2) and (m != "pointing" or boxes)]
    names = [str(m).strip().lower() for m in metrics]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise StudioError(f"Unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'}: use "
                          f"{', '.join(METRICS)}.")
    if "road" in names and dims != 2:
        raise StudioError("ROAD imputes 2D images; leave it out for volumes (deletion and insertion work there).")
    if "pointing" in names and not boxes:
        raise StudioError("The pointing game needs one object box per photo (boxes=[(x0, y0, x1, y1), ...]).")
    return list(dict.fromkeys(names))


def evaluate(model: StudioModel, images: Sequence[torch.Tensor | str | os.PathLike] | torch.Tensor,
             methods: Sequence[str] = DEFAULT_METHODS, metrics: Sequence[str] | None = None,
             target: TargetSpec | Sequence[TargetSpec] = None, boxes: Sequence[Sequence[float]] | None = None, *,
             names: Sequence[str] | None = None, options: Mapping[str, Mapping] | None = None, steps: int = 32,
             stages: int = 4, tolerance: float = TOLERANCE, seed: int = 0, done: Iterable[Row] = (),
             on_row: Callable[[Row], None] | None = None, progress: bool = False) -> Evaluation:
    """Score ``methods``' maps of ``images`` (a batch, or a list of photos of any sizes or their paths) by
    ``metrics`` (:data:`METRICS`; default all that apply) for ``target`` (as :func:`studio.attribute` takes it,
    resolved once per photo so every method explains the same class or unit). ``boxes``: one object box per
    photo for the pointing game. ``options``: per method, its own options (``{"rise": {"samples": 500}}``).
    ``steps``: the deletion and insertion fractions; ``stages``: the randomisation cascade's. ``done``: rows of
    an earlier run, kept and not recomputed; ``on_row`` sees each new row; ``progress`` shows a bar."""
    check_number("steps", steps, int, minimum=1, maximum=4096)
    check_number("stages", stages, int, minimum=1, maximum=256)
    check_number("tolerance", tolerance, float, minimum=0, maximum=1e6)
    methods = list(dict.fromkeys(method_name(m) for m in methods))
    if not methods:
        raise StudioError("Name at least one attribution method to evaluate.")
    single = isinstance(images, (str, os.PathLike)) or (isinstance(images, torch.Tensor)
                                                         and images.dim() == model.spec.dims + 1)
    photos = [images] if single else list(images)
    names = [str(n) for n in names] if names is not None else [
        os.fspath(p) if isinstance(p, (str, os.PathLike)) else f"image {i}" for i, p in enumerate(photos)]
    if len(names) != len(photos) or len(set(names)) != len(names):
        raise StudioError(f"Give one distinct name per photo ({len(photos)} photos, {len(names)} names).")
    if boxes is not None and len(boxes) != len(photos):
        raise StudioError(f"Give one box per photo: {len(boxes)} boxes for {len(photos)} photos.")
    targets = list(target) if isinstance(target, (list, tuple)) else [target] * len(photos)
    if len(targets) != len(photos):
        raise StudioError(f"Got {len(targets)} targets for {len(photos)} photos; give one target or one per photo.")
    options = {method_name(m): dict(o) for m, o in (options or {}).items()}
    chosen = metric_names(metrics, model.spec.dims, boxes is not None)
    finished = {row.key: row for row in done}
    rows: list[Row] = []
    bar = tqdm(total=len(photos) * len(methods), desc="evaluate", unit="map", disable=not progress)
    try:
        for index, (photo, name, wanted) in enumerate(zip(photos, names, targets)):
            image, _ = as_batch(photo, model)
            if boxes is not None:
                box_slices(boxes[index], image.shape[2:])  # a bad box is one sentence before any work on it
            resolved = None
            for method in methods:
                if (name, method) in finished:
                    rows.append(finished[(name, method)])
                    bar.update()
                    continue
                if resolved is None:  # one target per photo, shared by its methods
                    with attribution_mode(model.module):
                        resolved = resolve_targets(model, wanted, resize_to_input(image, model.spec), 1)
                bar.set_postfix_str(f"{method} on {os.path.basename(name)}")
                row = _score_one(model, image, name, method, resolved, chosen, options.get(method, {}),
                                 None if boxes is None else boxes[index], steps, stages, tolerance, seed)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
                bar.update()
    finally:
        bar.close()
    axes = {metric: axis for row in rows for metric, axis in row.axes.items()}
    return Evaluation(model.name, chosen, rows, axes)


def _score_one(model: StudioModel, image: torch.Tensor, name: str, method: str, targets: list, metrics: list[str],
               options: dict, box, steps: int, stages: int, tolerance: float, seed: int) -> Row:
    """One photo's map by one method, scored by each metric."""
    started = time.perf_counter()
    result = explain(model, image, targets, method, **options)
    row = Row(name, method, targets[0].description, time.perf_counter() - started)
    axes = row.axes
    if {"deletion", "insertion"} & set(metrics):
        curves = deletion_insertion(model, image, result.maps, targets, steps=steps, seed=seed)
        axes["deletion"] = axes["insertion"] = curves.fractions.tolist()
        for metric in ("deletion", "insertion"):
            if metric in metrics:
                row.values[f"{metric}_auc"] = float(getattr(curves, f"{metric}_auc")[0])
                row.curves[metric] = getattr(curves, metric)[0].tolist()
    if "road" in metrics:
        scored = road(model, image, result.maps, targets, seed=seed)
        axes["road"] = scored.fractions.tolist()
        for order in ("morf", "lerf"):
            row.values[f"road_{order}_auc"] = float(getattr(scored, f"{order}_auc")[0])
            row.curves[f"road_{order}"] = getattr(scored, order)[0].tolist()
    if "randomisation" in metrics:
        randomised = model_randomisation(model, image, method, targets, stages=stages, seed=seed, trained=result,
                                         **options)
        axes["randomisation"] = randomised.stages
        row.values["randomisation_spearman"] = float(randomised.score[0])
        row.values["randomisation_ssim"] = float(randomised.ssim[0, -1])
        row.curves["randomisation"] = randomised.spearman[0].tolist()
    if "pointing" in metrics:
        pointed = pointing_game(result.maps, [box], tolerance)
        row.values["pointing_hit"] = float(pointed.hits[0])
        row.values["pointing_energy"] = float(pointed.energy[0])
    return row
