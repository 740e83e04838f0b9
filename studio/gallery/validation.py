"""Validation of a gallery spec with locations: every mistake is one sentence naming the file, the line and
the key. The render settings are checked by their own :class:`studio.settings.SettingField` rules."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping

from studio.checks import check_seed
from studio.errors import StudioError
from studio.settings import SettingField, setting_fields

#: Keys that may appear wherever render settings may: every render setting, the seeds, and the batch size.
SETTINGS_KEYS = (*(spec.name for spec in setting_fields()), "seeds", "batch")
Span = tuple[int, int] | None


class Source:
    """The raw TOML text, to point error messages at the line where a key or value is written."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str, name: str) -> None:
        self.lines = text.splitlines()
        self.name = name

    def section(self, header: str, index: int = 0) -> tuple[int, int]:
        """1-based line range of the ``index``-th table called ``header`` (whole text when not found)."""
        starts = [n for n, line in enumerate(self.lines, 1)
                  if (m := self._HEADER.match(line)) and m.group(1).replace('"', "") == header]
        if index >= len(starts):
            return 1, len(self.lines)
        start = starts[index]
        end = next((n - 1 for n in range(start + 1, len(self.lines) + 1)
                    if (m := self._HEADER.match(self.lines[n - 1]))
                    and not m.group(1).replace('"', "").startswith(f"{header}.")), len(self.lines))
        return start, end

    def top(self) -> tuple[int, int]:
        """Lines before the first table header."""
        first = next((n for n, line in enumerate(self.lines, 1) if self._HEADER.match(line)), len(self.lines) + 1)
        return 1, first - 1

    def find(self, pattern: str, span: Span = None) -> int | None:
        start, end = span or (1, len(self.lines))
        regex = re.compile(pattern)
        return next((n for n in range(start, end + 1) if regex.search(self.lines[n - 1])), None)

    def key_line(self, key: str, span: Span = None) -> int | None:
        return self.find(rf'(^|[{{,])\s*["\']?{re.escape(key)}["\']?\s*=', span)

    def value_line(self, value: str, span: Span = None) -> int | None:
        return self.find(re.escape(value), span) if value else None


class Checker:
    """Validation with locations: ``fail(where, message, line)`` raises a one-sentence ``StudioError``."""

    def __init__(self, source: Source | None) -> None:
        self.source = source

    def fail(self, where: str, message: str, line: int | None = None):
        if self.source is not None:
            prefix = f"{self.source.name} line {line}, {where}" if line else f"{self.source.name}, {where}"
        else:
            prefix = where
        raise StudioError(f"{prefix}: {message[:1].lower() + message[1:]}")

    def line(self, key: str, span: Span = None) -> int | None:
        return self.source.key_line(key, span) if self.source else None

    def value_line(self, value: str, span: Span = None) -> int | None:
        return self.source.value_line(value, span) if self.source else None

    def section(self, header: str, index: int = 0) -> Span:
        return self.source.section(header, index) if self.source else None

    def keys(self, table: Mapping, allowed: tuple[str, ...], where: str, span: Span = None) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}?" if close else f"valid keys are {', '.join(allowed)}."
                self.fail(where, f"unknown key {key!r}; {hint}", self.line(key, span))

    def typed(self, value, kind: type, where: str, key: str, span: Span, *, minimum=None, maximum=None, choices=None):
        """Check one value's type, range and allowed choices with the render settings' own rule
        (:meth:`SettingField.check`), located at its key; return it (ints accepted where floats are)."""
        try:
            return SettingField(key, kind, None, "", choices, minimum, maximum).check(value)
        except StudioError as error:
            self.fail(where, str(error), self.line(key, span))

    def settings(self, table: Mapping, inherited: dict, where: str, span: Span) -> dict:
        """Merge the render settings, seeds and batch of ``table`` over ``inherited``, checking each value."""
        merged = dict(inherited)
        for spec in setting_fields():
            if spec.name in table:
                try:
                    merged[spec.name] = spec.check(table[spec.name])
                except StudioError as error:
                    self.fail(where, str(error), self.line(spec.name, span))
        if "seeds" in table:
            seeds = table["seeds"]
            seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
            if not isinstance(seeds, list) or not seeds:
                self.fail(where, f"seeds must be a whole number or a list of them (e.g. [0, 1, 2]), not {table['seeds']!r}.",
                          self.line("seeds", span))
            try:
                seeds = [check_seed(seed, "each seed") for seed in seeds]
            except StudioError as error:
                self.fail(where, str(error), self.line("seeds", span))
            merged["seeds"] = list(dict.fromkeys(seeds))
        if "batch" in table:
            batch = table["batch"]
            if batch != "auto":
                batch = self.typed(batch, int, where, "batch", span, minimum=1)
            merged["batch"] = None if batch == "auto" else batch
        return merged
