"""Checkpoint faults replayed on real 2-process `gppf-train` runs: a damaged newest checkpoint
falls back to the previous one, and a disk that fills during a save ends the run with one line,
leaves no partial directory, and a rerun with room resumes. Either way the losses are those of
an undisturbed run (same world size: equal); so do the losses after a SIGKILL while a save is
in flight in the background. And on two gloo processes with a stand-in engine: a rank raising
mid-save, or failing its background write, fails the save on every rank alike."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.checkpoint.client_state import ClientState
from gppf_dist.checkpoint.layout import COMPLETE, LATEST, tag_for_step
from gppf_dist.checkpoint.manager import step_tags
from gppf_dist.checkpoint.marker import Topology, read_marker
from gppf_dist.checkpoint.saving import CheckpointSaveError, write_torch
from gppf_dist.checkpoint.store import SLOW_SAVE_ENV, Checkpointer
from gppf_dist.dist.env import init_distributed, leave_distributed
from gppf_dist.logging.metrics import read_metrics
from tests.dist.harness import run_distributed
from tests.dist.run_pool import PoolRuns

from .test_train_cli import run_train, train_cmd

CKPT = str(Path(sys.executable).parent / "gppf-ckpt")
ARGS = ("launcher.nproc=2", "trainer.checkpoint_every=2", "trainer.eval_at_start=false")
LEGO = "gppf/lego_03_01.pt"


def step_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


def pooled_run(
    pool_runs: PoolRuns, factory: pytest.TempPathFactory, shards: Path, steps: int
) -> Path:
    """A run of `steps` steps on pooled workers (gppf-train's run without the process starts)."""
    run_dir = factory.mktemp(f"pooled_{steps}") / "run"
    pool_runs.train(run_dir, shards, *ARGS, f"trainer.max_steps={steps}")
    return run_dir


@pytest.fixture(scope="module")
def undisturbed(
    pool_runs: PoolRuns, tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path
) -> Path:
    """6 steps straight."""
    return pooled_run(pool_runs, tmp_path_factory, tiny_shards, 6)


@pytest.fixture(scope="module")
def stopped_at_4(
    pool_runs: PoolRuns, tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path
) -> Path:
    """A run that ended at step 4, checkpoints at 2 and 4; each test damages a copy."""
    return pooled_run(pool_runs, tmp_path_factory, tiny_shards, 4)


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:  # same size, other bytes: only the checksum can tell
        data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip_bytes"])
def test_damaged_newest_checkpoint_falls_back_and_gives_the_same_losses(
    tmp_path: Path, tiny_shards: Path, undisturbed: Path, stopped_at_4: Path, how: str
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(stopped_at_4, run_dir)
    newest = run_dir / "checkpoints" / tag_for_step(4)
    assert (newest / "COMPLETE").is_file()
    damage(newest / LEGO, how)

    verify = subprocess.run([CKPT, "verify", str(run_dir)], capture_output=True, text=True)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert LEGO in verify.stdout and "resume=auto loads step_00000002" in verify.stdout

    proc = run_train(run_dir, tiny_shards, *ARGS, "trainer.max_steps=6")
    out = proc.stdout + proc.stderr
    assert f"warning: checkpoint step_00000004 is damaged ({LEGO}: " in out, out[-3000:]
    assert "resuming from checkpoint at step 2 in" in out
    assert step_losses(run_dir) == step_losses(undisturbed)  # steps 3..6 recomputed, equal
    assert subprocess.run([CKPT, "verify", str(run_dir)], capture_output=True).returncode == 0


def test_no_intact_checkpoint_refuses_before_any_worker(
    tmp_path: Path, tiny_shards: Path, undisturbed: Path
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(undisturbed, run_dir)
    for tag in step_tags(run_dir / "checkpoints"):
        damage(run_dir / "checkpoints" / tag / LEGO, "truncate")
    proc = subprocess.run(train_cmd(run_dir, tiny_shards, *ARGS, "trainer.max_steps=8"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "no intact checkpoint in" in out, out[-3000:]
    for tag in step_tags(run_dir / "checkpoints"):
        assert f"{tag}: {LEGO}: " in out
    assert "workers:" not in out  # refused before any worker started


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own (needs root; without it the test is skipped, and the ENOSPC path is
    covered only by the unit test's /dev/full)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def resize(mount: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


def test_full_disk_fails_the_save_cleanly_and_a_rerun_with_room_resumes(
    small_disk: Path, tiny_shards: Path, undisturbed: Path
) -> None:
    one_checkpoint = sum(
        p.stat().st_size for p in (undisturbed / "checkpoints" / tag_for_step(6)).rglob("*")
    )
    resize(small_disk, int(1.5 * one_checkpoint) + (1 << 20))  # step 2 fits, step 4 does not
    run_dir = small_disk / "run"
    proc = subprocess.run(train_cmd(run_dir, tiny_shards, *ARGS, "trainer.max_steps=6"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    failed = [line for line in out.splitlines() if "checkpoint at step" in line]
    assert len(failed) == 1, out[-3000:]
    assert failed[0].startswith("checkpoint at step 4 failed on rank ")
    assert "No space left on device (" + str(run_dir / "checkpoints" / tag_for_step(4)) in failed[0]
    assert "Traceback" not in out and "basic_ios" not in out
    ckpt = run_dir / "checkpoints"
    assert step_tags(ckpt) == [tag_for_step(2)]  # the partial step 4 is gone
    assert (ckpt / LATEST).read_text().strip() == tag_for_step(2)
    assert sorted(p.name for p in ckpt.iterdir()) == [LATEST, tag_for_step(2)]

    resize(small_disk, 4 * one_checkpoint + (1 << 20))
    rerun = run_train(run_dir, tiny_shards, *ARGS, "trainer.max_steps=6")
    assert "resuming from checkpoint at step 2 in" in rerun.stdout + rerun.stderr
    assert step_losses(run_dir) == step_losses(undisturbed)


class RankFiles:
    """An engine whose state is one file per rank; `fail_on` (step, rank) raises mid-save."""

    def __init__(self, fail_on: tuple[int, int]) -> None:
        self.module = nn.Linear(2, 2)
        self.lr_scheduler = None
        self.fail_on = fail_on

    def save_state(self, directory: Path, tag: str, client_state: dict[str, object]) -> None:
        (directory / tag).mkdir(parents=True, exist_ok=True)
        dist.barrier()  # a collective inside, as DeepSpeed's has
        if (client_state["step"], dist.get_rank()) == self.fail_on:
            raise RuntimeError("pickling the optimizer state broke")
        write_torch(client_state, directory / tag / f"rank_{dist.get_rank()}.pt")

    def load_state(
        self, directory: Path, tag: str, *, module_strict: bool, optimizer: bool
    ) -> dict[str, object]:
        return torch.load(directory / tag / f"rank_{dist.get_rank()}.pt", weights_only=False)


def save_fail_restore(run_dir: Path) -> tuple[list[str], int, int]:
    """Save step 2, a step 4 that rank 1 fails, and step 6; restore; damage step 6; restore
    again. Returns this rank's save errors and the two steps it resumed at."""
    init_distributed("gloo", torch.device("cpu"), 60)
    engine = RankFiles(fail_on=(4, 1))
    ckpt = Checkpointer(engine, run_dir, Topology(2, 1, 0), 5, dist.get_rank() == 0)
    failures = []
    for step in (2, 4, 6):
        try:
            ckpt.save(ClientState(step, {}, None, 2))
        except CheckpointSaveError as err:
            failures.append(str(err))
    resumed = ckpt.restore("auto")
    dist.barrier()  # every rank has read step 6 before rank 0 damages it
    if dist.get_rank() == 0:
        (run_dir / "checkpoints" / tag_for_step(6) / "rank_1.pt").write_bytes(b"torn")
    dist.barrier()
    fallback = ckpt.restore("auto")
    leave_distributed(finished=True)
    assert resumed is not None and fallback is not None
    return failures, resumed.step, fallback.step


def test_a_rank_raising_mid_save_fails_it_on_every_rank_and_resume_skips_it(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    ranks = run_distributed(save_fail_restore, 2, tmp_path)
    message = (
        "checkpoint at step 4 failed on rank 1: RuntimeError: pickling the optimizer state broke"
    )
    assert ranks == [([message], 6, 2), ([message], 6, 2)]  # every rank agrees, every time
    ckpt = tmp_path / "checkpoints"
    assert step_tags(ckpt) == [tag_for_step(2), tag_for_step(6)]  # no partial step 4
    marker = read_marker(ckpt / tag_for_step(2))
    assert marker is not None and marker.files is not None
    assert sorted(marker.files) == ["rank_0.pt", "rank_1.pt"]  # both ranks' files recorded
    err = capfd.readouterr().err
    assert (
        "warning: checkpoint step_00000006 is damaged (rank_1.pt: 4 bytes, its marker records"
        in err
    )


def test_sigkill_during_a_background_save_resumes_from_the_one_before(
    tmp_path: Path, tiny_shards: Path, undisturbed: Path
) -> None:
    """The save of step 4 is held in the background (SLOW_SAVE_ENV) while training goes on;
    the whole run is SIGKILLed then. Step 4 never gets its marker, LATEST stays on step 2, and
    the rerun resumes there with the undisturbed run's losses."""
    run_dir = tmp_path / "run"
    env = {**os.environ, SLOW_SAVE_ENV: "4:120"}
    proc = subprocess.Popen(train_cmd(run_dir, tiny_shards, *ARGS, "trainer.max_steps=6"),
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = run_dir / "checkpoints"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = run_dir / "metrics.jsonl"
            steps = len(read_metrics(metrics)) if metrics.exists() else 0
            if steps >= 5 and (ckpt / tag_for_step(4)).is_dir():
                break  # training went on past step 4 with its save in flight
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before its step-4 save could be killed"
        assert not (ckpt / tag_for_step(4) / COMPLETE).exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [t for t in step_tags(ckpt) if (ckpt / t / COMPLETE).exists()] == [tag_for_step(2)]
    assert (ckpt / LATEST).read_text().strip() == tag_for_step(2)
    rerun = run_train(run_dir, tiny_shards, *ARGS, "trainer.max_steps=6")
    assert "resuming from checkpoint at step 2 in" in rerun.stdout + rerun.stderr
    assert step_losses(run_dir) == step_losses(undisturbed)


def background_fail_restore(run_dir: Path) -> tuple[list[str], int]:
    """Background saves of steps 2, 4 (whose write fails on rank 1) and 6; the failure comes
    out of the next save on every rank. Returns this rank's errors and the step resumed at."""
    init_distributed("gloo", torch.device("cpu"), 60)
    engine = UnwritableOnRank(fail_on=(4, 1))
    group = dist.new_group(backend="gloo")
    ckpt = Checkpointer(engine, run_dir, Topology(2, 1, 0), 5, dist.get_rank() == 0, group=group)
    failures = []
    for step in (2, 4, 6):
        try:
            ckpt.save(ClientState(step, {}, None, 2), background=True)
        except CheckpointSaveError as err:
            failures.append(str(err))
            ckpt.save(ClientState(step, {}, None, 2), background=True)  # the run's next save
    ckpt.wait()
    resumed = ckpt.restore("auto")
    leave_distributed(finished=True)
    assert resumed is not None
    return failures, resumed.step


class UnwritableOnRank(RankFiles):
    """`RankFiles` whose file, on `fail_on`'s rank and step, goes to a folder that is not
    there: the save's collective part passes, its background write fails."""

    def save_state(self, directory: Path, tag: str, client_state: dict[str, object]) -> None:
        (directory / tag).mkdir(parents=True, exist_ok=True)
        dist.barrier()
        where = directory / tag
        if (client_state["step"], dist.get_rank()) == self.fail_on:
            where = where / "not_there"
        write_torch(client_state, where / f"rank_{dist.get_rank()}.pt")


def test_a_background_save_failing_on_one_rank_fails_on_every_rank(tmp_path: Path) -> None:
    ranks = run_distributed(background_fail_restore, 2, tmp_path)
    for failures, resumed in ranks:
        assert len(failures) == 1 and resumed == 6
        assert failures[0].startswith("checkpoint at step 4 failed on rank 1: No such file")
    ckpt = tmp_path / "checkpoints"
    assert step_tags(ckpt) == [tag_for_step(2), tag_for_step(6)]  # no partial step 4
    marker = read_marker(ckpt / tag_for_step(6))
    assert marker is not None and marker.files is not None
    assert sorted(marker.files) == ["rank_0.pt", "rank_1.pt"]


def thread_error_then_last_save(run_dir: Path) -> tuple[str, str, bool, bool]:
    """A background save whose thread hits an error of its own (a malformed fault spec), then
    the run's last, synchronous save: the error comes out of that save, made all the same."""
    os.environ[SLOW_SAVE_ENV] = "2:soon"
    init_distributed("gloo", torch.device("cpu"), 60)
    engine = RankFiles(fail_on=(-1, -1))
    group = dist.new_group(backend="gloo")
    ckpt = Checkpointer(engine, run_dir, Topology(1, 1, 0), 5, True, group=group)
    ckpt.save(ClientState(2, {}, None, 1), background=True)
    try:
        ckpt.save(ClientState(3, {}, None, 1))
        raised = ""
    except CheckpointSaveError as err:
        raised = str(err)
    leave_distributed(finished=True)
    ckpt_dir = run_dir / "checkpoints"
    latest = (ckpt_dir / LATEST).read_text().strip()
    return raised, latest, (ckpt_dir / tag_for_step(2)).exists(), _complete(ckpt_dir, 3)


def _complete(ckpt_dir: Path, step: int) -> bool:
    return (ckpt_dir / tag_for_step(step) / COMPLETE).exists()


def test_an_error_in_the_save_thread_is_reported_and_the_last_save_still_made(
    tmp_path: Path,
) -> None:
    raised, latest, step_2_left, step_3_complete = run_distributed(
        thread_error_then_last_save, 1, tmp_path
    )[0]
    assert raised.startswith("checkpoint at step 2 failed: ") and SLOW_SAVE_ENV in raised
    assert (latest, step_2_left, step_3_complete) == (tag_for_step(3), False, True)
