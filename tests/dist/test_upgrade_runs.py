"""A corpus in the previous shard format (sample offsets inside manifest.json), upgraded in
place with `gppf-shards upgrade`, resumes a run checkpointed before: the losses are those of a
run that never stopped. Until it is upgraded, a run on it is refused naming the command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.logging.metrics import read_metrics

from ..shard_roots import to_format_1
from .run_pool import PoolRuns

COMMON = ("launcher.nproc=2", "trainer.eval_at_start=false", "trainer.checkpoint_every=3")


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


def test_a_run_resumes_exactly_on_an_upgraded_corpus(
    pool_runs: PoolRuns, tiny_shards: Path, tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_shards, corpus)
    straight, run = tmp_path / "straight", tmp_path / "run"
    pool_runs.train(straight, corpus, *COMMON, "trainer.max_steps=6")
    pool_runs.train(run, corpus, *COMMON, "trainer.max_steps=3")

    to_format_1(corpus)  # the corpus as the previous version wrote it
    with pytest.raises(ValueError, match=f"`gppf-shards upgrade {corpus}`"):
        pool_runs.train(run, corpus, *COMMON, "trainer.max_steps=6")
    assert shards_main(["upgrade", str(corpus)]) == 0

    resumed = pool_runs.train(run, corpus, *COMMON, "trainer.max_steps=6")
    assert "resuming from checkpoint at step 3" in resumed.stdout
    assert sorted(losses(run)) == list(range(1, 7))
    assert losses(run) == losses(straight)
