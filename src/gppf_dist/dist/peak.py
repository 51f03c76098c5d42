"""A device's peak arithmetic rate, the denominator of MFU (model FLOPs utilisation).

MFU is the model's training FLOPs per second over the hardware's peak at the training precision.
Known peaks are NVIDIA's dense (no sparsity) bf16 tensor-core figures, matched against the
device name, first match wins; anything else (fp32 training, CPUs, other accelerators) has no
peak unless `trainer.peak_tflops` gives one, and a run then logs its TFLOP/s without MFU.
"""

from __future__ import annotations

import torch

BF16_DENSE_PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("A100", 312.0),
)


def named_peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a known GPU by its name (`torch.cuda.get_device_name`)."""
    return next((peak for key, peak in BF16_DENSE_PEAK_TFLOPS if key in device_name), None)


def device_peak_tflops(device: torch.device, precision: str, given: float | None) -> float | None:
    """One device's peak TFLOP/s for a run in `precision`: `given` (`trainer.peak_tflops`) if
    set, else a known GPU's bf16 peak for a bf16 run, else None (no MFU)."""
    if given is not None:
        return given
    if device.type != "cuda" or precision != "bf16":
        return None
    return named_peak_tflops(torch.cuda.get_device_name(device))
