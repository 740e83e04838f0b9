"""Attention maps of vision transformers: one block's attention from a query token (the class token by
default) to the patch grid, and attention rollout (Abnar & Zuidema 2020) through every block.

The weights are read on the non-fused path: a timm attention module (``fused_attn``) runs with the flag off
for that forward, its ``attn_drop`` (the identity in eval mode) hands over the softmaxed ``[B, heads, N, N]``
matrix, and the flag is restored afterwards, on every exit path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from studio.attribution.machinery import chunked, scores
from studio.errors import StudioError
from studio.hooks import forward_to
from studio.models import StudioModel
from studio.targets import LayerInfo, Target, layer_info, resolve_layer, token_index


def attention_layers(model: StudioModel) -> list[str]:
    """The attention modules whose weights can be read (timm's ``Attention`` family), in forward order."""
    modules = dict(model.module.named_modules())
    return [name for name in model.layer_shapes
            if name and hasattr(modules[name], "fused_attn") and isinstance(getattr(modules[name], "attn_drop", None),
                                                                            torch.nn.Module)]


@contextmanager
def unfused(model: StudioModel, layers: Sequence[str]) -> Iterator[None]:
    """The attention ``layers`` on their non-fused path (which materialises the weights), restored after."""
    modules = dict(model.module.named_modules())
    flags = {name: modules[name].fused_attn for name in layers}
    try:
        for name in layers:
            modules[name].fused_attn = False
        yield
    finally:
        for name, flag in flags.items():
            modules[name].fused_attn = flag


def attention_weights(model: StudioModel, inputs: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Each attention layer's softmaxed weights ``[B, heads, N, N]`` for images at the model's input size."""
    with unfused(model, layers), torch.no_grad():
        captured = forward_to(model.module, model.spec.normalise(inputs), [f"{name}.attn_drop" for name in layers])
    return {name: captured[f"{name}.attn_drop"].float() for name in layers}


def _token_grid(model: StudioModel, layer: str) -> LayerInfo:
    info = layer_info(model, layer)  # window-partitioned attention (Swin) is refused here, naming its block
    if info.layout != "tokens":
        raise StudioError(f"Attention layer {layer!r} does not output tokens ({info.describe()}); attention maps "
                          "need a vision transformer's global attention (ViT, DeiT).")
    return info


def _attention_layer(model: StudioModel, layer: str | None) -> str:
    """The attention module meant: the given one (or the one inside a given block), else the last."""
    available = attention_layers(model)
    if not available:
        raise StudioError(f"{model.name} has no attention layers whose weights can be read; attention maps need a "
                          "timm vision transformer such as timm:vit_tiny_patch16_224.")
    if layer is None:
        return available[-1]
    name = layer if layer in dict(model.module.named_modules()) else resolve_layer(model, layer)  # a container too
    inside = [a for a in available if a == name or a.startswith(f"{name}.")]
    if not inside:
        raise StudioError(f"Layer {layer!r} holds no attention module; pick one of {', '.join(available[-3:])} "
                          f"(or {len(available)} in all, from {available[0]!r}).")
    return inside[0]


def attention(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *, layer: str | None = None,
              head: int | None = None, query: str = "cls", batch_size: int = 16) -> dict:
    """One block's attention from the ``query`` token (default the class token) to every patch, of one
    ``head`` or the mean over heads; the map does not depend on the target (its score is reported)."""
    name = _attention_layer(model, layer)
    info = _token_grid(model, name)
    row = token_index(info, query)
    maps = inputs.new_empty((len(inputs), *info.spatial))

    def step(a: int, b: int) -> None:
        weights = attention_weights(model, inputs[a:b], [name])[name]
        if head is not None and not 0 <= head < weights.shape[1]:
            raise StudioError(f"Head {head} is out of range for {name!r}: heads are 0 to {weights.shape[1] - 1}.")
        chosen = weights.mean(1) if head is None else weights[:, head]
        maps[a:b] = chosen[:, row, info.prefix:].reshape(b - a, *info.spatial)
    chunked(len(inputs), batch_size, step)
    return {"maps": maps, "scores": scores(model, inputs, targets, batch_size), "layer": name}


def rollout(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout of per-block weights ``[B, heads, N, N]`` (first block first): the mean over heads,
    ``0.5 A + 0.5 I`` with rows renormalised, multiplied from the first block to the last; ``[B, N, N]``."""
    result = None
    for block in weights:
        mixed = 0.5 * block.mean(1) + 0.5 * torch.eye(block.shape[-1], device=block.device)
        mixed = mixed / mixed.sum(-1, keepdim=True)
        result = mixed if result is None else mixed @ result
    return result


def attention_rollout(model: StudioModel, inputs: torch.Tensor, targets: Sequence[Target], *,
                      batch_size: int = 16) -> dict:
    """The class token's row of the rollout over every attention block, over the patch tokens."""
    layers = attention_layers(model)
    if not layers:
        _attention_layer(model, None)  # the no-attention error
    info = _token_grid(model, layers[-1])
    if info.prefix == 0:
        raise StudioError(f"{model.name} has no class token to roll attention out from ({info.describe()}).")
    maps = inputs.new_empty((len(inputs), *info.spatial))

    def step(a: int, b: int) -> None:
        weights = attention_weights(model, inputs[a:b], layers)
        tokens = {weights[name].shape[-1] for name in layers}
        if len(tokens) > 1:
            raise StudioError(f"{model.name}'s attention blocks see different token counts ({sorted(tokens)}: it pools "
                              "between stages); roll out needs one token sequence, use method='attention' per block.")
        maps[a:b] = rollout([weights[name] for name in layers])[:, 0, info.prefix:].reshape(b - a, *info.spatial)
    chunked(len(inputs), batch_size, step)
    return {"maps": maps, "scores": scores(model, inputs, targets, batch_size), "layer": layers}
