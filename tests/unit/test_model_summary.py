"""Compute accounting: `gppf-model summary` JSON, GPPF-R50 parity, active-parameter counts."""

from __future__ import annotations

import json

import pytest

from gppf_dist.cli import model as model_cli
from gppf_dist.model.build import build_model
from gppf_dist.model.summary import summarize
from gppf_dist.tasks.reference import reference_specs

RESNET50_GMACS = 4.1


def test_gppf_r50_classification_matches_resnet50_compute() -> None:
    cfg = model_cli.load_model_config("gppf_r50", {})
    specs = {k: v for k, v in reference_specs().items() if k.startswith("cls_")}
    summary = summarize(build_model(cfg, specs), specs)
    for name, row in summary["tasks"].items():
        assert row["input"] == [224, 224]
        assert abs(row["gmacs"] - RESNET50_GMACS) <= 0.05 * RESNET50_GMACS, (name, row)
        assert row["active_params"] < 0.6 * summary["params_total"]


def test_ratio_override_changes_compute() -> None:
    cfg = model_cli.load_model_config("gppf_r50", {"ratio": 0.5})
    specs = {"cls_object": reference_specs()["cls_object"]}
    gmacs = summarize(build_model(cfg, specs), specs)["tasks"]["cls_object"]["gmacs"]
    assert gmacs < 0.8 * RESNET50_GMACS  # r = 1/k under-counts: the reason for r = 0.625


def test_summary_json_schema_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    model_cli.main(["summary", "model=gppf_vit_tiny", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"params_total", "tasks"}
    assert isinstance(out["params_total"], int)
    assert list(out["tasks"]) == [
        "cls_object",
        "cls_scene",
        "det",
        "seg",
        "pose",
        "reid",
        "face",
        "attr",
    ]
    for row in out["tasks"].values():
        assert set(row) == {"input", "active_params", "gmacs"}
        assert isinstance(row["active_params"], int) and isinstance(row["gmacs"], float)
        assert 0 < row["active_params"] < out["params_total"] and row["gmacs"] > 0
    assert out["tasks"]["det"]["input"] == [96, 96]


def test_active_params_count_selected_legos_only() -> None:
    cfg = model_cli.load_model_config("gppf_r50_tiny", {})
    specs = model_cli.demo_sim_specs()
    model = build_model(cfg, {"cls_object": specs["cls_object"]})
    summary = summarize(model, {"cls_object": specs["cls_object"]})
    lego = sum(
        p.numel() for n, p in model.named_parameters() if ".legos." in n
    )  # all N legos of all layers
    unused = lego * (cfg.num_legos - cfg.top_k) // cfg.num_legos
    assert summary["tasks"]["cls_object"]["active_params"] == summary["params_total"] - unused


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["summary"], "`model` is required"),
        (["summary", "model=nope"], "`model`='nope'"),
        (["summary", "model=gppf_r50_tiny", "ratio=2"], "`model.ratio`=2"),
        (["summary", "model=gppf_r50_tiny", "tasks=all"], "`tasks`='all'"),
    ],
)
def test_summary_bad_arguments(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        model_cli.main(args)
