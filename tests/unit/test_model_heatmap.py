"""The lego-usage heatmap: a labelled task × layer image with a gate-weight legend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gppf_dist.config.model import ModelConfig
from gppf_dist.logging.heatmap import UNUSED, colormap, render_usage
from gppf_dist.model.build import build_model
from gppf_dist.tasks.demo import demo_specs


def test_heatmap_of_a_model_is_an_rgb_image() -> None:
    specs = demo_specs()
    model = build_model(ModelConfig(), specs)
    usage = model.lego_usage().numpy()
    img = render_usage(usage, list(specs))
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert img.shape[0] >= 8 * 14 and img.shape[1] > 4 * 4 * 14  # rows per task, cells per lego
    assert np.array_equal(img, render_usage(usage, list(specs)))  # deterministic


def test_cells_are_coloured_by_gate_weight() -> None:
    usage = np.zeros((2, 3, 4))
    usage[0, :, 0], usage[1, :, 3] = 1.0, 0.5
    img = render_usage(usage, ["a", "bb"])
    colours = {tuple(int(c) for c in px) for px in img.reshape(-1, 3)}
    assert colormap(1.0) in colours and colormap(0.5) in colours and UNUSED in colours
    # the legend's colour bar shows the whole scale, including the low end absent from the data
    assert colormap(0.0) in colours
    assert (img < 100).any()  # text (labels, ticks) is drawn


def test_more_tasks_make_a_taller_image() -> None:
    small = render_usage(np.full((2, 4, 4), 0.5), ["a", "b"])
    big = render_usage(np.full((12, 4, 4), 0.5), [f"task{i}" for i in range(12)])
    assert big.shape[0] > small.shape[0]


@pytest.mark.parametrize(
    ("usage", "names", "message"),
    [
        (np.zeros((2, 3)), ["a", "b"], "`usage.shape`"),
        (np.zeros((2, 3, 4)), ["a"], "`task_names`"),
    ],
)
def test_bad_inputs_name_the_argument(usage: np.ndarray, names: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_usage(usage, names)


def test_tensor_usage_is_accepted() -> None:
    img = render_usage(torch.full((1, 2, 2), 0.25).numpy(), ["only"])
    assert img.shape[2] == 3
