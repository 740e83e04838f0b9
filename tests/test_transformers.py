"""Vision transformers through the one target home: token layers (with class, distillation prefix tokens),
channel-last maps (Swin, ConvNeXt's MLPs), window-partitioned layers refused; rendering and Grad-CAM through
them. Random weights (nothing is downloaded), small and fast on the CPU."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.cli import main
from studio.targets import activations, layer_info, parse_target
from tests.conftest import hook_count

#: Model, a layer, its layout description, and the side of one grid cell in input pixels.
CASES = {
    "vit": ("vit_tiny_patch16_224", "blocks.6.mlp.act", "tokens: 1 prefix + 14x14 grid, 768 channels", 16),
    "deit": ("deit_tiny_distilled_patch16_224", "blocks.0.norm1", "tokens: 2 prefix + 14x14 grid, 192 channels", 16),
    "swin": ("swin_tiny_patch4_window7_224", "layers.0.blocks.0.norm1", "channel-last 56x56, 96 channels", 4),
    "convnext": ("convnext_atto", "stages.2.blocks.0", "map 14x14, 160 channels", 16),
}


@pytest.fixture(scope="module")
def models() -> dict[str, studio.StudioModel]:
    torch.manual_seed(0)
    return {key: studio.load_model(f"timm:{name}", pretrained=False, device="cpu") for key, (name, *_) in CASES.items()}


@pytest.mark.parametrize("key", list(CASES))
def test_layouts_are_read_from_the_model(models, key):
    _, layer, description, _ = CASES[key]
    assert layer_info(models[key], layer).describe() == description


def test_swin_mlp_tokens_have_no_prefix_and_window_attention_names_the_block(models):
    assert layer_info(models["swin"], "layers.0.blocks.0.mlp.act").describe() == "tokens: 0 prefix + 56x56 grid, 384 channels"
    with pytest.raises(studio.StudioError, match=r"folds images into windows \(shape \[64, 49, 96\].*"
                                                 r"target the block output 'layers.0.blocks.0' instead"):
        parse_target("layers.0.blocks.0.attn:3", models["swin"])


def test_token_target_syntax_and_its_errors(models):
    vit, deit = models["vit"], models["deit"]
    assert parse_target("blocks.6:12@cls", vit).key == "blocks.6@prefix"
    assert parse_target("blocks.6.mlp.act:12@3,4", vit).position == (3, 4)
    assert parse_target("blocks.3:5@token1", deit).prefix_token == 1  # the distillation token
    assert parse_target("blocks.3:5@token1", deit).file_stem(192) == "c005_token1"
    with pytest.raises(studio.StudioError, match="has 1 prefix token.*@cls; not @token1"):
        parse_target("blocks.6:12@token1", vit)
    with pytest.raises(studio.StudioError, match=r"outside the 14x14 token grid.*prefix tokens are @cls, @token1"):
        parse_target("blocks.3:5@14,2", deit)
    with pytest.raises(studio.StudioError, match="has no prefix tokens"):
        parse_target("patch_embed:5@cls", vit)


def _plant(model: studio.StudioModel, layer: str, channel: int, where: tuple[int, int] | None):
    """A forward hook that sets one channel of one grid cell (or, for ``None``, of the class token) to 1000,
    written in the layer's own layout."""
    info = layer_info(model, layer)

    def hook(_module, _inputs, output):
        output = output.clone()
        if info.layout == "tokens":
            index = 0 if where is None else info.prefix + where[0] * info.spatial[1] + where[1]
            output[:, index, channel] = 1000.0
        elif info.layout == "channel-last":
            output[:, where[0], where[1], channel] = 1000.0
        else:
            output[:, channel, where[0], where[1]] = 1000.0
        return output
    return dict(model.module.named_modules())[layer].register_forward_hook(hook)


@pytest.mark.parametrize("key", list(CASES))
def test_a_planted_token_is_found_at_its_pixel_block(models, key):
    """Prefix and grid handling are right: a value planted in one cell of the layer's own layout is read back
    at that grid cell, and Grad-CAM of that neuron peaks in the matching block of input pixels."""
    model, (_, layer, _, cell) = models[key], CASES[key]
    rows, cols = layer_info(model, layer).spatial
    where = (rows // 3, cols - 2)
    handle = _plant(model, layer, 7, where)
    try:
        image = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        grid = activations(model, model.spec.normalise(image), [layer])[layer]
        assert divmod(int(grid[0, 7].argmax()), cols) == where
        heat = studio.attribute(model, image, f"{layer}:7@{where[0]},{where[1]}", "gradcam")[0]
    finally:
        handle.remove()
    y, x = divmod(int(heat.argmax()), heat.shape[1])
    assert (y // cell, x // cell) == where and heat.shape == (224, 224)
    assert hook_count(model.module) == 0


def test_class_token_is_read_from_the_prefix(models):
    vit = models["vit"]
    handle = _plant(vit, "blocks.6", 12, None)
    try:
        value = studio.explain(vit, torch.rand(3, 224, 224), "blocks.6:12@cls", "saliency").scores
    finally:
        handle.remove()
    assert value.item() == 1000.0


def test_rendering_raises_a_token_unit_far_above_natural_photos(models, photos):
    """The post-GELU MLP neuron of a ViT block (Ghiasi et al. 2022), rendered through the same engine."""
    vit = models["vit"]
    target = parse_target("blocks.6.mlp.act:12", vit)
    natural = torch.stack([torch.nn.functional.interpolate(p[None], size=(224, 224), mode="bilinear",
                                                           antialias=True)[0] for p in photos.values()])
    with torch.no_grad():
        best = target(activations(vit, vit.spec.normalise(natural), [target.key])[target.key]).max()
    result = studio.render(vit, "blocks.6.mlp.act:12", steps=96, size=224, param="pixel", lr=0.2, transforms="none")
    with torch.no_grad():  # judged again, independently of the engine, on the final image
        again = target(activations(vit, vit.spec.normalise(result.images), [target.key])[target.key])
    torch.testing.assert_close(again, result.clean_values, rtol=1e-4, atol=1e-4)
    assert best > 0 and result.clean_values[0] > 5 * best, (float(result.clean_values[0]), float(best))


def test_gradcam_on_tokens_is_at_image_resolution_and_follows_the_target(models, photos):
    vit = models["vit"]
    photo = photos["chelsea"]
    one = studio.attribute(vit, photo, 1, "gradcam", layer="blocks.10")
    two = studio.attribute(vit, photo, 2, "gradcam", layer="blocks.10")
    assert one.shape == (1, *photo.shape[1:])
    assert one.abs().sum() > 0 and not torch.allclose(one, two)


def test_studio_layers_shows_each_layout(capsys):
    assert main(["layers", "timm:deit_tiny_distilled_patch16_224", "--random-weights", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "tokens: 2 prefix + 14x14 grid, 192 channels" in out and "logits (model output)" in out


class TinyViT(torch.nn.Module):
    """Two attention blocks over a 2x2 patch grid and a class token, built from timm's Attention."""

    num_prefix_tokens = 1

    def __init__(self) -> None:
        from timm.models.vision_transformer import Attention

        super().__init__()
        self.patch = torch.nn.Conv2d(3, 8, 4, 4)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.blocks = torch.nn.ModuleList([torch.nn.ModuleDict({"attn": Attention(8, num_heads=2)}) for _ in range(2)])
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), self.patch(x).flatten(2).transpose(1, 2)], 1)
        for block in self.blocks:
            tokens = tokens + block["attn"](tokens)
        return self.head(tokens[:, 0])


def _weights_from_qkv(model: studio.StudioModel, images: torch.Tensor, blocks: list[str]) -> list[torch.Tensor]:
    """softmax(q k^T / sqrt(d)) of each block, recomputed by hand from its qkv projection on the fused path."""
    modules = dict(model.module.named_modules())
    outputs = {}
    handles = [modules[f"{b}.qkv"].register_forward_hook(lambda m, i, o, b=b: outputs.__setitem__(b, o)) for b in blocks]
    try:
        with torch.no_grad():
            model.module(model.spec.normalise(images))
    finally:
        for handle in handles:
            handle.remove()
    weights = []
    for block in blocks:
        attention = modules[block]
        b, n, _ = outputs[block].shape
        q, k, _ = outputs[block].reshape(b, n, 3, attention.num_heads, -1).permute(2, 0, 3, 1, 4)
        weights.append((q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1))
    return weights


def _rollout_by_hand(weights: list[torch.Tensor]) -> torch.Tensor:
    """Abnar & Zuidema's rollout written out with numpy: per image, mean heads, add I, renormalise, chain."""
    import numpy as np

    out = []
    for image in range(len(weights[0])):
        joint = np.eye(weights[0].shape[-1])
        for block in weights:
            a = block[image].mean(0).numpy()
            a = 0.5 * a + 0.5 * np.eye(len(a))
            a = a / a.sum(1, keepdims=True)
            joint = a @ joint
        out.append(torch.from_numpy(joint))
    return torch.stack(out).float()


def test_attention_rollout_equals_a_hand_computation_on_a_tiny_transformer():
    torch.manual_seed(3)
    model = studio.StudioModel(TinyViT().eval(), studio.InputSpec((8, 8)), "tiny")
    images = torch.rand(2, 3, 8, 8)
    expected_rollout = _rollout_by_hand(_weights_from_qkv(model, images, ["blocks.0.attn", "blocks.1.attn"]))
    rolled = studio.explain(model, images, 1, "attention_rollout")
    grid = expected_rollout[:, 0, 1:].reshape(2, 1, 2, 2)
    expected = torch.nn.functional.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(rolled.maps, expected, rtol=1e-5, atol=1e-6)
    first = _weights_from_qkv(model, images, ["blocks.0.attn"])[0]
    one = studio.explain(model, images, 1, "attention", layer="blocks.0", head=1, query="1,0")
    expected_one = first[:, 1, 1 + 2, 1:].reshape(2, 1, 2, 2)  # query: patch row 1, column 0 (after the class token)
    torch.testing.assert_close(one.maps, torch.nn.functional.interpolate(expected_one, size=(8, 8), mode="bilinear",
                                                                         align_corners=False)[:, 0], rtol=1e-5, atol=1e-6)
    assert one.layer == "blocks.0.attn" and all(b["attn"].fused_attn for b in model.module.blocks)


def test_vit_attention_maps_come_from_its_non_fused_weights_and_leave_it_fused(models, photos):
    vit = models["vit"]
    photo = torch.nn.functional.interpolate(photos["coffee"][None], size=(224, 224), mode="bilinear")[0]
    blocks = [f"blocks.{i}.attn" for i in range(12)]
    expected = _rollout_by_hand(_weights_from_qkv(vit, photo[None], blocks))[:, 0, 1:].reshape(1, 1, 14, 14)
    rolled = studio.explain(vit, photo, None, "attention_rollout")
    resized = torch.nn.functional.interpolate(expected, size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(rolled.maps, resized, rtol=1e-4, atol=1e-6)
    last = studio.explain(vit, photo, None, "attention")
    assert last.layer == "blocks.11.attn" and last.maps.shape == (1, 224, 224)
    assert all(block.attn.fused_attn for block in vit.module.blocks) and hook_count(vit.module) == 0
    with pytest.raises(studio.StudioError, match="has no prefix tokens.*row,column"):
        studio.attribute(models["swin"], photo, 1, "attention")
    with pytest.raises(studio.StudioError, match="folds images into windows"):
        studio.attribute(models["swin"], photo, 1, "attention", layer="layers.0.blocks.0", query="3,3")
    with pytest.raises(studio.StudioError, match="no attention layers"):
        studio.attribute(models["convnext"], photo, 1, "attention_rollout")


@pytest.mark.parametrize("key, layer", [("vit", "blocks.11.norm1"), ("deit", "blocks.11.norm1"), ("swin", "norm"),
                                        ("convnext", "norm_pre")])
def test_default_gradcam_layer_is_the_last_map_the_score_reaches(models, key, layer, photos):
    """A ViT's head reads the class token only, so its last patch tokens get no gradient and Grad-CAM there is
    all zero; the default is the last map the score still reaches (for a CNN, its last convolutional block)."""
    from studio.attribution import default_cam_layer

    model = models[key]
    assert default_cam_layer(model) == layer
    heat = studio.attribute(model, photos["chelsea"], 1, "gradcam")
    assert heat.abs().sum() > 0
    if key == "vit":  # the token layers after it are dead ends for the class score
        assert studio.attribute(model, photos["chelsea"], 1, "gradcam", layer="norm").abs().sum() == 0
