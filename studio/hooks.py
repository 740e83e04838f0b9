"""Activation capture and model state: forward hooks that live for one pass, the cut-short forward, output
shapes, and the frozen (eval, no parameter gradients) context. Imported by ``models`` and ``targets`` alike,
so neither needs the other to hook a module.

Hooks exist only for the duration of one forward pass (``capture``), are placed only on the modules asked
for, and the forward pass is cut short (``_StopForward``) once all of them have fired.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from studio.errors import StudioError

#: Key under which the root module's output (the model output, ``logits`` in target strings) is captured.
OUTPUT = ""


class _StopForward(Exception):
    """Raised from a hook once every needed activation is captured, to skip the rest of the network."""


def first_tensor(output) -> torch.Tensor:
    """The tensor a module returned: itself, or the first entry of a tuple, list or dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise StudioError(f"A hooked layer returned {type(output).__name__}; target a layer that outputs a tensor.")


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
            captured[name] = first_tensor(output)
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
    (``OUTPUT`` is the model output; ``clone``: protect them from later in-place ops, see :func:`capture`)."""
    layers = list(layers)
    hooked = [name for name in layers if name != OUTPUT]
    with capture(module, hooked, stop_early=OUTPUT not in layers, clone=clone) as captured:
        try:
            output = module(inputs)
            if OUTPUT in layers:
                captured[OUTPUT] = first_tensor(output)
        except _StopForward:
            pass
    missing = [name for name in layers if name not in captured]
    if missing:
        raise StudioError(f"Layer(s) {', '.join(map(repr, missing))} never ran in the forward pass; pick layers "
                          "that the model's forward actually calls.")
    return captured


def record_output_shapes(module: nn.Module, probe: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape (batch included) of every submodule that runs on ``probe``, in forward order, and of the
    whole model under ``OUTPUT``; modules that return no tensor are left out. A batch other than the probe's
    marks a layer that folds images together (window-partitioned attention)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []

    def hook_for(name: str):
        def hook(_module, _inputs, output) -> None:
            if name not in shapes:
                try:
                    shapes[name] = tuple(first_tensor(output).shape)
                except StudioError:
                    pass
        return hook

    try:
        for name, sub in module.named_modules():
            if name and not isinstance(sub, torch.jit.ScriptModule):
                handles.append(sub.register_forward_hook(hook_for(name)))
        with torch.no_grad():
            output = module(probe)
    finally:
        for handle in handles:
            handle.remove()
    shapes[OUTPUT] = tuple(first_tensor(output).shape)
    return shapes


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
