"""One engine batch of a gallery: the job (items of one model, settings and seed) and how it renders, the same
in this process and on a Ray worker (``studio.cluster``)."""

from __future__ import annotations

from dataclasses import dataclass

from studio.batching import Batcher
from studio.engine import optimize
from studio.gallery.spec import Item, OutputOptions
from studio.io import to_uint8
from studio.models import StudioModel
from studio.settings import RenderSettings


@dataclass(frozen=True)
class Job:
    """One engine batch: items of one model, settings and seed, at most ``size`` of them (an out-of-memory
    error splits it further where it runs)."""

    model: str
    settings: RenderSettings
    seed: int
    size: int
    items: tuple[Item, ...]


def render_part(model: StudioModel, part: list[Item], settings: RenderSettings, seed: int, output: OutputOptions,
                on_step=None) -> tuple:
    """Render ``part`` in one engine batch (every image with the unit's seed itself, so an image depends on
    its unit and seed, not on its batch); returns ``(RenderResult, uint8 frames per item or None)``."""
    animate = output.animation != "none"
    every = max(1, settings.steps // output.frames) if animate else max(1, settings.steps // 32)
    frames = [[] for _ in part] if animate else None
    for snapshot in optimize(model, [item.unit.target for item in part], settings, seed=[seed] * len(part),
                             snapshot_every=every):
        if on_step is not None:
            on_step(snapshot.step)
        if frames is not None:
            for item_frames, image in zip(frames, snapshot.images):
                item_frames.append(to_uint8(image))
        if snapshot.done:
            return snapshot.result, frames
    raise RuntimeError("optimize() ended without a final snapshot")


def render_job(model: StudioModel, job: Job, output: OutputOptions) -> tuple[list, list]:
    """A whole job on a worker: ``([(item ids, (RenderResult, frames)), ...], halvings)``, in engine batches
    halved on out-of-memory, with images and results on the CPU to travel back to the driver."""
    batcher = Batcher(job.size)
    parts = []
    for part, (result, frames) in batcher.run(list(job.items), lambda part: render_part(model, part, job.settings,
                                                                                       job.seed, output)):
        result.images, result.history, result.clean_values = (
            result.images.cpu(), result.history.cpu(), result.clean_values.cpu())
        parts.append(({item.id for item in part}, (result, frames)))
    return parts, batcher.halvings
