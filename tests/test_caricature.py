"""The caricature (Lucid's): its value is the dot product times the cosine's power against the photo's activations,
read when a render binds it; a render's activations end far closer to the photo's than a free render's; the CLI
writes it and says how close it came."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import studio
from studio import objectives as obj
from studio.cli import main
from studio.commands.caricature import cosine_to_photo


class Identity(nn.Module):
    """A model whose layer ``0`` is its input, so the photo's activations are the photo."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Identity(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("power", [0.0, 2.0])
def test_the_value_is_the_mean_dot_product_times_the_clamped_cosine_power(power):
    model = studio.load_model(Identity(), device="cpu", input=studio.InputSpec((4, 4), mean=(0.0,) * 3, std=(1.0,) * 3))
    photo = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(0))
    objective = obj.caricature(photo, "body.0", cossim_pow=power)
    renders = torch.stack([photo, -photo, torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(1))])
    with pytest.raises(studio.StudioError, match="through the model"):
        objective({"body.0": renders})
    values = objective.bind(model)({"body.0": renders})
    a, p = renders.flatten(1), photo.flatten()[None]
    cosine = torch.nn.functional.cosine_similarity(a, p)
    expected = (a * p).mean(1) * cosine.clamp_min(0.1) ** power
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-6)
    assert values[0] == pytest.approx(photo.pow(2).mean().item(), rel=1e-5)  # the photo itself: cosine 1


def test_a_caricature_sees_the_photo_far_more_than_a_free_render_does(lite0, photos):
    photo = photos["chelsea"]
    drawn = studio.render(lite0, obj.caricature(photo, "blocks.3"), steps=24, size=64)
    free = studio.render(lite0, "blocks.3", steps=24, size=64)
    noise = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    closeness = cosine_to_photo(lite0, "blocks.3", photo, torch.cat([drawn.images, free.images, noise]))
    print(f"cosine to chelsea at blocks.3: caricature {closeness[0]:.3f}, DeepDream {closeness[1]:.3f}, "
          f"noise {closeness[2]:.3f}")
    assert closeness[0] > 0.4 and closeness[0] > 2 * max(closeness[1], closeness[2])


def test_studio_caricature_writes_the_render_and_its_closeness(tmp_path, photos, capsys):
    photo = tmp_path / "chelsea.png"
    studio.write_image(photo, photos["chelsea"])
    out = tmp_path / "caricature.png"
    assert main(["caricature", str(photo), "--layer", "blocks.2", "--steps", "4", "--size", "32", "--device", "cpu",
                 "--out", str(out)]) == 0
    assert "cosine to the photo's activations" in capsys.readouterr().out
    assert studio.read_image(out).shape == (3, 32, 32)
    assert main(["caricature", str(photo), "--layer", "blocks.99", "--out", str(out)]) == 2
    assert "blocks.99" in capsys.readouterr().err


def test_a_caricature_reads_token_and_volume_layers():
    from tests.synthetic import sphere_net

    torch.manual_seed(0)
    vit = studio.load_model("timm:vit_tiny_patch16_224", pretrained=False, device="cpu")
    picture = torch.nn.functional.avg_pool2d(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)),
                                             5, 1, 2)[0]
    drawn = studio.render(vit, obj.caricature(picture, "blocks.6"), steps=8, size=32)  # tokens [B, 197, 192]
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    closeness = cosine_to_photo(vit, "blocks.6", picture, torch.cat([drawn.images, noise]))
    assert closeness[0] > 0.4 and closeness[0] > 2 * closeness[1]  # measured 0.62 against 0.14
    torch.manual_seed(0)
    volumes = studio.load_model(sphere_net(), device="cpu",
                                input=studio.InputSpec((12, 12, 12), mean=(0.0,), std=(1.0,), channels=1))
    blob = torch.zeros(1, 12, 12, 12)
    blob[:, 2:7, 5:10, 3:8] = 1
    drawn = studio.render(volumes, obj.caricature(blob, "3"), steps=16, size=12)
    assert drawn.images.shape == (1, 1, 12, 12, 12)
    assert drawn.history[-4:].mean() > drawn.history[:4].mean()  # the volume's caricature value rose
