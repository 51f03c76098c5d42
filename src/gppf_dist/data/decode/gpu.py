"""Optional JPEG decoding on a CUDA device (`decoder="gpu"`), for clusters short of decode cores.

Two backends, tried in this order: NVIDIA nvImageCodec (`pip install nvidia-nvimagecodec-cu12`)
and torchvision's CUDA `decode_jpeg`. Neither is installed on CPU machines (torchvision's wheels
need CUDA torch), so both are imported only when this decoder is chosen, and choosing it where
neither works, or without a CUDA device, is a configuration error raised before any worker
starts (`preflight/validate.py`), naming what is missing.

The image is decoded on the device at full size and handed to the task type as usual: every crop,
flip and augmentation parameter is still drawn on the CPU from the sample's RNG, so a run decodes
the same samples into the same geometry with any decoder. A loader whose decode runs in worker
processes must start them with `spawn` (CUDA cannot be used after `fork`).

Not measured yet: no GPU was available where this was written (see BENCHMARKS.md).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class GpuJpegDecoder:
    """Decodes JPEG bytes to an HxWx3 uint8 RGB array on `device` (result copied to the host)."""

    backend: str
    """`nvimagecodec` or `torchvision`."""
    device: torch.device
    _decode: Callable[[bytes], torch.Tensor]

    def decode(self, data: bytes) -> np.ndarray:
        """HxWx3 uint8 RGB; raises the backend's error for data it cannot decode."""
        return self._decode(data).cpu().numpy()


def _nvimagecodec(device: torch.device) -> Callable[[bytes], torch.Tensor] | None:
    try:
        from nvidia import nvimgcodec  # type: ignore[import-not-found]
    except ImportError:
        return None
    decoder = nvimgcodec.Decoder(device_id=device.index or 0)
    params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.RGB)

    def decode(data: bytes) -> torch.Tensor:
        image = decoder.decode(data, params=params)
        if image is None:
            raise ValueError("nvImageCodec could not decode the image")
        return torch.as_tensor(image, device=device)  # HxWx3 via __cuda_array_interface__

    return decode


def _torchvision(device: torch.device) -> Callable[[bytes], torch.Tensor] | None:
    try:
        from torchvision.io import ImageReadMode, decode_jpeg  # type: ignore[import-not-found]
    except (ImportError, RuntimeError, OSError):  # a CPU-only torch fails torchvision's import
        return None

    def decode(data: bytes) -> torch.Tensor:
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        image: Any = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        return image.permute(1, 2, 0)

    return decode


def installed_backends() -> list[str]:
    """The GPU JPEG backends importable here (found, not imported: imports can be slow)."""
    found = []
    try:
        if importlib.util.find_spec("nvidia.nvimgcodec") is not None:
            found.append("nvimagecodec")
    except ModuleNotFoundError:  # no `nvidia` namespace package at all
        pass
    if importlib.util.find_spec("torchvision") is not None:
        found.append("torchvision")
    return found


@functools.cache
def gpu_decoder(where: str = "decoder") -> GpuJpegDecoder:
    """This process's GPU decoder; ValueError naming `where` and everything that is missing."""
    problems = []
    if not torch.cuda.is_available():
        problems.append("no CUDA device (torch.cuda.is_available() is False)")
    if not installed_backends():
        problems.append(
            "no GPU JPEG decoder is installed: neither nvImageCodec "
            "(`pip install nvidia-nvimagecodec-cu12`) nor torchvision with CUDA"
        )
    if not problems:
        device = torch.device("cuda", torch.cuda.current_device())
        for backend, make in (("nvimagecodec", _nvimagecodec), ("torchvision", _torchvision)):
            decode = make(device)
            if decode is not None:
                return GpuJpegDecoder(backend, device, decode)
        problems.append(
            f"the installed backends ({', '.join(installed_backends())}) failed to load"
        )
    raise ValueError(
        f"`{where}`='gpu' cannot be used here: {'; '.join(problems)}. "
        "Use 'turbo' (libjpeg-turbo on the CPU) or 'pillow'."
    )
