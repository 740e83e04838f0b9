"""A JSON-lines journal of finished work: a header line with the job's settings, then one line per finished item,
each on disk before the next starts, so a killed job (an evaluation, a remove-and-retrain benchmark) reruns
only what it had not finished."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from studio.errors import StudioError
from studio.io import write_text

T = TypeVar("T")


def _write(path: Path, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def resume_journal(path: Path, settings: dict, what: str, parse: Callable[[dict], T]) -> list[T]:
    """The records a killed job with these ``settings`` wrote to ``path``, each read by ``parse``; a new journal
    (its header only) when there is none. A journal of other settings is an error naming ``what`` it holds; a last line cut off
    mid-write is dropped and rewritten away, so the records appended next start on lines of their own."""
    settings = json.loads(json.dumps(settings))  # as the header reads back (tuples as lists)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write(path, [{"settings": settings}])
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("settings") != settings:
        raise StudioError(f"{str(path.parent)!r} holds {what} with other settings ({path.name}); give another "
                          "output folder, or delete it to start over.")
    records, parsed = [], []
    for number, line in enumerate(lines[1:], 2):
        try:
            record = json.loads(line)
            parsed.append(parse(record))
            records.append(record)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if number != len(lines):
                raise StudioError(f"{str(path)!r} is damaged at line {number}; delete the folder to start over.") from None
    _write(path, [header, *records])
    return parsed


def append_record(path: Path, record: dict) -> None:
    """One JSON line, flushed to disk before the next item starts."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
