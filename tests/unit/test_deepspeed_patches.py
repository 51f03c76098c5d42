"""Every patch of DeepSpeed's internals (`engine/deepspeed.py`'s `DEEPSPEED_PATCHES`) checked
against the installed DeepSpeed: what it replaces still exists with the signature the patch was
written against, and the patch is in place once the code that applies it has run.

A DeepSpeed upgrade that renames, removes or re-signs a patched function fails here, naming the
patch to revisit and what it is for, instead of the patch silently doing nothing. The patches on
a live engine are checked on one tiny ZeRO 1 engine (one gloo rank, a linear layer, one step and
two saves), built once for the module in a spawned process.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
from pathlib import Path
from typing import Any

import deepspeed
import pytest
import torch

from gppf_dist.dist.spawn import spawn_ranks
from gppf_dist.engine.deepspeed import DEEPSPEED_PATCHES, DeepSpeedPatch

PATCHES = {p.target.rsplit(".", 1)[-1]: p for p in DEEPSPEED_PATCHES}
EXTRA_SQ_NORM = 9.0
"""The squared norm `count_in_grad_norm`'s hook adds (as expert-parallel lego shards would)."""


def resolve(target: str) -> Any:
    """What DeepSpeed's own code defines under a dotted path: the longest importable module,
    then attributes. (Not `getattr` all the way: `deepspeed.comm.torch` is also the name of torch
    inside `deepspeed.comm`.) Where a patch has replaced a module's attribute, the module's
    source is run again into a fresh copy: the patch would otherwise be found, and it is there
    even when DeepSpeed no longer defines the name."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        if getattr(getattr(module, parts[i], None), "__module__", "").startswith("gppf_dist."):
            spec = importlib.util.find_spec(module_name)
            assert spec is not None and spec.loader is not None, module_name
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        obj = module
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(target)


def revisit(patch: DeepSpeedPatch) -> str:
    return (
        f"revisit `{patch.site}` in src/gppf_dist/engine/deepspeed.py, which patches "
        f"{patch.target} because without it {patch.why}"
    )


def test_every_patch_names_a_distinct_target() -> None:
    assert len(PATCHES) == len(DEEPSPEED_PATCHES), [p.target for p in DEEPSPEED_PATCHES]


@pytest.mark.parametrize("patch", DEEPSPEED_PATCHES, ids=lambda p: p.target.rsplit(".", 1)[-1])
def test_what_a_patch_replaces_is_still_in_deepspeed_as_written_against(
    patch: DeepSpeedPatch,
) -> None:
    """A function: its signature is the recorded one. A plain attribute (signature None): the
    class's own code still reads it, so setting it still changes what DeepSpeed does."""
    owner, _, name = patch.target.rpartition(".")
    version = f"DeepSpeed {deepspeed.__version__}"
    if patch.signature is None:
        cls = resolve(owner)
        readers = [
            f.__qualname__
            for _, f in inspect.getmembers(cls, inspect.isfunction)
            if name in f.__code__.co_names
        ]
        assert readers, f"{version}: no method of {owner} reads `{name}` any more; {revisit(patch)}"
        return
    try:
        target = resolve(patch.target)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{version} has no {patch.target} ({err}); {revisit(patch)}")
    signature = str(inspect.signature(target))
    assert signature == patch.signature, (
        f"{version} has {patch.target}{signature}, the patch was written against "
        f"{patch.signature}: {revisit(patch)}"
    )


def test_deepspeed_starts_its_process_groups_without_its_shared_memory_op() -> None:
    """Importing engine/deepspeed.py installs the patch, and `TorchBackend.__init__` (what starts
    DeepSpeed's communication layer) still calls it by the module's global name."""
    patch = PATCHES["build_shm_op"]
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    assert ds_torch.build_shm_op.__module__ == "gppf_dist.engine.deepspeed", revisit(patch)
    assert ds_torch.build_shm_op() is None
    assert "build_shm_op" in ds_torch.TorchBackend.__init__.__code__.co_names, (
        f"TorchBackend.__init__ no longer calls build_shm_op: the patch does nothing; "
        f"{revisit(patch)}"
    )


def _qualified_mro(obj: Any) -> list[str]:
    return [f"{c.__module__}.{c.__qualname__}" for c in type(obj).__mro__]


def _zero_engine(rank: int, world: int, port: int, out: str) -> dict[str, Any]:
    """One rank of a ZeRO 1 engine built by `create_engine`: what each patch did to it."""
    import torch.distributed as dist
    from deepspeed.comm import comm as ds_comm
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import (
        TorchCheckpointEngine,
    )

    from gppf_dist.checkpoint.saving import recording_writes
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.env import set_local_rank_env
    from gppf_dist.engine.deepspeed import create_engine, destroy_groups

    set_local_rank_env(rank, world, port)
    dist.init_process_group("gloo")
    saved_by_deepspeed: list[str] = []
    deepspeeds_save = TorchCheckpointEngine.save

    def recording_save(self: Any, state_dict: Any, path: str) -> None:
        saved_by_deepspeed.append(Path(path).name)
        deepspeeds_save(self, state_dict, path)

    TorchCheckpointEngine.save = recording_save  # type: ignore[method-assign]
    try:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        reference = copy.deepcopy(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        cfg = RunConfig()
        cfg.parallel.zero_stage = 1
        engine = create_engine(cfg, model, optimizer, scheduler, world, torch.device("cpu"))
        facts: dict[str, Any] = {
            "shm_comm_op": ds_comm.cdb.shm_comm_op,
            "optimizer_mro": _qualified_mro(engine.optimizer),
            "loss_scale": getattr(engine.optimizer, "loss_scale", None),
            "save_zero_checkpoint": engine.ds.save_zero_checkpoint,
        }

        x = torch.randn(2, 4, generator=torch.Generator().manual_seed(1))
        reference(x).square().sum().backward()
        grad_sq = sum(float(p.grad.double().square().sum()) for p in reference.parameters())
        facts["expected_norm"] = (grad_sq + EXTRA_SQ_NORM) ** 0.5
        engine.count_in_grad_norm(lambda: torch.tensor(EXTRA_SQ_NORM))
        hook = engine.optimizer.scaled_global_norm
        facts["norm_hook"] = f"{hook.__module__}.{hook.__qualname__}"
        engine.backward(engine.ds(x).square().sum())
        engine.step()
        facts["reported_norm"] = engine.global_grad_norm()

        writer = engine.ds.checkpoint_engine
        facts["writer_mro"] = _qualified_mro(writer)
        facts["writer_zipfile_setting"] = hasattr(writer, "zipfile_serialization")
        with recording_writes() as written:
            engine.save_state(Path(out), "ours", {})
        facts["ours_files"] = sorted(p.name for p in Path(out, "ours").iterdir())
        facts["ours_written"] = sorted(Path(p).name for p in written)
        facts["ours_saved_by_deepspeed"] = list(saved_by_deepspeed)
        facts["save_left_on_writer"] = "save" in vars(writer)

        # Control: DeepSpeed's own save, with its ZeRO files on, writes through the class's
        # method and adds the per-rank optimizer file.
        engine.ds.save_zero_checkpoint = True
        before = len(saved_by_deepspeed)
        engine.ds.save_checkpoint(out, tag="deepspeeds", save_latest=False)
        facts["deepspeeds_files"] = sorted(p.name for p in Path(out, "deepspeeds").iterdir())
        facts["deepspeeds_saved_by_deepspeed"] = sorted(saved_by_deepspeed[before:])
        return facts
    finally:
        TorchCheckpointEngine.save = deepspeeds_save  # type: ignore[method-assign]
        destroy_groups()


@pytest.fixture(scope="module")
def engine_facts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("deepspeed_patches")
    return spawn_ranks(_zero_engine, 1, str(out))[0]


def test_a_live_process_group_has_no_shared_memory_op(engine_facts: dict[str, Any]) -> None:
    assert engine_facts["shm_comm_op"] is None, revisit(PATCHES["build_shm_op"])


def test_zero_steps_with_our_global_norm(engine_facts: dict[str, Any]) -> None:
    """The engine's optimizer is the class the patch was written against, `count_in_grad_norm`
    puts our hook on it, and DeepSpeed's step uses it: the norm it reports counts the extra."""
    patch = PATCHES["scaled_global_norm"]
    owner = patch.target.rpartition(".")[0]
    assert owner in engine_facts["optimizer_mro"], (
        f"ZeRO 1's optimizer is no {owner} ({engine_facts['optimizer_mro'][0]}); {revisit(patch)}"
    )
    # the patch refuses loss scaling by this attribute, read with 1.0 as its default
    assert engine_facts["loss_scale"] == 1.0, (
        f"ZeRO 1's optimizer has no loss_scale 1.0 ({engine_facts['loss_scale']}); {revisit(patch)}"
    )
    assert engine_facts["norm_hook"] == (
        "gppf_dist.engine.deepspeed.Engine.count_in_grad_norm.<locals>.scaled_global_norm"
    ), revisit(patch)
    assert engine_facts["reported_norm"] == pytest.approx(engine_facts["expected_norm"]), (
        f"DeepSpeed's step no longer takes its norm from scaled_global_norm; {revisit(patch)}"
    )


def test_checkpoint_files_are_written_by_ours_and_deepspeeds_save_is_back_after(
    engine_facts: dict[str, Any],
) -> None:
    patch = PATCHES["save"]
    owner = patch.target.rpartition(".")[0]
    assert owner in engine_facts["writer_mro"], (
        f"the engine's checkpoint engine is no {owner} ({engine_facts['writer_mro'][0]}); "
        f"{revisit(patch)}"
    )
    assert engine_facts["writer_zipfile_setting"], (
        f"{owner} has no zipfile_serialization, which our save passes on; {revisit(patch)}"
    )
    assert engine_facts["ours_files"], engine_facts
    assert engine_facts["ours_written"] == engine_facts["ours_files"], revisit(patch)
    assert engine_facts["ours_saved_by_deepspeed"] == [], revisit(patch)
    assert not engine_facts["save_left_on_writer"], "Engine.save_state left its save behind"
    # The control: unpatched, DeepSpeed writes every file through the method the patch replaces.
    assert engine_facts["deepspeeds_saved_by_deepspeed"] == engine_facts["deepspeeds_files"], (
        f"DeepSpeed no longer saves through {patch.target}; {revisit(patch)}"
    )


def test_zero_writes_no_optimizer_files_of_its_own(engine_facts: dict[str, Any]) -> None:
    patch = PATCHES["save_zero_checkpoint"]
    assert engine_facts["save_zero_checkpoint"] is False, revisit(patch)
    assert not [f for f in engine_facts["ours_files"] if "optim_states" in f], revisit(patch)
    # The control: set back to True, DeepSpeed adds its per-rank optimizer file.
    added = set(engine_facts["deepspeeds_files"]) - set(engine_facts["ours_files"])
    assert [f for f in added if "optim_states" in f], (
        f"DeepSpeed's save_zero_checkpoint no longer decides its optimizer files; {revisit(patch)}"
    )
