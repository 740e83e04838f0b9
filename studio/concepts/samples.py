"""A layer's activations over a folder of images, as the rows a dictionary learns from: one row per spatial
position (or token of the patch grid, or per image for a vector), sub-sampled evenly over the images to a
budget that fits in memory."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from studio.errors import StudioError, StudioNote
from studio.exemplars.folder import image_batches, list_images
from studio.hooks import frozen
from studio.memory import free_bytes
from studio.models import StudioModel
from studio.targets import CONCEPTS, activations, display_layer, layer_info, layer_key

#: The share of free memory the samples may take (training needs a few times as much again).
MEMORY_SHARE = 0.25


@dataclass(frozen=True)
class Samples:
    """``rows [N, C]`` (float32, on the CPU) from ``images`` readable files of ``files`` listed, at most
    ``per_image`` positions of each, and the image each row comes from (``image_of [N]``, so that rows can be
    held out by image); ``folder_sha256`` identifies the files' names and contents."""

    rows: torch.Tensor
    image_of: torch.Tensor
    layer: str
    files: int
    images: int
    per_image: int
    positions: int
    folder_sha256: str


def collect_samples(model: StudioModel, folder: str | Path, layer: str, max_samples: int = 100_000,
                    batch: int = 32, workers: int = 2, seed: int = 0, progress: bool = True) -> Samples:
    """The rows of ``layer`` over every image below ``folder``: each image gives the same number of randomly
    chosen positions (seeded), so that no image dominates; at most ``max_samples`` rows, fewer when the free
    memory would not hold them (said in a note)."""
    path = layer_key(model, layer)
    if CONCEPTS in path:
        raise StudioError(f"Learn a dictionary of a model layer, not of the dictionary {display_layer(path)!r}.")
    info = layer_info(model, path)
    files = list_images(folder, model.spec)
    if not files:
        raise StudioError(f"Folder {str(folder)!r} has no images (JPEG, PNG, TIFF) to learn concepts from.")
    positions = math.prod(info.spatial)
    budget = _budget(max_samples, info.channels)
    per_image = max(1, min(positions, math.ceil(budget / len(files))))
    generator = torch.Generator().manual_seed(seed)
    rows, owners, readable = [], [], 0
    loader = image_batches(files, model.spec, batch, workers, model.device)
    with (tqdm(total=len(files), unit="img", desc=f"reading {info.name}", disable=not progress) as bar,
          torch.no_grad(), frozen(model.module)):
        for _, images, _, errors in loader:
            keep = torch.tensor([not error for error in errors])
            if keep.any():
                inputs = images[keep].to(model.device, non_blocking=True)
                grid = activations(model, model.spec.normalise(inputs), [path])[path]
                flat = grid.reshape(len(grid), info.channels, -1).transpose(1, 2).float().cpu()  # [B, P, C]
                picks = torch.stack([torch.randperm(positions, generator=generator)[:per_image] for _ in flat])
                rows.append(flat.gather(1, picks[..., None].expand(-1, -1, info.channels)).reshape(-1, info.channels))
                owners.append(torch.arange(readable, readable + len(flat)).repeat_interleave(per_image))
                readable += len(flat)
            for error in filter(None, errors):
                warnings.warn(f"Skipped an unreadable image: {error}", StudioNote, stacklevel=2)
            bar.update(len(errors))
    if not rows:
        raise StudioError(f"None of the {len(files)} files in {str(folder)!r} could be read as an image.")
    samples, image_of = torch.cat(rows), torch.cat(owners)
    if len(samples) > budget:
        kept = torch.randperm(len(samples), generator=generator)[:budget]
        samples, image_of = samples[kept], image_of[kept]
    return Samples(samples, image_of, info.name, len(files), readable, per_image, positions,
                   folder_sha256(files, folder))


def _budget(max_samples: int, channels: int) -> int:
    """``max_samples``, or as many rows as a share of the free memory holds when that is fewer."""
    if max_samples < 1:
        raise StudioError(f"Learn from at least 1 sample, not {max_samples}.")
    free = free_bytes(torch.device("cpu"))
    fits = max_samples if free is None else int(free * MEMORY_SHARE // (channels * 4))
    if fits < max_samples:
        warnings.warn(f"Keeping {fits} of the {max_samples} samples asked for: that is what a quarter of the "
                      f"free memory ({free / 2**30:.1f} GiB) holds at {channels} channels.", StudioNote, stacklevel=3)
    return max(1, min(max_samples, fits))


def folder_sha256(files: Sequence[Path], folder: str | Path) -> str:
    """SHA-256 over the files' paths (relative to ``folder``) and contents, in sorted order: the same images
    give the same hash wherever the folder lies."""
    root, hasher = Path(folder).expanduser().resolve(), hashlib.sha256()
    for path in sorted(files):
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            name = path.as_posix()
        hasher.update(f"{name}\0".encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                hasher.update(chunk)
    return hasher.hexdigest()
