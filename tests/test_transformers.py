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
