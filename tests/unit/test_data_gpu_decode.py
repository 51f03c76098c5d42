"""The optional GPU decoder: choosing it where it cannot work is refused, naming what is missing.

(The decode itself needs a CUDA device and nvImageCodec or torchvision; see BENCHMARKS.md.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from gppf_dist.bench.decode import jpeg_bytes, photo_like
from gppf_dist.data.decode.gpu import gpu_decoder, installed_backends
from gppf_dist.data.decode.sample import RawSample, SampleError, decode_sample
from gppf_dist.preflight.validate import validate_run

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() and bool(installed_backends()), reason="a GPU decoder works here"
)


def test_gpu_decoder_names_what_is_missing() -> None:
    with pytest.raises(ValueError) as err:
        gpu_decoder("data.decoder")
    message = str(err.value)
    assert message.startswith("`data.decoder`='gpu' cannot be used here")
    if not torch.cuda.is_available():
        assert "no CUDA device" in message
    if not installed_backends():
        assert "nvImageCodec" in message and "torchvision" in message
    assert "'turbo'" in message  # what to use instead


def test_decoding_with_an_unavailable_gpu_decoder_is_an_error_not_a_skip() -> None:
    raw = RawSample("k", {"jpg": jpeg_bytes(photo_like(np.random.default_rng(0), 64, 48)),
                          "json": json.dumps({"label": 0}).encode()})  # fmt: skip
    with pytest.raises(ValueError, match="'gpu' cannot be used here") as err:
        decode_sample(raw, decoder="gpu")
    assert not isinstance(err.value, SampleError)
    assert decode_sample(raw, decoder="turbo").decoded_by == "turbo"
    with pytest.raises(ValueError, match=r"`decoder`='nvjpeg' is not a decoder"):
        decode_sample(raw, decoder="nvjpeg")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gpu", r"`GPPF_DECODER`='gpu' cannot be used here"),
        ("fast", r"`GPPF_DECODER`='fast' is not a decoder; choose one of"),
    ],
)
def test_the_decoder_is_checked_before_the_run(
    compose_run: Any, tiny_shards: Path, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    cfg = compose_run(f"data.root={tiny_shards}")
    validate_run(cfg, 2, workers_here=True)
    monkeypatch.setenv("GPPF_DECODER", value)
    with pytest.raises(ValueError, match=message):
        validate_run(cfg, 2, workers_here=True)  # the launcher's workers run on this machine


def test_data_decoder_is_the_config_key(compose_run: Any, tiny_shards: Path) -> None:
    from gppf_dist.config import schema
    from gppf_dist.data.decode import jpeg

    assert set(schema.DECODERS) == set(jpeg.DECODERS)
    cfg = compose_run(f"data.root={tiny_shards}", "data.decoder=gpu")
    with pytest.raises(ValueError, match=r"`data.decoder`='gpu' cannot be used here"):
        validate_run(cfg, 2, workers_here=True)
    validate_run(cfg, 2)  # workers elsewhere (Slurm, DeepSpeed's hosts) check on their nodes
    with pytest.raises(ValueError, match=r"`data.decoder`='fast'"):
        compose_run(f"data.root={tiny_shards}", "data.decoder=fast")
