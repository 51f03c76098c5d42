"""The numerator and denominator of a run's MFU: training FLOPs per sample counted on fake
tensors (`model.memory.training_gflop`) and a device's peak (`dist.peak`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from gppf_dist.config.model import model_config_from_dict
from gppf_dist.dist.peak import device_peak_tflops, named_peak_tflops
from gppf_dist.model.build import build_model
from gppf_dist.model.memory import training_gflop
from gppf_dist.model.summary import count_gmacs, sample_input
from gppf_dist.tasks.demo import demo_specs

CONF = Path(__file__).resolve().parents[2] / "src" / "gppf_dist" / "conf" / "model"


@pytest.mark.parametrize("model", ["gppf_r50_tiny", "gppf_vit_tiny"])
def test_fake_tensor_flops_are_the_real_models_and_draw_no_random_number(model: str) -> None:
    cfg = model_config_from_dict(yaml.safe_load((CONF / f"{model}.yaml").read_text()))
    specs = demo_specs()
    before = torch.random.get_rng_state()
    fake = training_gflop(cfg, specs)
    assert torch.equal(before, torch.random.get_rng_state())  # a run's randomness is untouched
    real = build_model(cfg, specs)
    for task, spec in specs.items():  # 3 x (forward MACs x 2) on a real sample, one by one
        assert fake[task] == pytest.approx(6 * count_gmacs(real, task, sample_input(spec)))
    assert fake["det"] > fake["cls_object"] > 0  # 96 px with an FPN head against 64 px


def test_the_peak_is_given_or_a_known_gpus_in_bf16_only() -> None:
    cpu = torch.device("cpu")
    assert device_peak_tflops(cpu, "bf16", None) is None
    assert device_peak_tflops(cpu, "fp32", 2.5) == 2.5
    assert named_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert named_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert named_peak_tflops("NVIDIA H200") == 989.0
    assert named_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert named_peak_tflops("NVIDIA GeForce RTX 4090") is None
