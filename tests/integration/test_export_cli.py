"""`gppf-export`: a real demo run's checkpoint as config.json + model.safetensors + model card,
with no pickle anywhere, loading back (safetensors only) to the run's outputs on every task."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gppf_dist.checkpoint.trained import load_run
from gppf_dist.model.pretrained import WEIGHTS_NAME, from_pretrained, load_pretrained
from gppf_dist.model.summary import sample_input, tensor_leaves

BIN = Path(sys.executable).parent
PICKLE_PROTOCOL_2_PLUS = b"\x80"


@pytest.fixture
def exported(demo_export: tuple[Path, Path]) -> tuple[Path, Path]:
    return demo_export


def test_the_folder_holds_no_pickle(exported: tuple[Path, Path]) -> None:
    _, out = exported
    files = sorted(p.name for p in out.iterdir())
    assert files == ["README.md", "config.json", WEIGHTS_NAME], files
    for path in out.iterdir():
        assert not path.read_bytes().startswith(PICKLE_PROTOCOL_2_PLUS), path
    config = json.loads((out / "config.json").read_text())
    assert config["step"] == 4 and config["num_legos"] == 4 and config["top_k"] == 2
    assert set(config["routes"]) == set(config["tasks"]) and len(config["tasks"]) == 8
    card = (out / "README.md").read_text()
    assert "library_name: gppf_dist" in card and "| cls_object | classification |" in card
    assert "top1" in card  # the final evaluation table


def test_it_loads_back_to_the_run_s_outputs_without_unpickling(
    exported: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir, out = exported
    run = load_run(run_dir)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading an export must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model = from_pretrained(out)
    assert not model.training
    with torch.no_grad():
        for task, spec in run.specs.items():
            images = sample_input(spec, batch=2, seed=3)
            want, got = tensor_leaves(run.model(task, images)), tensor_leaves(model(task, images))
            assert want and len(want) == len(got), task
            for a, b in zip(want, got, strict=True):
                assert torch.equal(a, b), task


def test_missing_and_unexpected_tensors_are_named(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = exported
    edited = tmp_path / "edited"
    edited.mkdir()
    (edited / "config.json").write_text((out / "config.json").read_text())
    tensors = load_file(out / WEIGHTS_NAME)
    dropped = next(k for k in tensors if k.startswith("heads.det."))
    del tensors[dropped]
    tensors["heads.colour.weight"] = torch.zeros(2)
    save_file(tensors, edited / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="1 missing tensors") as err:
        load_pretrained(edited)
    assert dropped in str(err.value) and "heads.colour.weight" in str(err.value)
    _, report = load_pretrained(edited, strict=False)
    assert report.missing == [dropped] and report.unexpected == ["heads.colour.weight"]


def test_a_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a GPPF export"):
        load_pretrained(tmp_path)
    proc = subprocess.run(
        [str(BIN / "gppf-export"), f"run_dir={tmp_path}", f"out={tmp_path / 'x'}"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "has no config.yaml" in proc.stderr
