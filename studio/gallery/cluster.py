"""Rendering a gallery's batches on Ray workers (the optional ``feature-studio[ray]`` extra): one actor per GPU,
or per group of CPUs, holds the spec's models and renders whole jobs; it returns the images and records, and
the driver writes them with the gallery's own atomic, resumable logic, so workers need no shared folder.

A worker that dies is restarted by Ray and its job run again (``max_restarts``, ``max_task_retries``); results
come back in completion order and each item is written once, by the driver.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping, Sequence

import torch

from studio.batching import Batcher
from studio.errors import StudioError
from studio.gallery.rendering import Job, render_part
from studio.models import StudioModel, load_model

def ray_module():
    """Ray, or the one sentence that says how to install it."""
    try:
        import ray
    except ImportError as error:
        raise StudioError(f"--ray needs Ray ({error}); install it with pip install 'feature-studio[ray]'.") from None
    return ray


class WorkerPool:
    """Actors on the Ray cluster at ``address`` (None: start Ray on this machine), ``workers`` of them, each
    holding ``models`` on its own device: one per GPU (the default count), or on CPUs, each taking as many as
    the driver's thread count (default: as many workers as fit). More workers than the cluster holds would
    wait forever, so that is refused; a Ray started here is given the logical CPUs asked for."""

    def __init__(self, models: Mapping[str, StudioModel], address: str | None = None, workers: int | None = None) -> None:
        ray = ray_module()
        if workers is not None and workers < 1:
            raise StudioError(f"Give at least one Ray worker, not {workers}.")
        threads = torch.get_num_threads()
        if not ray.is_initialized():
            local = {"num_cpus": max(os.cpu_count() or 1, (workers or 1) * threads)} if address is None else {}
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(_import_paths())}}, **local)
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
        fits = gpus or max(1, cpus // threads)
        count = workers or fits
        if count > fits:
            what = f"{gpus} GPUs" if gpus else f"{cpus} CPUs, {threads} per worker (this process's threads)"
            raise StudioError(f"The Ray cluster holds {fits} worker(s) ({what}), not {count}; give --workers {fits} "
                              "or fewer.")
        options = {"num_gpus": 1} if gpus else {"num_cpus": threads}
        actor = ray.remote(max_restarts=-1, max_task_retries=-1, **options)(_Worker)
        # the models stay referenced here, so that Ray can restart a dead worker from them
        self.shared = ray.put({name: model if model.device.type == "cpu" else copy.deepcopy(model).to("cpu")
                               for name, model in models.items()})
        self.ray, self.actors = ray, [actor.remote(self.shared, threads) for _ in range(count)]

    def render(self, jobs: Sequence[Job], output) -> Iterator[tuple]:
        """``(job, [(item ids, (RenderResult, frames)), ...], halvings)`` for every job, as workers finish."""
        ray, free, running = self.ray, list(self.actors), {}
        pending = list(jobs)
        while pending or running:
            while pending and free:
                actor, job = free.pop(), pending.pop(0)
                running[actor.render.remote(job, output)] = (actor, job)
            ready, _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(ready[0])
            free.append(actor)
            parts, halvings = ray.get(ready[0])
            yield job, parts, halvings

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def _import_paths() -> list[str]:
    """Where this process finds the studio, so that workers on this machine import the same code."""
    import studio

    return [os.path.dirname(os.path.dirname(os.path.abspath(studio.__file__)))]


class _Worker:
    """One Ray actor: the spec's models on its device (its GPU, or the CPU), rendering jobs. On the CPU it
    uses the driver's thread count: PyTorch's CPU kernels sum in an order that depends on it, and the same
    count gives the same pixels as a one-process run."""

    def __init__(self, models: Mapping[str, StudioModel], threads: int) -> None:
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {name: load_model(model, device=device) for name, model in models.items()}

    def pid(self) -> int:
        """The worker's process id (to watch or stop it from outside)."""
        return os.getpid()

    def render(self, job: Job, output) -> tuple[list, list]:
        """The job's items in engine batches (halved on out-of-memory), images and results on the CPU."""
        batcher = Batcher(job.size)
        parts = []
        for part, (result, frames) in batcher.run(list(job.items), lambda part: render_part(
                self.models[job.model], part, job.settings, job.seed, output)):
            result.images, result.history, result.clean_values = (
                result.images.cpu(), result.history.cpu(), result.clean_values.cpu())
            parts.append(({item.id for item in part}, (result, frames)))
        return parts, batcher.halvings
