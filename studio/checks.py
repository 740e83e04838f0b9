"""One validation of numbers and of output paths, shared by the CLI, the gallery, the viewer and the Python
API, so that what one refuses the others refuse too, in the same sentence."""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from studio.errors import StudioError


def check_number(name: str, value: object, kind: type = float, *, minimum: float | None = None,
                 maximum: float | None = None, positive: bool = False) -> int | float:
    """``value`` as ``kind`` (``int``: a whole number; ``float``: any finite real, a whole number included),
    within the limits, or a one-sentence ``StudioError`` naming ``name`` and what it accepts."""
    given = value
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif kind is float and is_real:
        try:
            value = float(value)
        except OverflowError:  # a whole number past float's range
            value = math.inf
        if not math.isfinite(value):
            raise StudioError(f"{name} must be a finite number, not {given!r}.")
    else:
        raise StudioError(f"{name} must be {'a whole number' if kind is int else 'a number'}, not {given!r}.")
    if positive and value <= 0:
        raise StudioError(f"{name} must be positive, not {given!r}.")
    if minimum is not None and value < minimum:
        raise StudioError(f"{name} must be at least {_shown(minimum)}, not {given!r}.")
    if maximum is not None and value > maximum:
        raise StudioError(f"{name} must be at most {_shown(maximum)}, not {given!r}.")
    return value


def _shown(limit: float) -> str:
    """A limit as a user wrote it: whole numbers in full (2**63 - 1, not 9.22e+18), others short."""
    return str(int(limit)) if float(limit).is_integer() else f"{limit:g}"


#: Seeds are hashed as signed 64-bit integers on the device.
SEED_LIMIT = 2**63


def check_seed(value, name: str = "seed") -> int:
    """A seed: a whole number in ``[0, 2**63)``."""
    return check_number(name, value, int, minimum=0, maximum=SEED_LIMIT - 1)


def _nearest_existing(path: Path) -> Path:
    """``path`` itself when it exists, else its closest existing ancestor (where new folders would start)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(path: Path, option: str, given: Path) -> None:
    """The folder ``path`` exists or can be created, and this user may write in it (``given`` is what the
    user named, for the message)."""
    start = _nearest_existing(path)
    if not start.is_dir():
        raise StudioError(f"{option} {str(given)!r} cannot be written: {str(start)!r} is a file, not a folder.")
    if not os.access(start, os.W_OK | os.X_OK):
        raise StudioError(f"{option} {str(given)!r} cannot be written: you have no write permission in "
                          f"{str(start)!r}; give another place.")


def output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a folder a run can create and write into, checked before any work: not a file, not under
    a file, not in a folder this user cannot write."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StudioError(f"{option} {str(path)!r} is a file, not a folder; give a folder for the outputs.")
    _check_writable(path, option, path)
    return path


def output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a file a run can write (created or replaced atomically), checked before any work: not a
    folder, and in a folder that exists or can be created and that this user may write in."""
    path = Path(path)
    if path.is_dir():
        raise StudioError(f"{option} {str(path)!r} is a folder; give a file name that no folder has.")
    _check_writable(path.parent, option, path)
    return path
