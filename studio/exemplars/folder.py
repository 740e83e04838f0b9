"""A folder of images as the model takes them: the files, decoded and resized in ``DataLoader`` workers so that
decoding overlaps the model's compute; an unreadable file comes back as an error message, not an exception."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from studio.errors import StudioError
from studio.io import read_input
from studio.models import InputSpec, resize_to_input

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
STACK_SUFFIXES = (".tif", ".tiff")


def list_images(folder: str | Path, spec: InputSpec) -> list[Path]:
    """Every image file below ``folder`` (recursive, sorted; JPEG, PNG and TIFF, or TIFF only for volumes), as
    absolute paths, each once (links resolved)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise StudioError(f"Folder {str(folder)!r} does not exist; give a folder of images to index.")
    suffixes = STACK_SUFFIXES if spec.dims == 3 else PHOTO_SUFFIXES
    return sorted({path.resolve() for path in root.rglob("*") if path.suffix.lower() in suffixes and path.is_file()})


class ImageFiles(Dataset):
    """Item ``i``: ``(i, image [C, *input size] in [0, 1], the file's own size [dims], error message or "")``,
    read from the files, or decoded from their bytes ``contents`` read elsewhere (a Ray worker's batch)."""

    def __init__(self, paths: Sequence[Path], spec: InputSpec, contents: Sequence[bytes] | None = None) -> None:
        self.paths, self.spec, self.contents = list(paths), spec, contents

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor, torch.Tensor, str]:
        spec = self.spec
        try:
            image = read_input(self.paths[index], spec.channels, spec.dims,
                               None if self.contents is None else self.contents[index])
        except StudioError as error:
            return index, torch.zeros(spec.channels, *spec.size), torch.zeros(spec.dims, dtype=torch.long), str(error)
        size = torch.tensor(image.shape[1:], dtype=torch.long)
        return index, resize_to_input(image[None], spec)[0], size, ""


def _one_thread(_worker: int) -> None:
    """Each worker decodes with one thread, leaving the cores to the other workers and the model."""
    torch.set_num_threads(1)


def image_batches(paths: Sequence[Path], spec: InputSpec, batch: int, workers: int, device: torch.device) -> DataLoader:
    """Batches of :class:`ImageFiles` in file order, decoded by ``workers`` processes (0: in this one)."""
    if batch < 1 or workers < 0:
        raise StudioError(f"The batch must be at least 1 and workers at least 0, not batch {batch}, workers {workers}.")
    return DataLoader(ImageFiles(paths, spec), batch_size=batch, shuffle=False, num_workers=workers,
                      pin_memory=device.type == "cuda", worker_init_fn=_one_thread if workers else None,
                      prefetch_factor=4 if workers else None)
