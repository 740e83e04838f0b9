"""Running a gallery: plan what is already done, render the rest in batches, attribute, write the index.

The whole spec is validated first (``studio.gallery.spec``). Items (unit x seed) that share a model,
settings and seed render together in one engine batch; the batches are cut from the spec's full item
list, so a resumed run renders exactly the batches a fresh run would (same images, same device). An
item whose sidecar exists with the same settings key is skipped; a CUDA out-of-memory error halves the
batch and retries. Files are written by ``studio.gallery.output``, each atomically, the sidecar last.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from studio.attribution import SIGNED_METHODS, explain
from studio.batching import Batcher, auto_batch_size
from studio.display import overlay
from studio.checks import output_folder
from studio.errors import StudioError
from studio.cluster import WorkerPool
from studio.gallery.rendering import Job, render_job, render_part
from studio.gallery.examples import read_markers, stale_units, write_examples
from studio.gallery.output import (
    ATTRIBUTION_MARKER, FORMAT, INDEX, MANIFEST, complete, describe_device, file_digest, intact, library_versions, lock, now,
    overlay_path, read_json, remove_stale_temporaries, unit_file, write_item, write_json, write_manifest, write_sheets,
)
from studio.gallery.pages import write_index, write_unit_pages
from studio.gallery.spec import GallerySpec, Item, ModelEntry, Unit, dictionary_identity, digest, load_spec
from studio.io import fit, write_image
from studio.models import StudioModel
from studio.settings import RenderSettings
from studio.transforms import TransformSettings


@dataclass
class Plan:
    """What a run will do: every item, which are already complete, and which units need attribution and
    dataset examples (new, or stale since the index changed)."""

    spec: GallerySpec
    out_dir: Path
    done: dict[str, dict] = field(default_factory=dict)
    attribution_todo: list[Unit] = field(default_factory=list)
    examples_todo: list[Unit] = field(default_factory=list)

    @property
    def pending(self) -> list[Item]:
        return [item for item in self.spec.items if item.id not in self.done]


@dataclass
class GalleryReport:
    """What a run did: images rendered and skipped, units attributed and given dataset examples, times, and the
    files it wrote."""

    out_dir: Path
    rendered: list[str]
    skipped: list[str]
    attributed: list[str]
    render_seconds: float
    seconds: float
    sheets: list[Path]
    halvings: list[tuple[int, int]]
    examples: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.out_dir / MANIFEST

    @property
    def index(self) -> Path:
        return self.out_dir / INDEX

    @property
    def seconds_per_image(self) -> float:
        return self.render_seconds / len(self.rendered) if self.rendered else 0.0


def _out_dir(spec: GallerySpec, out_dir: str | Path | None) -> Path:
    out = Path(out_dir) if out_dir is not None else spec.output.dir
    if out is None:
        raise StudioError("Give an output folder: studio gallery SPEC.toml --out DIR (or dir = \"...\" in [output]).")
    return output_folder(out, "The gallery's output folder")


def _attribution_key(spec: GallerySpec, unit: Unit) -> str:
    options = spec.attribution
    return digest({"model": spec.models[unit.model].identity(), "target": unit.text, "method": options.method,
                   "layer": options.layer, "photos": options.sha256, **dictionary_identity(unit.target)})


def plan(spec: str | Path | Mapping | GallerySpec, out_dir: str | Path | None = None, *,
         models: Mapping[str, StudioModel | str] | None = None, device: torch.device | str | None = None) -> Plan:
    """Validate ``spec`` and find which items (and attributions) in ``out_dir`` are already complete."""
    spec = load_spec(spec, models=models, device=device)
    out = _out_dir(spec, out_dir)
    result = Plan(spec, out)
    for item in spec.items:
        sidecar = complete(out, item, spec.output) if out.is_dir() else None
        if sidecar is not None:
            result.done[item.id] = sidecar
    if spec.attribution.photos:
        for unit in spec.units:
            if unit.whole_layer:
                continue
            marker = read_json(out / unit_file(unit, ATTRIBUTION_MARKER))
            if not marker or marker.get("key") != _attribution_key(spec, unit) or not intact(out, marker):
                result.attribution_todo.append(unit)
    result.examples_todo = stale_units(spec, out)
    return result


def _groups(spec: GallerySpec) -> dict[tuple, list[Item]]:
    """Items that can share an engine batch: same model, settings, seed and batch size, in spec order.
    A whole-layer target optimises every image of its batch, so it renders alone."""
    groups: dict[tuple, list[Item]] = {}
    for item in spec.items:
        alone = item.unit.path if item.unit.whole_layer else ""
        groups.setdefault((item.unit.model, item.settings, item.seed, item.batch, alone), []).append(item)
    return groups


class _Renderer:
    """Renders the pending items of a plan batch by batch, advancing one progress bar, writing each item."""

    def __init__(self, plan_: Plan, bar) -> None:
        self.plan = plan_
        self.spec = plan_.spec
        self.bar = bar
        self.versions = library_versions()
        self.batchers: dict[tuple, Batcher] = {}
        self.halvings: list[tuple[int, int]] = []  # those of workers elsewhere (the local ones are in batchers)
        self.auto_sizes: dict[tuple, int] = {}
        self.rendered: list[str] = []
        self.seconds = 0.0
        self.base = bar.n

    def progress(self, partial: float) -> None:
        """Show whole items written so far plus ``partial`` items of the batch in flight."""
        self.bar.n = self.base + len(self.rendered) + partial
        self.bar.refresh()

    def run(self, pool: WorkerPool | None = None) -> None:
        """Render every pending job here, or on ``pool``'s workers (results written here as they come)."""
        jobs = list(self.jobs())
        if pool is None:
            for job in jobs:
                batcher = self.batchers.setdefault((job.model, job.settings, job.size), Batcher(job.size))
                entry = self.spec.models[job.model]
                for part, result in batcher.run(list(job.items), lambda part: self.render_batch(entry, part, job)):
                    self.write(entry, part, result)
            return
        for (_, job, _), (parts, halvings) in pool.map(render_job, [(job.model, job, self.spec.output) for job in jobs]):
            self.halvings += halvings
            for ids, result in parts:
                self.write(self.spec.models[job.model], [item for item in job.items if item.id in ids], result)

    def jobs(self):
        """The engine batches with a pending member, cut from each group as a fresh run would cut them."""
        done = self.plan.done
        for (model_name, settings, seed, batch, _), items in _groups(self.spec).items():
            if all(item.id in done for item in items):
                continue
            entry = self.spec.models[model_name]
            size = batch or (1 if items[0].unit.whole_layer else self.auto_size(entry, items, settings))
            for start in range(0, len(items), size):
                chunk = items[start:start + size]
                if not all(item.id in done for item in chunk):
                    yield Job(model_name, settings, seed, size, tuple(chunk))

    def auto_size(self, entry: ModelEntry, items: list[Item], settings: RenderSettings) -> int:
        """:func:`auto_batch_size`, probed once per model, settings and set of layers (not once per seed)."""
        key = (entry.name, settings, frozenset(item.unit.target.layer for item in items))
        if key not in self.auto_sizes:
            self.auto_sizes[key] = auto_batch_size(entry.model, [item.unit.target for item in items], settings)
        return self.auto_sizes[key]

    def render_batch(self, entry: ModelEntry, part: list[Item], job: Job):
        """One engine batch here, advancing the bar step by step; returns ``(RenderResult, frames or None)``."""
        weight = sum(item.id not in self.plan.done for item in part)
        self.bar.set_postfix_str(f"{entry.name} batch of {len(part)}", refresh=False)
        try:
            return render_part(entry.model, part, job.settings, job.seed, self.spec.output,
                               lambda step: self.progress(weight * step / job.settings.steps))
        finally:
            self.progress(0.0)  # finished items count once written; a failed attempt gives its progress back

    def write(self, entry: ModelEntry, part: list[Item], rendered) -> None:
        result, frames = rendered
        members = [item.id for item in part]
        engine = {k: v for k, v in result.settings.items() if k not in ("targets", "objective")}
        self.seconds += result.seconds
        for index, item in enumerate(part):
            if item.id in self.plan.done:
                continue  # rendered again only because its batch had a missing member; its files stay
            unit = item.unit
            history = result.history[:, index]
            stride = max(1, len(history) // 64)
            record = {
                "format": FORMAT, "id": item.id, "key": item.key, "model": entry.identity(),
                "target": unit.text, "layer": unit.target.layer_name, "channel": unit.target.channel,
                "position": list(unit.target.position) if unit.target.position else None, "label": unit.target.label,
                "seed": item.seed, "settings": item.settings.as_dict(),
                "transforms": TransformSettings.preset(item.settings.transforms).as_dict(), "engine": engine,
                "batch": {"size": len(part), "index": index, "members": members},
                "clean_activation": float(result.clean_values[index]),
                "objective_history": {"every": stride, "values": [round(float(v), 6) for v in history[::stride]]},
                "seconds": result.seconds / len(part), "batch_seconds": result.seconds, "finished": now(),
                "device": describe_device(entry.model.device), "versions": self.versions,
                "spec": {"name": self.spec.source, "sha256": self.spec.sha256, "line": item.line},
            }
            self.plan.done[item.id] = write_item(self.plan.out_dir, item, result.images[index],
                                                 frames[index] if frames else None, record, self.spec.output)
            self.rendered.append(item.id)
            self.progress(0.0)


def _photo_name(path: Path, base: Path) -> str:
    """A photo's path as the spec wrote it (relative to the spec's folder when inside it)."""
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(path)


def _attribute(plan_: Plan, bar) -> list[str]:
    """Heat maps (Grad-CAM by default) of each unit on every photo, as overlays, with a marker JSON last."""
    spec, out = plan_.spec, plan_.out_dir
    options = spec.attribution
    if not plan_.attribution_todo:
        return []
    done = []
    for unit in plan_.attribution_todo:
        entry = spec.models[unit.model]
        model = entry.model
        photos = torch.stack([fit(photo, model.spec.size) for photo in options.images]).to(model.device)
        start = time.perf_counter()
        # explain() is attribute() with details: the Grad-CAM layer used and the unit's score on each photo.
        result = explain(model, photos, unit.target, options.method, layer=options.layer)
        scores = result.scores.tolist() if result.scores is not None else [None] * len(photos)
        files, records = {}, []
        for index, (path, sha, photo, heat, score) in enumerate(
                zip(options.photos, options.sha256, photos, result.maps, scores)):
            relative = overlay_path(unit, options.method, index, path)
            write_image(out / relative, overlay(photo, heat, signed=options.method in SIGNED_METHODS))
            name = _photo_name(path, spec.base_dir)
            files[name] = relative
            records.append({"photo": name, "sha256": sha, "overlay": relative,
                            "score": score})
        write_json(out / unit_file(unit, ATTRIBUTION_MARKER), {
            "format": FORMAT, "key": _attribution_key(spec, unit), "model": entry.identity(), "target": unit.text,
            "method": options.method, "layer": result.layer, "files": files,
            "sha256": {name: file_digest(out / path) for name, path in files.items()}, "photos": records,
            "seconds": time.perf_counter() - start, "finished": now(), "device": describe_device(model.device)})
        done.append(unit.path)
        bar.update(1)
        bar.refresh()
    return done


def run(spec: str | Path | Mapping | GallerySpec, out_dir: str | Path | None = None, *,
        models: Mapping[str, StudioModel | str] | None = None, device: torch.device | str | None = None,
        progress: bool = True, ray: str | bool | None = None, workers: int | None = None) -> GalleryReport:
    """Render every item of ``spec`` (a TOML path, a parsed mapping or a ``GallerySpec``) into ``out_dir``.

    Validates the whole spec first, skips items already complete with the same settings, renders the rest
    in batches, then writes attribution overlays, dataset-example crops and numbers, contact sheets,
    ``manifest.json``, ``index.html`` and a page per unit.
    ``models`` maps model specs to already loaded models (used as they are); ``device`` applies to the others.
    ``ray``: render on Ray workers (True: a Ray started on this machine; a string: the address of a running
    cluster), ``workers`` of them (default: one per GPU, else one per CPU); everything is written here.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    work = plan(spec, out_dir, models=models, device=device)
    spec, out = work.spec, work.out_dir
    out.mkdir(parents=True, exist_ok=True)
    try:
        handle = lock(out)
    except BlockingIOError:
        raise StudioError(f"Another studio gallery run is writing to {str(out)!r}; wait for it to finish.") from None
    try:
        remove_stale_temporaries(out)
        skipped = list(work.done)
        total = (len(spec.items) + sum(not u.whole_layer for u in spec.units) * bool(spec.attribution.photos)
                 + sum(map(spec.examples.covers, spec.units)))
        initial = total - len(work.pending) - len(work.attribution_todo) - len(work.examples_todo)
        with tqdm(total=total, initial=initial, unit="image", desc="gallery", disable=not progress,
                  bar_format="{l_bar}{bar}| {n:.1f}/{total} [{elapsed}<{remaining}{postfix}]") as bar:
            renderer = _Renderer(work, bar)
            pool = WorkerPool({name: entry.model for name, entry in spec.models.items()},
                              None if ray is True else ray, workers) if ray not in (None, False) and work.pending else None
            try:
                renderer.run(pool)
            finally:
                if pool is not None:
                    pool.close()
            attributed = _attribute(work, bar)
            shown = write_examples(spec, out, work.done, work.examples_todo, bar)
        attributions = {unit.path: read_json(out / unit_file(unit, ATTRIBUTION_MARKER)) for unit in spec.units
                        if spec.attribution.photos and not unit.whole_layer}
        markers = read_markers(spec, out)
        sheets = write_sheets(out, spec, markers)
        write_manifest(out, spec, work.done, attributions, markers, sheets)
        write_index(out, spec, work.done, attributions, markers, sheets)
        write_unit_pages(out, spec, work.done, attributions, markers, sheets)
    finally:
        if handle is not None:
            handle.close()
    halvings = [h for batcher in renderer.batchers.values() for h in batcher.halvings] + renderer.halvings
    return GalleryReport(out, renderer.rendered, skipped, attributed, renderer.seconds, time.perf_counter() - start,
                         [out / s for s in sheets], halvings, shown)

