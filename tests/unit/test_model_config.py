"""ModelConfig / RouterConfig validation and the conf/model presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gppf_dist.config.model import ModelConfig, RouterConfig, model_config_from_dict

PRESETS = sorted((Path(__file__).parents[2] / "conf" / "model").glob("*.yaml"))


def test_presets_exist() -> None:
    names = {p.stem for p in PRESETS}
    assert {"gppf_r50_tiny", "gppf_r50"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads(path: Path) -> None:
    cfg = model_config_from_dict(yaml.safe_load(path.read_text()))
    assert cfg.name == path.stem
    assert cfg.top_k <= cfg.num_legos


def test_r50_geometry() -> None:
    cfg = model_config_from_dict(yaml.safe_load((PRESETS[0].parent / "gppf_r50.yaml").read_text()))
    assert cfg.blocks == [3, 4, 6, 3] and cfg.num_layers == 16
    # r = 0.625 (not 1/k) so k legos' compute matches a ResNet-50 bottleneck (3x3 conv ~ r^2);
    # mid widths stay multiples of 8 for GroupNorm. Parity itself: test_model_summary.py.
    assert [cfg.lego_width(w) for w in cfg.widths] == [40, 80, 160, 320]


def test_top_k_above_num_legos_names_both_keys() -> None:
    with pytest.raises(ValueError, match=r"`model.top_k`=5 must be <= `model.num_legos`=4"):
        ModelConfig(num_legos=4, top_k=5)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"family": "mlp"}, "model.family"),
        ({"ratio": 0.0}, "model.ratio"),
        ({"widths": [64, 128], "blocks": [1]}, "model.widths"),
        ({"family": "vit", "embed_dim": 100, "num_heads": 3}, "model.embed_dim"),
    ],
)
def test_bad_values_name_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        ModelConfig(**kwargs)


def test_router_validation_and_unknown_key() -> None:
    with pytest.raises(ValueError, match="gumbel_tau"):
        RouterConfig(gumbel_tau=0.0)
    with pytest.raises(ValueError, match="model.widthz"):
        model_config_from_dict({"widthz": [1]})
    with pytest.raises(ValueError, match="model.router.tau"):
        model_config_from_dict({"router": {"tau": 1.0}})


def test_defaults_are_the_tiny_presets() -> None:
    tiny = model_config_from_dict(
        yaml.safe_load((PRESETS[0].parent / "gppf_r50_tiny.yaml").read_text())
    )
    assert ModelConfig() == tiny
    vit = model_config_from_dict(
        yaml.safe_load((PRESETS[0].parent / "gppf_vit_tiny.yaml").read_text())
    )
    assert ModelConfig(name="gppf_vit_tiny", family="vit") == vit


def test_structured_config_roundtrip() -> None:
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(
        OmegaConf.structured(ModelConfig),
        OmegaConf.load(PRESETS[0].parent / "gppf_r50.yaml"),
        {"router": {"freeze_after": 100}},
    )
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, ModelConfig) and isinstance(cfg.router, RouterConfig)
    assert cfg.widths == [256, 512, 1024, 2048] and cfg.router.freeze_after == 100
    with pytest.raises(ValueError, match="model.num_legos"):
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), {"top_k": 9}))
