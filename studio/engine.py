"""The optimisation loop, written once: a generator of snapshots that ``render``, the CLI, the gallery and
the napari worker all consume.

Each step renders the parameterised images, transforms each one randomly, runs the model only as far
as the deepest layer the objective needs (hooks live for that one forward pass), and takes an Adam step
on the sum of per-image objectives, so every image's gradient is independent of the batch size.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from studio.errors import StudioError
from studio.hooks import frozen
from studio.memory import check_render
from studio.models import StudioModel, load_model, resize_to_input
from studio.objectives import IMAGE, Objective, units
from studio.objectives import layer as deepdream
from studio.param import ImageParam, image
from studio.param.image import seeds_for
from studio.settings import RenderSettings
from studio.targets import Target, activations, module_of, parse_targets
from studio.transforms import TransformSettings, counter_uniform, draw_count, random_affine

TargetSpec = str | int | Target


@dataclass
class RenderResult:
    """Images ``[B, C, *size]`` (2D or 3D) in ``[0, 1]``, objective history ``[steps, B]``, each image's objective on its
    final, un-transformed image (``clean_values``), the settings that ran (the provenance record) and the
    accumulated gradient magnitude per pixel ``[B, *size]`` behind :attr:`alpha`."""

    images: torch.Tensor
    history: torch.Tensor
    clean_values: torch.Tensor
    objective_name: str
    targets: list[Target] | None
    settings: dict
    seconds: float
    gradient_mass: torch.Tensor | None = None

    @property
    def alpha(self) -> torch.Tensor | None:
        """MACO's transparency map (Fel et al. 2023) ``[B, *size]`` in ``[0, 1]``: the magnitude of the
        objective's gradient with respect to each pixel, summed over channels and every step, scaled by its 99th
        percentile. Where it is high, the pixels moved the objective most: where the unit looks."""
        if self.gradient_mass is None:
            return None
        from studio.display import display_map

        return torch.stack([display_map(mass) for mass in self.gradient_mass])

    @property
    def clean_activations(self) -> torch.Tensor:
        """The earlier name of ``clean_values`` (for a unit target it is that unit's activation)."""
        return self.clean_values

    def uint8(self) -> list:
        """The images as ``H x W x 3`` uint8 numpy arrays."""
        from studio.io import to_uint8

        return [to_uint8(img) for img in self.images]


@dataclass
class Snapshot:
    """Progress of a run: step, current images (CPU), per-image objective ``[B]`` on the transformed
    images of that step, and each term's value; on a canvas, the step's ``boxes`` ``[B, K, dims, 2]`` (start
    and stop of each box along each image axis, in pixels). The last snapshot has ``done`` and ``result`` set."""

    step: int
    steps: int
    images: torch.Tensor
    values: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    done: bool = False
    result: RenderResult | None = None
    boxes: torch.Tensor | None = None


def objective_for(model: StudioModel, objective: Objective | TargetSpec | Sequence[TargetSpec]
                  ) -> tuple[Objective, list[Target] | None]:
    """An objective from an ``Objective``, or from targets (one per image, in order; an expression such as
    ``blocks.4:0-7`` names several): units of one layer share one vectorised gather."""
    if isinstance(objective, Objective):
        return objective, None
    if isinstance(objective, (str, int, Target)):
        specs = [objective]
    elif isinstance(objective, Sequence):
        specs = list(objective)
    else:
        raise StudioError(f"Cannot render {objective!r}: give a target string such as blocks.4:12, a list of them, "
                          "or an Objective.")
    targets = [target for spec in specs for target in parse_targets(spec, model)]
    if not targets:
        raise StudioError("No target given; name at least one, e.g. blocks.4:12.")
    by_key: dict[str, list[int]] = {}
    for index, target in enumerate(targets):
        by_key.setdefault(target.key, []).append(index)
    parts = []
    for key, indices in by_key.items():
        if any(targets[i].whole_layer for i in indices):
            if len(targets) > 1:
                raise StudioError(f"Target {targets[indices[0]].name!r} names a whole layer; in a list of targets "
                                  "give each a channel.")
            parts.append(deepdream(key))
            continue
        parts.append(units(key, [targets[i].channel for i in indices], [targets[i].at for i in indices],
                           images=indices))
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    total.name = ", ".join(str(t) for t in targets)
    return total, targets


@dataclass(frozen=True)
class _View:
    """How the model sees the optimised images in a step: through ``transform`` (None: only resized), and for
    a canvas through boxes of ``box`` pixels at ``origins`` ``[B, K, dims]``, each seen as an image of ``size``."""

    transform: TransformSettings | None
    draws: torch.Tensor | None = None
    origins: torch.Tensor | None = None
    box: int | None = None
    size: int | None = None

    def boxes(self) -> torch.Tensor | None:
        """The boxes as :class:`Snapshot` gives them (image axis order, start and stop), on the CPU."""
        if self.origins is None:
            return None
        start = self.origins.flip(-1).cpu()  # x first -> the image's axis order
        return torch.stack([start, start + self.box], -1).long()


def _evaluate(model: StudioModel, objective: Objective, images: torch.Tensor, keys: list[str], view: _View,
              precision: str = "float32") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each image's objective ``[B]`` and terms on the model's view of ``images``; with a canvas, the mean over
    its boxes (one forward pass for all boxes of all images).

    Only the model's forward runs in ``precision``; parameterisation, colour and transforms stay float32.
    """
    if view.transform is None:
        inputs = resize_to_input(images, model.spec)
    else:
        inputs = random_affine(images, model.spec.size, view.transform, view.draws, view.origins, view.box, view.size)
    autocast = nullcontext() if precision == "float32" else torch.autocast(images.device.type, dtype=torch.bfloat16)
    with autocast:
        acts = activations(model, model.spec.normalise(inputs), keys)
    batch = len(images)
    crops = len(inputs) // batch
    values, terms = [], {}
    for k in range(crops):  # crop-major rows: crop k of every image
        part = {key: value[k * batch:(k + 1) * batch] for key, value in acts.items()}
        total, part_terms = objective.evaluate({**part, IMAGE: images})
        values.append(total)
        for name, term in part_terms.items():
            terms.setdefault(name, []).append(term)
    if crops == 1:
        return values[0], {name: parts[0] for name, parts in terms.items()}
    return torch.stack(values).mean(0), {name: torch.stack(parts).mean(0) for name, parts in terms.items()}


def canvas_grid(settings: RenderSettings, dims: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[n ** dims, dims]`` origins of the boxes that tile a canvas evenly (``n = ceil(1 / crop_size)`` per
    axis, overlapping where they must), where a canvas render's clean value is judged: every part counts."""
    n = math.ceil(1 / settings.crop_size - 1e-9)
    steps = torch.linspace(0, settings.canvas - settings.box, n, device=device).round()
    return torch.stack(torch.meshgrid(*[steps] * dims, indexing="ij"), -1).reshape(-1, dims)


def _check_finite(history: torch.Tensor, start: int, end: int) -> None:
    """Stop a run whose objective went NaN or infinite in steps ``start+1..end``, naming the first such step
    (checked once per snapshot, so the GPU is not synchronised every step)."""
    finite = torch.isfinite(history[start:end]).all(1)
    if not bool(finite.all()):
        first = start + int((~finite).nonzero()[0, 0]) + 1
        raise StudioError(f"The objective became NaN or infinite at step {first}; lower the learning rate, or "
                          "check the model's outputs for that input.")


def _step_view(settings: RenderSettings, transform: TransformSettings, draws: torch.Tensor, dims: int) -> _View:
    """A step's view: the transforms with this step's draws; with a canvas, boxes placed by the first ``dims``
    draws of each crop: a box centred uniformly on the canvas, moved inside it where it would stick out, so the
    canvas's edges are seen about half as often as its middle (uniform origins would almost never show them)."""
    if not settings.canvas:
        return _View(transform, draws[:, 0])
    box = settings.box
    origins = (draws[..., :dims] * settings.canvas - box / 2).clamp(0, settings.canvas - box).floor()
    return _View(transform, draws[..., dims:], origins, settings.box, settings.size)


def _clean_view(settings: RenderSettings, batch: int, dims: int, device: torch.device) -> _View:
    """The final judgement's view: the whole image resized, or every box of :func:`canvas_grid` untransformed."""
    if not settings.canvas:
        return _View(None)
    origins = canvas_grid(settings, dims, device)
    return _View(TransformSettings.preset("none"), torch.zeros(batch, len(origins), draw_count(dims), device=device),
                 origins.expand(batch, *origins.shape), settings.box, settings.size)


def optimize(model: StudioModel | str, objective: Objective | TargetSpec | Sequence[TargetSpec],
             settings: RenderSettings | None = None, *, seed: int | Sequence[int] = 0,
             snapshot_every: int | None = None, batch: int | None = None, init: torch.Tensor | None = None,
             **changes) -> Iterator[Snapshot]:
    """Optimise images to maximise ``objective``; yield a ``Snapshot`` every ``snapshot_every`` steps.

    ``objective`` is a target string (``blocks.4:12``, or ``blocks.4:0-7`` for several), a list of them (one
    image per target, one batch), or an ``Objective`` (then ``batch`` images, default 1). ``settings`` (a
    :class:`RenderSettings`) with ``changes`` by name (``steps=256, param="maco"``) say how; ``param`` may
    also be an ``ImageParam`` module of your own and ``transforms`` a ``TransformSettings`` of your own ranges.
    Validation happens before the first step.
    ``seed`` is one seed per image, or an int ``s`` (image ``i`` gets ``s + i``): an image's start and its
    random transforms depend only on its own seed, not on its batch mates. ``init`` starts from images.
    """
    model = load_model(model) if isinstance(model, str) else model
    custom = changes.pop("param") if isinstance(changes.get("param"), ImageParam) else None
    ranges = changes.pop("transforms") if isinstance(changes.get("transforms"), TransformSettings) else None
    settings = (settings or RenderSettings()).updated(changes)
    objective, targets = objective_for(model, objective)
    objective.bind(model)
    keys = [name for name in objective.layers if name != IMAGE]
    for key in keys:
        module_of(model, key)  # an unknown layer in a custom objective fails here, before the first step
    batch = len(targets) if targets is not None else (batch or 1)
    crops = settings.crops if settings.canvas else 1
    if custom is None:
        check_render(model, keys or [""], batch, settings.side, settings.param, crops)
    device = model.device
    seeds = seeds_for(seed, batch)
    param = custom or image(settings.side, batch, kind=settings.param, decorrelate=settings.decorrelate,
                            decay_power=settings.decay_power, seed=seeds, init=init, device=device,
                            channels=model.spec.channels, dims=model.spec.dims)
    dims = model.spec.dims
    draws_per_crop = draw_count(dims) + (dims if settings.canvas else 0)  # a canvas box's place, then its transforms
    transform = ranges or TransformSettings.preset(settings.transforms)
    seed_tensor = torch.tensor(seeds, dtype=torch.int64, device=device)
    every = snapshot_every or max(1, settings.steps // 32)
    record = {**settings.as_dict(), "model": model.name, "objective": objective.name,
              "targets": [t.name for t in targets or []], "seeds": seeds, "batch": batch, "device": str(device),
              "transform_ranges": transform.as_dict()}
    if custom is not None:  # the module ran, not the settings that would have built one
        for name in ("size", "decorrelate", "decay_power"):
            record.pop(name)
        record["param"] = f"custom {type(custom.latent).__name__}"
    if ranges is not None:
        record["transforms"] = "custom"
    if init is not None:
        record["init_sha256"] = hashlib.sha256(init.detach().float().cpu().numpy().tobytes()).hexdigest()
    steps, precision = settings.steps, settings.precision
    optimizer = torch.optim.Adam(param.parameters(), lr=settings.lr, fused=device.type == "cuda")
    history = torch.zeros(steps, batch, device=device)
    mass = None  # the accumulated |d objective / d pixel|, for the transparency map
    start, checked = time.perf_counter(), 0
    for step in range(1, steps + 1):
        # Entered per step, so a suspended generator leaves the caller's grad mode and the model's flags alone
        # (grad mode is thread-local: a napari worker thread needs it enabled here).
        with frozen(model.module), torch.enable_grad():
            images = param()
            images.retain_grad()
            draws = counter_uniform(seed_tensor, step, crops * draws_per_crop).view(batch, crops, draws_per_crop)
            view = _step_view(settings, transform, draws, dims)
            total, terms = _evaluate(model, objective, images, keys, view, precision)
            optimizer.zero_grad(set_to_none=True)
            (-total.sum()).backward()
            optimizer.step()
            if images.grad is not None:
                step_mass = images.grad.detach().abs().sum(1)
                mass = step_mass if mass is None else mass + step_mass
            history[step - 1] = total.detach()
        if step % every == 0 or step == steps:
            _check_finite(history, checked, step)
            checked = step
        if step % every == 0 and step < steps:
            with torch.no_grad():
                current = param().cpu()
            yield Snapshot(step, steps, current, total.detach().cpu(), {k: v.detach().cpu() for k, v in terms.items()},
                           boxes=view.boxes())
    with frozen(model.module), torch.no_grad():
        final = param().detach()
        clean, clean_terms = _evaluate(model, objective, final, keys, _clean_view(settings, batch, dims, device))
    if not (torch.isfinite(final).all() and torch.isfinite(clean).all()):  # the last update broke the images
        raise StudioError(f"The objective became NaN or infinite at step {steps}; lower the learning rate, or "
                          "check the model's outputs for that input.")
    result = RenderResult(final.cpu(), history.cpu(), clean.cpu(), objective.name, targets, record,
                          time.perf_counter() - start, None if mass is None else mass.cpu())
    yield Snapshot(steps, steps, result.images, total.detach().cpu(),
                   {k: v.cpu() for k, v in clean_terms.items()}, done=True, result=result)


def unit_values(model: StudioModel, targets: Sequence[Target], images: torch.Tensor) -> torch.Tensor:
    """Each target's value ``[B]`` on its image of ``images`` ``[B, C, *size]``, seen untransformed at the model's
    input size: a render's clean value for a unit, also when it was rendered through an objective of its own
    (an accentuation, a unit pushed down)."""
    with frozen(model.module), torch.no_grad():
        inputs = model.spec.normalise(resize_to_input(images.to(model.device), model.spec))
        acts = activations(model, inputs, [target.key for target in targets])
        return torch.stack([target(acts[target.key][i:i + 1])[0] for i, target in enumerate(targets)]).float().cpu()


def render(model: StudioModel | str, objective: Objective | TargetSpec | Sequence[TargetSpec],
           settings: RenderSettings | None = None, *, progress: bool = False, **options) -> RenderResult:
    """Run :func:`optimize` to the end and return its ``RenderResult`` (``progress`` shows a bar)."""
    from tqdm.auto import tqdm

    bar = None  # created at the first snapshot, so validation errors come before any progress output
    try:
        for snapshot in optimize(model, objective, settings, **options):
            bar = bar or tqdm(total=snapshot.steps, unit="step", disable=not progress)
            bar.update(snapshot.step - bar.n)
            bar.set_postfix(objective=f"{snapshot.values.mean().item():.3g}")
            if snapshot.done:
                return snapshot.result
    finally:
        if bar is not None:
            bar.close()
    raise RuntimeError("optimize() ended without a final snapshot")
