"""Dataset examples beside renders: each unit's top crops from the spec's index, written as tiles, and each
render's clean activation as a multiple of its unit's dataset maximum with its path check, in a marker JSON per
unit (written last, atomically, like the attribution marker).

A marker's key hashes the unit, the index's SHA-256, the count, tile size and path-check choice, and the keys of
the unit's renders: a grown index redoes the markers but never a render; a re-rendered unit redoes its marker.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch

from studio.exemplars import examples as top_examples
from studio.exemplars.maps import example_maps, has_positions, map_picture
from studio.exemplars.scores import DatasetComparison, PathCheck, channel_of, compare_with_dataset, path_check
from studio.gallery.output import (
    EXAMPLES_MARKER, FORMAT, describe_device, now, read_json, unit_file, write_json,
)
from studio.gallery.spec import GallerySpec, Item, Unit, digest
from studio.io import fit, read_input, write_image


def unit_items(spec: GallerySpec, unit: Unit) -> list[Item]:
    """The renders (one per seed) of ``unit``."""
    return [item for item in spec.items if item.unit == unit]


def tile_size(items: list[Item]) -> int:
    """The side of a unit's example tiles: its renders' size, so crops and renders line up on a sheet."""
    return max(item.settings.size for item in items)


def examples_key(spec: GallerySpec, unit: Unit) -> str:
    """What decides a unit's shown examples and numbers: model, target, index content, choices, its renders."""
    options, items = spec.examples, unit_items(spec, unit)
    return digest({"model": spec.models[unit.model].identity(), "target": unit.text, "index": options.sha256,
                   "count": options.count, "path_check": options.path_check, "tile": tile_size(items),
                   "renders": {item.id: item.key for item in items}})


def stale_units(spec: GallerySpec, out: Path) -> list[Unit]:
    """Units shown with examples whose marker is missing, has another key, or lists a crop that is gone."""
    stale = []
    for unit in spec.units:
        if not spec.examples.covers(unit):
            continue
        marker = read_json(out / unit_file(unit, EXAMPLES_MARKER))
        if (not marker or marker.get("key") != examples_key(spec, unit)
                or not all("map" in crop and all((out / crop[name]).is_file() for name in ("file", "map")
                                                 if crop[name]) for crop in marker.get("examples", []))):
            stale.append(unit)
    return stale


def read_markers(spec: GallerySpec, out: Path) -> dict[str, dict]:
    """The examples marker of every unit shown with examples, by unit path."""
    return {unit.path: read_json(out / unit_file(unit, EXAMPLES_MARKER)) for unit in spec.units
            if spec.examples.covers(unit)}


def rendered_image(out: Path, sidecar: dict, spec: GallerySpec, unit: Unit) -> torch.Tensor:
    """A render as written (its full data where the PNG is a preview), ``[C, *size]``: what the path check reads
    whether the render is new or was made by an earlier run."""
    files, input_spec = sidecar["files"], spec.models[unit.model].model.spec
    return read_input(out / files.get("data", files["image"]), input_spec.channels, input_spec.dims)


def _crops(spec: GallerySpec, out: Path, unit: Unit, tile: int) -> list[dict]:
    """The unit's top ``count`` crops, each fitted into a white ``tile`` square and written as a PNG, and
    beside each the unit's map over it (one colour scale: the top example's score), for a layer with positions."""
    model, channel = spec.models[unit.model].model, channel_of(unit.target)
    shown = top_examples(spec.examples.index, channel, model)[:spec.examples.count]
    maps = example_maps(model, shown, channel) if has_positions(model, channel) else [None] * len(shown)
    records = []
    for rank, (example, heat) in enumerate(zip(shown, maps)):
        relative, crop = unit_file(unit, f".example{rank:02d}.png"), example.crop()
        write_image(out / relative, fit(crop, (tile, tile), cover=False))
        record = {"file": relative, "source": str(example.path), "score": example.score,
                  "position": list(example.position), "box": [list(axis) for axis in example.box], "map": None}
        if heat is not None:
            record["map"] = unit_file(unit, f".example{rank:02d}.map.png")
            write_image(out / record["map"], fit(map_picture(crop, heat, shown[0].score), (tile, tile), cover=False))
        records.append(record)
    return records


def _numbers(spec: GallerySpec, out: Path, item: Item, sidecar: dict) -> dict:
    """One render's clean activation beside the dataset, and its path check when the spec asks for it."""
    options, unit = spec.examples, item.unit
    model = spec.models[unit.model].model
    value = sidecar["clean_activation"]
    check = (path_check(model, options.index, unit.target, rendered_image(out, sidecar, spec, unit))
             if options.path_check else None)
    return {"key": item.key, "clean_activation": value,
            "dataset": asdict(compare_with_dataset(options.index, unit.target, value, model)),
            "path_check": asdict(check) if check else None}


def write_examples(spec: GallerySpec, out: Path, sidecars: dict[str, dict], units: list[Unit], bar) -> list[str]:
    """Crops and numbers of each of ``units`` (renders complete), its marker last; returns the unit paths."""
    options = spec.examples
    for unit in units:
        start, items = time.perf_counter(), unit_items(spec, unit)
        entry, tile = spec.models[unit.model], tile_size(items)
        previous = read_json(out / unit_file(unit, EXAMPLES_MARKER)) or {}
        crops = _crops(spec, out, unit, tile)
        write_json(out / unit_file(unit, EXAMPLES_MARKER), {
            "format": FORMAT, "key": examples_key(spec, unit), "model": entry.identity(), "target": unit.text,
            "channel": channel_of(unit.target).name, "count": options.count, "tile": tile, "examples": crops,
            "index": {"path": str(options.index), "sha256": options.sha256, "images": options.info.images,
                      "unreadable": options.info.unreadable},
            "renders": {item.id: _numbers(spec, out, item, sidecars[item.id]) for item in items},
            "seconds": time.perf_counter() - start, "finished": now(), "device": describe_device(entry.model.device)})
        kept = {crop["file"] for crop in crops}
        for crop in previous.get("examples", []):
            if crop["file"] not in kept:
                (out / crop["file"]).unlink(missing_ok=True)
        bar.update(1)
        bar.refresh()
    return [unit.path for unit in units]


def summary(render: dict) -> tuple[str, bool]:
    """A render's line beside the dataset, ``0.83x dataset max (of 512 images) · path +0.041 (natural path; top
    examples +0.020 to +0.090)``, and whether its path is flagged, from its marker record."""
    check = render["path_check"]
    parts = [DatasetComparison(**render["dataset"]).describe()]
    if check:
        parts.append(PathCheck(**check).describe())
    return " · ".join(parts), bool(check and check["flagged"])
