"""How good a dictionary is, measured through the same encoding every concept target uses: explained variance
(R²) of the reconstruction from the sparse code, sparsity (mean L0), dead concepts, and each concept's
frequency (the share of rows where it is active)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from studio.concepts.dictionary import Dictionary

#: Rows encoded at a time (keeps the [rows, concepts] codes small).
CHUNK = 8192


@dataclass(frozen=True)
class Quality:
    """R² on held-out rows; mean L0 there; concepts active on no row of all of them; rows measured."""

    r2: float
    l0: float
    dead: int
    held_out: int

    def as_record(self) -> dict:
        return asdict(self)


def measure(dictionary: Dictionary, held_out: torch.Tensor, every_row: torch.Tensor) -> tuple[Quality, torch.Tensor]:
    """Quality on ``held_out`` rows (not trained on) and each concept's frequency over ``every_row``."""
    residual = total = active = 0.0
    mean = held_out.double().mean(0)
    for chunk in held_out.split(CHUNK):
        codes = dictionary.codes(dictionary.encode(chunk))
        residual += (chunk - dictionary.reconstruct(codes)).double().pow(2).sum().item()
        total += (chunk.double() - mean).pow(2).sum().item()
        active += (codes > 0).sum().item()
    counts = torch.zeros(dictionary.concepts, dtype=torch.float64)
    for chunk in every_row.split(CHUNK):
        counts += (dictionary.codes(dictionary.encode(chunk)) > 0).sum(0).double()
    frequency = (counts / max(len(every_row), 1)).float()
    r2 = 1 - residual / total if total > 0 else float("nan")
    return Quality(r2, active / max(len(held_out), 1), int((counts == 0).sum()), len(held_out)), frequency
