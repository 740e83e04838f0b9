"""Probing a photo: a point maps to the grid cell over it, the neuron there is the channel most active at that
cell (or the one named), and in an activation grid each render drives its own neuron harder than any other
cell's render does."""

from __future__ import annotations

import pytest
import torch

import studio
from studio.engine import RenderResult
from studio.probing import ActivationGrid, activation_grid, grid_cell, grid_mosaic, mosaic_scale, probe
from studio.models import resize_to_input
from studio.targets import activations


def test_a_point_maps_to_the_cell_that_covers_it():
    assert grid_cell((0, 0), (300, 451), (7, 7)) == (0, 0)
    assert grid_cell((299.9, 450), (300, 451), (7, 7)) == (6, 6)
    assert grid_cell((150, 64.5), (300, 451), (7, 7)) == (3, 1)
    assert grid_cell((5, 5, 5), (10, 10, 10), (2, 4, 4)) == (1, 2, 2)
    with pytest.raises(studio.StudioError, match=r"off the photo \(300 rows, 451 columns\)"):
        grid_cell((300, 0), (300, 451), (7, 7))


def test_the_probed_neuron_is_the_most_active_channel_under_the_point(lite0, photos):
    photo = photos["chelsea"]
    found = probe(lite0, photo, "blocks.5", (120, 140))  # the cat's left eye
    assert found.cell == (2, 2) and found.target.position == (2, 2)
    assert found.target.channel == int(found.channel_values.argmax()) and found.channel_values.shape == (192,)
    key = "blocks.5"
    act = activations(lite0, lite0.spec.normalise(resize_to_input(photo[None], lite0.spec)), [key])[key][0]
    assert found.channel_values[found.target.channel] == pytest.approx(act[:, 2, 2].max().item(), rel=1e-5)
    assert probe(lite0, photo, "blocks.5", (120, 140), channel=17).target.name == "blocks.5:17@2,2"
    with pytest.raises(studio.StudioError, match="no spatial grid"):
        probe(lite0, photo, "classifier", (0, 0))


def test_each_cell_of_the_activation_grid_drives_its_own_neuron_hardest(lite0, photos):
    grid = activation_grid(lite0, photos["chelsea"], "blocks.5", stride=6, steps=24, size=64)
    assert grid.shape == (7, 7) and grid.cells.tolist() == [[0, 0], [0, 6], [6, 0], [6, 6]]
    assert grid.result.images.shape == (4, 3, 64, 64)
    key = "blocks.5"
    acts = activations(lite0, lite0.spec.normalise(resize_to_input(grid.result.images, lite0.spec)), [key])[key]
    # reading[i, j]: render i's value at cell j's neuron
    reading = torch.stack([target(acts) for target in grid.targets], 1)
    own = reading.diagonal()
    others = (reading - torch.diag(torch.full((4,), float("inf")))).amax(0)
    print("own", own.round(decimals=1).tolist(), "best other", others.round(decimals=1).tolist())
    assert (own > 2 * others.clamp_min(0)).all()  # measured: own 27-66, the best other render 2-13


def test_the_mosaic_puts_each_render_at_its_cell_and_spans_the_cells_it_stands_for():
    cells = torch.tensor([[0, 0], [0, 3], [3, 0], [3, 3], [6, 0], [6, 3]])
    images = torch.arange(6.0)[:, None, None, None].expand(6, 3, 4, 4) / 10
    result = RenderResult(images, torch.zeros(1, 6), torch.zeros(6), "", None, {}, 0.0)
    grid = ActivationGrid((7, 5), cells, [], result, stride=3)
    mosaic = grid_mosaic(grid)
    # 7 rows of cells in tiles of 3: 3 tiles, the last standing for one row of cells, so cut to 7 * 4 / 3 px
    assert mosaic.shape == (3, 10, 7)
    assert mosaic[0, 0, 0] == 0 and mosaic[0, 0, 4] == pytest.approx(0.1) and mosaic[0, 9, 6] == pytest.approx(0.5)
    # a tile stands for 3 cells a side: 3/7 of the photo's rows and 3/5 of its columns
    assert mosaic_scale(grid, (700, 500)) == pytest.approx((3 * 700 / (7 * 4), 3 * 500 / (5 * 4)))
