"""The task-type registry: a type registers once by name, and everything a type owns (label
space, schema, mask needs, drawing, export outputs) is read from it, built-in or a plugin's."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.config.plugins import load_plugins
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.convert.corpus_spec import SpecTask
from gppf_dist.data.decode.sample import SampleError
from gppf_dist.data.format.manifest import manifest_from_dict
from gppf_dist.data.format.schema import check_annotation, check_mask
from gppf_dist.data.tools.inspect import inspect_task
from gppf_dist.data.tools.verify import verify_root
from gppf_dist.model.export_contract import contract
from gppf_dist.preflight.validate import validate_run
from gppf_dist.tasks.base import TaskType
from gppf_dist.tasks.classification import ClassificationTask
from gppf_dist.tasks.registry import TASK_TYPES, get_task_type, make_spec, register_task_type
from tests.integration.test_task_plugin import BANDS, PLUGIN, write_corpus

BUILT_IN = {"attributes", "classification", "detection", "face", "pose", "reid", "segmentation"}
PROTOCOL = (
    "label_space_keys",
    "needs_mask",
    "export_outputs",
    "label_counts",
    "placeholder_label_space",
    "check_annotation",
    "draw",
    "prepare",
    "collate",
    "build_head",
    "loss",
    "new_metric",
)


@pytest.fixture
def brightness() -> Iterator[TaskType]:
    """The plugin's type, imported as `plugins=[...]` imports it; afterwards the registry and
    the module table are as before, so other tests see the built-in types only."""
    registered = dict(TASK_TYPES)
    load_plugins([str(PLUGIN)])
    yield TASK_TYPES["brightness"]
    TASK_TYPES.clear()
    TASK_TYPES.update(registered)
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or ".").resolve() == PLUGIN:
            del sys.modules[name]  # the next test imports and registers it again


def test_built_in_types_are_registered_and_complete() -> None:
    assert set(TASK_TYPES) == BUILT_IN
    for name, task_type in TASK_TYPES.items():
        assert task_type.name == name and get_task_type(name) is task_type
        missing = [m for m in PROTOCOL if not hasattr(task_type, m)]
        assert not missing, (name, missing)
        assert task_type.needs_mask == (name == "segmentation")
        assert not task_type.needs_mask or hasattr(task_type, "check_mask")
        spec = make_spec("t", name, (64, 64), task_type.placeholder_label_space(5))
        assert 5 in (spec.num_classes, spec.num_keypoints, spec.num_attributes), name


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="task type 'classification' is already registered"):
        register_task_type(ClassificationTask())
    assert set(TASK_TYPES) == BUILT_IN


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"task type 'brightness' is unknown; known types: \["):
        get_task_type("brightness")


def test_a_plugin_registers_on_import(brightness: TaskType) -> None:
    assert set(TASK_TYPES) == BUILT_IN | {"brightness"}
    with pytest.raises(ValueError, match="'brightness' is already registered"):
        register_task_type(brightness)
    spec = make_spec("bright", "brightness", (32, 32), {"bands": BANDS})
    assert spec.num_classes == 3
    with pytest.raises(ValueError, match=r"`tasks.bright.label_space.bands`=None must be a non"):
        make_spec("bright", "brightness", (32, 32), {})
    planned = SpecTask("bright", "brightness", 4, ()).planning_label_space()
    assert planned == {"bands": ["band_0", "band_1", "band_2", "band_3"]}


def test_the_schema_check_is_the_types(brightness: TaskType) -> None:
    space = {"bands": BANDS}
    check_annotation("brightness", "k", {"width": 4, "height": 3, "brightness": 0.5}, space, 4, 3)
    with pytest.raises(SampleError, match=r"sample 'k': `brightness`=1.5 must be a number") as err:
        check_annotation(
            "brightness", "k", {"width": 4, "height": 3, "brightness": 1.5}, space, 4, 3
        )
    assert err.value.reason == "annotation"
    with pytest.raises(SampleError, match=r"`width/height`=\(4, 3\) != 5x3"):  # the shared part
        check_annotation(
            "brightness", "k", {"width": 4, "height": 3, "brightness": 0.5}, space, 5, 3
        )
    check_mask("brightness", "k", None, space)  # needs no mask
    with pytest.raises(SampleError, match="no png mask member") as err:
        check_mask("segmentation", "k", None, {"classes": ["a"]})
    assert err.value.reason == "missing_member"
    with pytest.raises(SampleError, match=r"`png`=\[3\] mask ids must be < 2"):
        check_mask(
            "segmentation", "k", np.array([[0, 3], [255, 1]], np.uint8), {"classes": BANDS[:2]}
        )
    with pytest.raises(ValueError, match="known types"):
        check_annotation("no_such_type", "k", {}, {}, 1, 1)


def test_the_manifest_asks_the_type_for_its_label_space_keys(brightness: TaskType) -> None:
    task = {"type": "brightness", "dataset": "grey", "label_space": {}, "splits": {}}
    raw = {"schema_version": 2, "tasks": {"bright": task}}
    with pytest.raises(ValueError, match="type 'brightness' needs key 'bands'"):
        manifest_from_dict(raw)
    task["label_space"] = {"bands": BANDS}
    assert manifest_from_dict(raw).task("bright").label_space == {"bands": BANDS}


def test_the_export_contract_lists_the_types_outputs(brightness: TaskType) -> None:
    spec = make_spec("bright", "brightness", (32, 32), {"bands": BANDS})
    value = contract(spec, 2)
    assert value["type"] == "brightness" and value["input"]["shape"] == ["B", 3, 32, 32]
    assert value["outputs"] == brightness.export_outputs
    det = make_spec("det", "detection", (64, 64), {"classes": ["a"]})
    assert set(contract(det, 1)["outputs"]) == {"cls", "reg", "ctr", "points", "strides", "ranges"}


def test_shard_tools_check_and_draw_the_plugin_type(brightness: TaskType, tmp_path: Path) -> None:
    root = tmp_path / "shards"
    write_corpus(root)
    reports = {(r.task, r.split): r for r in verify_root(root)}
    assert reports["bright", "train"].good == 16 and not reports["bright", "train"].problems
    assert reports["bright", "val"].good == 8
    drawn = inspect_task(root, "bright", tmp_path / "drawn.png", n=4)
    plain = inspect_task(root, "bright", tmp_path / "plain.png", n=4, annotate=False)
    assert drawn.type == "brightness" and drawn.keys == plain.keys and drawn.skipped == {}
    a, b = (np.asarray(Image.open(r.path).convert("RGB")) for r in (drawn, plain))
    assert a.shape == b.shape and (a != b).any(axis=-1).sum() > 200  # bars and captions


def test_a_bad_type_in_the_config_names_the_key_and_the_known_types(
    brightness: TaskType, compose_run: Callable[..., RunConfig]
) -> None:
    cfg = compose_run(
        f"plugins=[{PLUGIN}]", "+simt.tasks.bright={type:brightnes,batch_size:4}", "logger=none"
    )
    with pytest.raises(ValueError) as err:
        validate_run(cfg, 2, data=False)
    message = str(err.value)
    assert "`simt.tasks.bright.type`='brightnes' is not a task type" in message
    assert "'brightness'" in message and "'classification'" in message
