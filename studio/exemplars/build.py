"""Building a dataset-example index: a folder of images through the model in batches on its device, decoding
overlapped with compute (or on Ray workers), each batch committed in one transaction in file order; a rerun
resumes or extends the index."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from studio.cluster import WorkerPool
from studio.concepts.dictionary import load_dictionary
from studio.errors import StudioError
from studio.exemplars import store
from studio.exemplars.fields import receptive_fields
from studio.exemplars.folder import list_images
from studio.exemplars.query import IndexInfo, index_info
from studio.exemplars.ranking import LayerState
from studio.exemplars.reading import BatchReading, read_contents, read_files
from studio.models import StudioModel, load_model, weights_sha256
from studio.targets import LayerInfo, layer_info, layer_key, parse_target


class UnreadableImage(UserWarning):
    """Said once per file that cannot be read; the file is recorded as seen and not retried."""


def build_index(model: StudioModel | str, folder: str | Path, targets_or_layers: str | Sequence[str],
                out_path: str | Path, top_k: int = 16, batch: int = 32, workers: int | None = None,
                progress: bool = True, ray: str | bool | None = None) -> IndexInfo:
    """Index, for every channel of the layers named (``"blocks.4,blocks.5"``, ``["blocks.4", "logits"]``), the
    ``top_k`` images of ``folder`` (recursive: JPEG, PNG, TIFF) with the highest spatial maximum, and statistics
    over all of them, into the SQLite file ``out_path``. Images go through the model in batches of ``batch``,
    decoded by ``workers`` processes (0: in this one; default 2). A rerun skips every file already seen: it
    resumes a killed run and adds new files. Returns what the index holds.

    ``ray``: read the batches on Ray workers (True: a Ray started on this machine; a string: a running cluster's
    address), ``workers`` of them (default: one per GPU, else as many as the CPUs hold); this process reads the
    files' bytes and writes the index in file order, so the index is the one a single process builds."""
    model = load_model(model) if isinstance(model, str) else model
    layers = index_layers(model, targets_or_layers)
    if top_k < 1:
        raise StudioError(f"Keep at least 1 example per channel, not top_k={top_k}.")
    files = list_images(folder, model.spec)
    connection = store.open_index(out_path, write=True)
    try:
        fields = _prepare(connection, model, layers, top_k, out_path)
        states = [store.load_state(connection, info.name, info.channels, top_k, fields[info.name], model.spec.dims)
                  for info in layers]
        todo = _unseen(connection, files)
        paths, keys = [path for path, _, _ in todo], [info.path for info in layers]
        if ray in (None, False):
            _index(connection, model, layers, states, todo, read_files(model, keys, paths, batch, 2 if workers is None
                                                                      else workers), progress, out_path)
        elif todo:
            pool = WorkerPool({model.name: model}, None if ray is True else ray, workers)
            try:
                _index(connection, model, layers, states, todo, _read_on(pool, model, keys, paths, batch), progress,
                       out_path)
            finally:
                pool.close()
    finally:
        connection.close()
    return index_info(out_path)


def index_layers(model: StudioModel, layers: str | Sequence[str]) -> list[LayerInfo]:
    """The whole layers an index covers, from a comma-separated string or a list, checked against ``model``; a
    concept dictionary (``blocks5.concepts``) is a layer of concepts."""
    names = [name.strip() for name in (layers.split(",") if isinstance(layers, str) else layers) if name.strip()]
    if not names:
        raise StudioError("Name at least one layer to index, e.g. blocks.4,blocks.5 or logits.")
    infos = []
    for name in names:
        try:
            info = layer_info(model, layer_key(model, name))
        except StudioError:
            target = parse_target(name, model)  # a unit rather than a layer, or the grammar's own error
            raise StudioError(f"Index whole layers: write {target.layer_name} instead of {target.name} (every "
                              "channel is indexed).") from None
        if len(info.spatial) not in (0, model.spec.dims):
            raise StudioError(f"Layer {info.name!r} is a {info.describe()}; an index takes maps with the input's "
                              f"{model.spec.dims} axes, token grids and vectors.")
        if any(known.name == info.name and known.path != info.path for known in infos):
            raise StudioError(f"Two layers to index are called {info.name!r} (two dictionaries of one file name); "
                              "rename one.")
        infos.append(info)
    return list(dict.fromkeys(infos))


def _meta(model: StudioModel, layers: Sequence[LayerInfo], top_k: int) -> dict:
    meta = {"format": store.FORMAT, "model": model.name, "input": model.spec.describe(), "mean": list(model.spec.mean),
            "std": list(model.spec.std), "weights": weights_sha256(model.module),
            "layers": [info.name for info in layers], "top_k": top_k}
    dictionaries = {info.name: load_dictionary(info.concepts).sha256 for info in layers if info.concepts}
    return meta | ({"dictionaries": dictionaries} if dictionaries else {})


def _describe(meta: dict) -> str:
    return f"{meta['model']} at {meta['input']} (layers {', '.join(meta['layers'])}, top {meta['top_k']})"


def _prepare(connection: sqlite3.Connection, model: StudioModel, layers: Sequence[LayerInfo], top_k: int,
             path: str | Path) -> dict[str, list]:
    """Record what a new index is built with, and each layer's receptive fields; refuse an index built with
    anything else. Returns the fields per layer."""
    meta = _meta(model, layers, top_k)
    with store.transaction(connection):
        stored = store.read_meta(connection)
        if not stored:
            store.write_meta(connection, meta)
            for rank, info in enumerate(layers):
                store.write_layer(connection, rank, info.name, info.channels, info.spatial,
                                  receptive_fields(model, info))
    differ = [key for key in meta if stored and stored.get(key) != meta[key]]
    if differ:
        raise StudioError(f"{str(path)!r} indexes {_describe(stored)}, not {_describe(meta)} ({', '.join(differ)} "
                          "differ); give the same model, input, layers and top-k, or a new --out file.")
    return {name: fields for name, (_, _, fields) in store.read_layers(connection).items()}


def _unseen(connection: sqlite3.Connection, files: Sequence[Path]) -> list[tuple[Path, int, float]]:
    """The files not yet seen, with their byte count and modification time; one warning when files already
    indexed have changed since (they keep their first reading)."""
    seen = store.seen_images(connection)
    todo, changed = [], 0
    for path in files:
        status = path.stat()
        now = (status.st_size, status.st_mtime)
        if str(path) not in seen:
            todo.append((path, *now))
        elif tuple(seen[str(path)]) != now:
            changed += 1
    if changed:
        warnings.warn(f"{changed} indexed image(s) changed since they were indexed and keep their first reading; "
                      "index into a new file to read them again.", stacklevel=3)
    return todo


def _index(connection: sqlite3.Connection, model: StudioModel, layers: Sequence[LayerInfo],
           states: Sequence[LayerState], todo: Sequence[tuple[Path, int, float]], readings: Iterable[BatchReading],
           progress: bool, path: str | Path) -> None:
    """Commit each batch's images, in file order, with the state they change."""
    spec = model.spec
    expected = store.image_count(connection)[0]
    with tqdm(total=len(todo), unit="img", desc=f"indexing into {Path(path).name}", disable=not progress) as bar:
        for reading in readings:
            readable = torch.tensor([not error for error in reading.errors])
            with store.transaction(connection):
                if store.image_count(connection)[0] != expected:
                    raise StudioError(f"Another process is writing {str(path)!r}; let it finish, or index into "
                                      "another file.")
                rows = [(str(todo[i][0]), todo[i][1], todo[i][2], size.tolist() if not error else None, error or None)
                        for i, size, error in zip(reading.indices.tolist(), reading.sizes, reading.errors)]
                ids = torch.tensor(store.add_images(connection, rows))
                for state, info in zip(states, layers if reading.summaries else ()):
                    changed = state.update(reading.summaries[info.path], ids[readable], reading.sizes[readable],
                                           spec.size)
                    store.save_state(connection, state, changed)
            expected += len(rows)
            for error in filter(None, reading.errors):
                warnings.warn(f"Skipped an unreadable image: {error}", UnreadableImage, stacklevel=3)
            bar.update(len(rows))


def _read_on(pool: WorkerPool, model: StudioModel, keys: list[str], paths: Sequence[Path],
             batch: int) -> Iterator[BatchReading]:
    """The files' batches read by ``pool``'s workers from bytes read here, yielded in file order."""
    tasks = ((model.name, keys, start, [str(p) for p in paths[start:start + batch]],
              [_contents(p) for p in paths[start:start + batch]]) for start in range(0, len(paths), batch))
    for _, reading in pool.map(read_contents, tasks, ordered=True):
        yield reading


def _contents(path: Path) -> bytes | None:
    """A file's bytes, or None when it cannot be read here (the worker then reads it, and says why not)."""
    try:
        return path.read_bytes()
    except OSError:
        return None
