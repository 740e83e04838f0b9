"""Ray workers (the optional ``feature-studio[ray]`` extra): one actor per GPU, or per group of CPUs, holds the
models on its device and runs tasks on them; the results come back to this process (the driver), which writes
everything, so workers need no shared folder. Gallery batches (``studio.gallery.rendering.render_job``) and
dataset-example batches (``studio.exemplars.reading.read_contents``) run on them.

A worker that dies is restarted by Ray and its tasks run again (``max_restarts``, ``max_task_retries``); each
result reaches the driver once.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

from studio.errors import StudioError
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

    def map(self, function: Callable, tasks: Iterable[tuple], ordered: bool = False) -> Iterator[tuple]:
        """``(task, function(model, *rest))`` for every task ``(model name, *rest)``, run on the least busy
        worker: as workers finish, or in the tasks' order when ``ordered``. ``function`` is importable (Ray sends
        it by name); ``tasks`` is read lazily, at most two per worker being out at a time. A task's
        :class:`StudioError` is raised here as it is."""
        ray, tasks, window = self.ray, iter(tasks), 2 * len(self.actors)
        running, finished, load = {}, {}, dict.fromkeys(self.actors, 0)
        submitted = yielded = 0
        while True:
            for task in itertools.islice(tasks, window - (submitted - yielded)):
                actor = min(load, key=load.get)
                running[actor.call.remote(function, *task)] = (submitted, task, actor)
                load[actor] += 1
                submitted += 1
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1)
            number, task, actor = running.pop(ready[0])
            load[actor] -= 1
            finished[number] = (task, _result(ray, ready[0]))
            while finished and (not ordered or yielded in finished):
                yield finished.pop(yielded if ordered else next(iter(finished)))
                yielded += 1

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


def _result(ray, reference):
    """A finished task's value; its StudioError (a clear message about the user's input) raised as it is."""
    try:
        return ray.get(reference)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, StudioError):
            raise error.cause from None
        raise


def _import_paths() -> list[str]:
    """Where this process finds the studio, so that workers on this machine import the same code."""
    import studio

    return [os.path.dirname(os.path.dirname(os.path.abspath(studio.__file__)))]


class _Worker:
    """One Ray actor: the models on its device (its GPU, or the CPU), running tasks on them. On the CPU it
    uses the driver's thread count: PyTorch's CPU kernels sum in an order that depends on it, and the same
    count gives the same numbers as a one-process run."""

    def __init__(self, models: Mapping[str, StudioModel], threads: int) -> None:
        torch.set_num_threads(threads)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {name: load_model(model, device=device) for name, model in models.items()}

    def pid(self) -> int:
        """The worker's process id (to watch or stop it from outside)."""
        return os.getpid()

    def call(self, function: Callable, model: str, *rest):
        """``function`` on the model called ``model`` and the task's other arguments."""
        return function(self.models[model], *rest)
