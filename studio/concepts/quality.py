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
    """R² and mean L0 on ``held_out`` rows (of images not trained on; on every row when ``held_out`` is 0:
    too few images to hold one out), and the concepts active on no row at all."""

    r2: float
    l0: float
    dead: int
    held_out: int

    def as_record(self) -> dict:
        return asdict(self)


def measure(dictionary: Dictionary, rows: torch.Tensor, held: torch.Tensor,
            device: torch.device | str = "cpu") -> tuple[Quality, torch.Tensor]:
    """Quality on the rows ``held`` marks (every row when none is), and each concept's frequency over all
    ``rows``: one encoding of each row, in chunks, on ``device``."""
    measured = held if held.any() else torch.ones_like(held)
    mean = rows[measured].double().mean(0).to(device)
    residual = total = active = 0.0
    counts = torch.zeros(dictionary.concepts, dtype=torch.float64, device=device)
    for chunk, mask in zip(rows.split(CHUNK), measured.split(CHUNK)):
        chunk, mask = chunk.to(device), mask.to(device)
        codes = dictionary.codes(dictionary.encode(chunk))
        counts += (codes > 0).sum(0).double()
        kept, kept_codes = chunk[mask], codes[mask]
        residual += (kept - dictionary.reconstruct(kept_codes)).double().pow(2).sum().item()
        total += (kept.double() - mean).pow(2).sum().item()
        active += (kept_codes > 0).sum().item()
    r2 = 1 - residual / total if total > 0 else float("nan")
    quality = Quality(r2, active / int(measured.sum()), int((counts == 0).sum()), int(held.sum()))
    return quality, (counts / len(rows)).float().cpu()
