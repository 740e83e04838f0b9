"""Fixed signed-log bins for per-channel quantiles: integer counts that add up exactly across batches, so a
resumed index holds the same histogram as an uninterrupted run, at a size that does not grow with the folder.

Bins are 64 per decade of magnitude from 1e-4 to 1e5, on each side of zero (a value's bin is within 1.8 % of it);
magnitudes below 1e-4 fall in the zero bin, those above 1e5 in the outermost bin.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

LOW, HIGH, PER_DECADE = -4, 5, 64
#: Bins on each side of zero; bin ``SIDE`` is zero, ``SIDE + s`` and ``SIDE - s`` are the s-th magnitude step.
SIDE = (HIGH - LOW) * PER_DECADE
BINS = 2 * SIDE + 1


def bins(values: torch.Tensor) -> torch.Tensor:
    """The bin of each value, as int64 of the same shape."""
    magnitude = values.abs()
    step = ((magnitude.clamp_min(10.0 ** LOW).log10() - LOW) * PER_DECADE).floor().long() + 1
    step = torch.where(magnitude < 10.0 ** LOW, 0, step.clamp(1, SIDE))
    return SIDE + values.sign().long() * step


def quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile of the values counted in ``counts`` (``[BINS]``): the geometric centre of the bin that
    holds the value of rank ``ceil(q * n)``; NaN when nothing is counted."""
    total = int(counts.sum())
    if total == 0:
        return math.nan
    index = int(np.searchsorted(np.cumsum(counts), max(1, math.ceil(q * total))))
    step = index - SIDE
    if step == 0:
        return 0.0
    return math.copysign(10.0 ** (LOW + (abs(step) - 0.5) / PER_DECADE), step)


def encode(counts: np.ndarray) -> str:
    """One channel's counts as JSON text of its non-empty bins and their counts, ``[[bin, ...], [count, ...]]``."""
    (nonzero,) = np.nonzero(counts)
    return json.dumps([nonzero.tolist(), counts[nonzero].tolist()])


def decode(text: str) -> np.ndarray:
    """The counts ``[BINS]`` (int64) that :func:`encode` wrote."""
    counts = np.zeros(BINS, dtype=np.int64)
    nonzero, values = json.loads(text)
    counts[nonzero] = values
    return counts
