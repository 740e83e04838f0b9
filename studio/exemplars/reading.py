"""A batch of image files read through the model: decoded, run to the indexed layers and reduced to the small
:class:`~studio.exemplars.ranking.BatchSummary` per layer that the index keeps; the same here and on a Ray
worker, which decodes files from their bytes (it needs no view of the folder)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import default_collate

from studio.exemplars.folder import ImageFiles, image_batches
from studio.exemplars.ranking import BatchSummary, summarise
from studio.hooks import frozen
from studio.models import StudioModel
from studio.targets import activations


@dataclass(frozen=True)
class BatchReading:
    """One batch: the files' positions in the list being indexed ``indices`` ``[B]``, their own ``sizes``
    ``[B, dims]``, an error message per file ("" when read), and per layer key the summary of the readable ones."""

    indices: torch.Tensor
    sizes: torch.Tensor
    errors: list[str]
    summaries: dict[str, BatchSummary]


def read_batch(model: StudioModel, keys: Sequence[str], batch: tuple) -> BatchReading:
    """Run one decoded ``(indices, images, sizes, errors)`` batch of :class:`ImageFiles` to the layers ``keys``."""
    indices, images, sizes, errors = batch
    readable = torch.tensor([not error for error in errors])
    inputs = (images if readable.all() else images[readable]).to(model.device, non_blocking=True)
    if not len(inputs):
        return BatchReading(indices, sizes, list(errors), {})
    with torch.no_grad(), frozen(model.module):
        acts = activations(model, model.spec.normalise(inputs), list(keys))
        return BatchReading(indices, sizes, list(errors), {key: summarise(acts[key]) for key in keys})


def read_files(model: StudioModel, keys: Sequence[str], paths: Sequence[Path], batch: int,
               workers: int) -> Iterator[BatchReading]:
    """The files in batches of ``batch``, decoded by ``workers`` processes (0: this one) while the model runs."""
    for decoded in image_batches(paths, model.spec, batch, workers, model.device):
        yield read_batch(model, keys, decoded)


def read_contents(model: StudioModel, keys: Sequence[str], start: int, paths: Sequence[str],
                  contents: Sequence[bytes]) -> BatchReading:
    """One batch from the files' bytes (``paths`` only name them), the first being file ``start`` of the list."""
    files = ImageFiles([Path(path) for path in paths], model.spec, contents)
    indices, images, sizes, errors = default_collate([files[i] for i in range(len(files))])
    return read_batch(model, keys, (indices + start, images, sizes, errors))
