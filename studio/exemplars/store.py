"""The index file: one SQLite database, written one transaction per batch (the batch's images marked seen
together with the top-k and statistics they changed), so a kill at any moment loses at most the batch in flight.

Tables (numbers as columns, lists as JSON text; nothing pickled):

- ``meta(key, value)``: what the index was built with (JSON values: ``format``, ``model``, ``input``, ``mean``,
  ``std``, ``weights`` (a SHA-256 of the parameters), ``layers``, ``top_k``);
- ``layers(name, rank, channels, grid, fields)``: each layer's grid shape and the receptive field (input pixels,
  ``[start, stop]``) of every index along each axis of its grid;
- ``images(id, path, bytes, mtime, size, error)``: every file seen, its size in pixels, or why it was unreadable;
- ``examples(layer, channel, rank, image, score, position, box)``: the top-k of each channel, best first;
- ``statistics(layer, channel, total, max, max_mean, histogram)``: sums and maxima over the readable images, and
  the histogram of their spatial maxima (:mod:`studio.exemplars.histogram`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from studio.errors import StudioError
from studio.exemplars import histogram
from studio.exemplars.ranking import LayerState

FORMAT = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (name TEXT PRIMARY KEY, rank INTEGER NOT NULL, channels INTEGER NOT NULL,
                                   grid TEXT NOT NULL, fields TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, bytes INTEGER NOT NULL,
                                   mtime REAL NOT NULL, size TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS examples (layer TEXT NOT NULL, channel INTEGER NOT NULL, rank INTEGER NOT NULL,
                                     image INTEGER NOT NULL REFERENCES images (id), score REAL NOT NULL,
                                     position TEXT NOT NULL, box TEXT NOT NULL, PRIMARY KEY (layer, channel, rank));
CREATE TABLE IF NOT EXISTS statistics (layer TEXT NOT NULL, channel INTEGER NOT NULL, total REAL NOT NULL,
                                       max REAL NOT NULL, max_mean REAL NOT NULL, histogram TEXT NOT NULL,
                                       PRIMARY KEY (layer, channel));
"""


def open_index(path: str | Path, write: bool = False) -> sqlite3.Connection:
    """A connection to the index at ``path`` (created when ``write``; else it must exist), in autocommit mode:
    writes go through :func:`transaction`."""
    path = Path(path).expanduser()
    if not write and not path.is_file():
        raise StudioError(f"No dataset-example index at {str(path)!r}; build one with `studio index MODEL FOLDER "
                          f"--layers LAYERS --out {path}`.")
    try:
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, isolation_level=None)
            tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "meta" not in tables:
                raise sqlite3.DatabaseError("it holds other tables")
            connection.executescript(SCHEMA)
        else:
            connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        connection.execute("SELECT value FROM meta LIMIT 1").fetchall()
    except sqlite3.DatabaseError as error:
        raise StudioError(f"{str(path)!r} is not a dataset-example index ({error}); give the file "
                          "`studio index` wrote, or a new --out path.") from None
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed when the block ends, rolled back on any exception (an interrupt too)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield connection
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def read_meta(connection: sqlite3.Connection) -> dict:
    """What the index was built with (empty for a new file)."""
    return {key: json.loads(value) for key, value in connection.execute("SELECT key, value FROM meta")}


def write_meta(connection: sqlite3.Connection, meta: dict) -> None:
    """Record what a new index is built with."""
    connection.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])


def read_layers(connection: sqlite3.Connection) -> dict[str, tuple[int, tuple[int, ...], list]]:
    """Each indexed layer, in the order given: its channels, grid shape and receptive fields."""
    rows = connection.execute("SELECT name, channels, grid, fields FROM layers ORDER BY rank")
    return {name: (channels, tuple(json.loads(grid)), json.loads(fields)) for name, channels, grid, fields in rows}


def write_layer(connection: sqlite3.Connection, rank: int, name: str, channels: int, grid: Sequence[int],
                fields: list) -> None:
    """Record a layer of a new index: its channels, grid shape and receptive fields."""
    connection.execute("INSERT INTO layers VALUES (?, ?, ?, ?, ?)",
                       (name, rank, channels, json.dumps(list(grid)), json.dumps(fields)))


def seen_images(connection: sqlite3.Connection) -> dict[str, tuple[int, float]]:
    """Every file already seen (readable or not): its byte count and modification time then."""
    return {path: (size, mtime) for path, size, mtime in connection.execute("SELECT path, bytes, mtime FROM images")}


def image_count(connection: sqlite3.Connection) -> tuple[int, int]:
    """How many files were seen, and how many of them were unreadable."""
    return connection.execute("SELECT count(*), count(error) FROM images").fetchone()


def add_images(connection: sqlite3.Connection, rows: Sequence[tuple[str, int, float, list[int] | None, str | None]],
               ) -> list[int]:
    """Record files as seen (path, bytes, mtime, pixel size or None, error or None); returns their ids."""
    ids = []
    for path, size, mtime, pixels, error in rows:
        cursor = connection.execute("INSERT INTO images (path, bytes, mtime, size, error) VALUES (?, ?, ?, ?, ?)",
                                    (path, size, mtime, None if pixels is None else json.dumps(pixels), error))
        ids.append(cursor.lastrowid)
    return ids


def load_state(connection: sqlite3.Connection, name: str, channels: int, top_k: int, fields: list,
               dims: int) -> LayerState:
    """A layer's state as the index holds it (empty for a new index)."""
    state = LayerState.empty(name, channels, top_k, fields, dims)
    rows = connection.execute("SELECT channel, rank, image, score, position, box FROM examples WHERE layer = ?",
                              (name,))
    for channel, rank, image, score, position, box in rows:
        state.scores[channel, rank], state.images[channel, rank] = score, image
        state.positions[channel, rank] = torch.tensor(json.loads(position), dtype=torch.long)
        state.boxes[channel, rank] = torch.tensor(json.loads(box), dtype=torch.long)
    rows = connection.execute("SELECT channel, total, max, max_mean, histogram FROM statistics WHERE layer = ?",
                              (name,))
    for channel, total, peak, best_mean, counts in rows:
        state.total[channel], state.peak[channel], state.best_mean[channel] = total, peak, best_mean
        state.counts[channel] = histogram.decode(counts)
    return state


def save_state(connection: sqlite3.Connection, state: LayerState, changed: Sequence[int]) -> None:
    """Write a layer's statistics (every channel) and the top-k of the ``changed`` channels."""
    columns = zip(state.total.tolist(), state.peak.tolist(), state.best_mean.tolist(),
                  map(histogram.encode, state.counts))
    connection.executemany("INSERT OR REPLACE INTO statistics VALUES (?, ?, ?, ?, ?, ?)",
                           [(state.name, channel, *values) for channel, values in enumerate(columns)])
    connection.executemany("DELETE FROM examples WHERE layer = ? AND channel = ?", [(state.name, c) for c in changed])
    columns = (state.images[changed].tolist(), state.scores[changed].tolist(), state.positions[changed].tolist(),
               state.boxes[changed].tolist())
    connection.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?)", [
        (state.name, channel, rank, image, score, json.dumps(position), json.dumps(box))
        for channel, *ranked in zip(changed, *columns)
        for rank, (image, score, position, box) in enumerate(zip(*ranked)) if image >= 0])


def read_examples(connection: sqlite3.Connection, layer: str, channel: int) -> list[tuple]:
    """One channel's top-k, best first: (path, score, position, box) with position and box as lists."""
    rows = connection.execute("SELECT images.path, score, position, box FROM examples JOIN images ON image = images.id "
                              "WHERE layer = ? AND channel = ? ORDER BY rank", (layer, channel))
    return [(path, score, json.loads(position), json.loads(box)) for path, score, position, box in rows]


def read_statistics(connection: sqlite3.Connection, layer: str,
                    channel: int) -> tuple[float, float, float, np.ndarray] | None:
    """One channel's (total, max, max_mean, histogram counts), or None before any readable image."""
    row = connection.execute("SELECT total, max, max_mean, histogram FROM statistics WHERE layer = ? AND channel = ?",
                             (layer, channel)).fetchone()
    return None if row is None else (*row[:3], histogram.decode(row[3]))
