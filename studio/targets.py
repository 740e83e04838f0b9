"""Target syntax (``blocks.4:12@7,7``, ``logits:"Egyptian cat"``), validation, and activation capture hooks.

Hooks exist only for the duration of one forward pass (``capture``), are placed only on the modules an
objective needs, and the forward pass is cut short (``_StopForward``) once all of them have fired.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from studio.errors import StudioError

if TYPE_CHECKING:
    from studio.models import StudioModel

#: Name for the model's final output in target strings (mapped to a module called ``logits`` if one exists).
LOGITS = "logits"
#: Key under which the root module's output is captured.
OUTPUT = ""

_TARGET_RE = re.compile(r"""^\s*(?P<layer>[^:@]+?)\s*(?::\s*(?P<unit>"[^"]*"|'[^']*'|[^@]+?))?\s*(?:@\s*(?P<y>-?\d+)\s*,\s*(?P<x>-?\d+))?\s*$""")


@dataclass(frozen=True)
class Target:
    """One unit: a module (``layer``, a ``named_modules`` path, ``""`` for the model output), optionally a
    channel and a spatial position. ``text`` is the string it was parsed from, for labels and files."""

    layer: str
    channel: int | None = None
    position: tuple[int, int] | None = None
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.layer


class _StopForward(Exception):
    """Raised from a hook once every needed activation is captured, to skip the rest of the network."""


@contextmanager
def capture(module: nn.Module, layers: Iterable[str], stop_early: bool = True,
            clone: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Hook ``layers`` of ``module`` for the duration of the block; the dict fills in as the forward runs.

    Run the forward through :func:`forward_to` (or catch ``_StopForward`` yourself when ``stop_early``).
    Hooks are removed on every exit path, exceptions and KeyboardInterrupt included. With ``clone``, the
    rest of the forward gets a clone of each captured output, so a later in-place op (``ReLU(inplace=True)``,
    ``out += identity``) cannot overwrite the captured tensor or re-route its gradient.
    """
    wanted = list(dict.fromkeys(layers))
    modules = dict(module.named_modules())
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: tuple, output) -> None:
            if name in captured:
                return
            captured[name] = output if isinstance(output, torch.Tensor) else _first_tensor(output)
            if stop_early and len(captured) == len(wanted) and name != OUTPUT:
                raise _StopForward
            return output.clone() if clone and isinstance(output, torch.Tensor) else None
        return hook

    try:
        for name in wanted:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def forward_to(module: nn.Module, inputs: torch.Tensor, layers: Iterable[str],
               clone: bool = False) -> dict[str, torch.Tensor]:
    """Run ``module`` on ``inputs`` only as far as needed and return the outputs of ``layers``
    (``clone``: protect them from later in-place ops, see :func:`capture`)."""
    layers = list(layers)
    hooked = [name for name in layers if name != OUTPUT]
    with capture(module, hooked, stop_early=OUTPUT not in layers, clone=clone) as captured:
        try:
            output = module(inputs)
            if OUTPUT in layers:
                captured[OUTPUT] = output if isinstance(output, torch.Tensor) else _first_tensor(output)
        except _StopForward:
            pass
    missing = [name for name in layers if name not in captured]
    if missing:
        raise StudioError(f"Layer(s) {', '.join(map(repr, missing))} never ran in the forward pass; pick layers "
                          "that the model's forward actually calls.")
    return captured


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise StudioError(f"A hooked layer returned {type(output).__name__}; target a layer that outputs a tensor.")


def record_output_shapes(model: StudioModel) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of every module that runs, in forward order, at the model's input size."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output) -> None:
            if name not in shapes:
                try:
                    shapes[name] = tuple((output if isinstance(output, torch.Tensor) else _first_tensor(output)).shape[1:])
                except StudioError:
                    pass
        return hook

    try:
        for name, sub in model.module.named_modules():
            if name and not isinstance(sub, torch.jit.ScriptModule):
                handles.append(sub.register_forward_hook(hook_for(name)))
        probe = torch.zeros(1, 3, *model.spec.size, device=model.device)
        with torch.no_grad():
            output = model.module(probe)
    finally:
        for handle in handles:
            handle.remove()
    shapes[OUTPUT] = tuple((output if isinstance(output, torch.Tensor) else _first_tensor(output)).shape[1:])
    return shapes


def resolve_layer(model: StudioModel, layer: str) -> str:
    """The module path for a layer name (``logits`` means the model output unless a module has that name)."""
    shapes = model.layer_shapes
    if layer in shapes:
        return layer
    if layer == LOGITS and OUTPUT in shapes:
        return OUTPUT
    if isinstance(dict(model.module.named_modules()).get(layer), torch.jit.ScriptModule):
        raise StudioError(f"Cannot hook layer {layer!r} of a TorchScript model; target its output ('logits') "
                          "or load the model as a regular nn.Module.")
    names = [n for n in shapes if n]
    close = difflib.get_close_matches(layer, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise StudioError(f"Unknown layer {layer!r} in {model.name}: {hint}run `studio layers {model.name}` to list them.")


def parse_target(text: str | Target, model: StudioModel) -> Target:
    """Parse and validate a target string against ``model``; errors name the closest valid choice."""
    if isinstance(text, Target):
        return text
    match = _TARGET_RE.match(text)
    if match is None:
        raise StudioError(f"Cannot read target {text!r}: write layer, layer:channel, layer:channel@y,x or logits:\"label\".")
    layer = resolve_layer(model, match["layer"])
    shape = model.layer_shapes[layer]
    unit, channel = match["unit"], None
    if unit is not None:
        unit = unit.strip()
        if unit.isdigit():
            channel = int(unit)
        elif layer == OUTPUT or unit[:1] in "\"'":
            channel = model.class_index(unit.strip("\"'"))
        else:
            raise StudioError(f"Channel {unit!r} in {text!r} is not a number; class labels apply to 'logits' only.")
        if not 0 <= channel < shape[0]:
            raise StudioError(f"Channel {channel} is out of range for {match['layer']!r}: valid channels are 0 to {shape[0] - 1}.")
    position = None
    if match["y"] is not None:
        if len(shape) != 3:
            raise StudioError(f"Layer {match['layer']!r} has no spatial map (shape {list(shape)}); drop the @y,x part.")
        if channel is None:
            raise StudioError(f"A neuron position needs a channel: write {match['layer']}:CHANNEL@{match['y']},{match['x']}.")
        y, x = int(match["y"]), int(match["x"])
        if not (0 <= y < shape[1] and 0 <= x < shape[2]):
            raise StudioError(f"Position {y},{x} is outside the {shape[1]}x{shape[2]} map of {match['layer']!r}: "
                              f"rows 0 to {shape[1] - 1}, columns 0 to {shape[2] - 1}.")
        position = (y, x)
    return Target(layer, channel, position, text.strip())


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients for the block; the ``training`` and ``requires_grad`` flags
    are restored afterwards, on every exit path."""
    training = {m: m.training for m in module.modules()}
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in training.items():
            m.training = mode
