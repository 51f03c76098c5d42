"""`gppf-bench startup` on two corpus sizes (sparse shards in the real format): one rank's
start-up path runs on each, a fresh start and a mid-epoch resume, and what it costs a rank in
stat calls and memory does not grow with the corpus (15x the samples here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = str(Path(sys.executable).parent / "gppf-bench")


def startup(root: Path, samples: int) -> dict[str, Any]:
    cmd = [BENCH, "startup", "--samples", str(samples), "--tasks", "3", "--streams", "256",
           "--world", "64", "--root", str(root), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_a_ranks_start_up_does_not_grow_with_the_corpus(tmp_path: Path) -> None:
    small = startup(tmp_path / "small", 100_000)
    large = startup(tmp_path / "large", 1_500_000)
    for result in (small, large):
        assert result["rank_streams"] >= 3 * 256 // 64  # the busiest rank
        for case in (result, result["resume"]):
            assert case["slots"] >= 3 * 256 * 2 // 64  # at least its share of a step's samples
            assert case["shard_stat_calls"] == 0  # the launcher checked the shards
            assert case["stat_calls"] <= 4  # the config, the manifest, the checkpoint folder
            assert case["startup_s"] > 0 and case["rss_mib"] > 0
    assert large["node_stat_calls"] > 5 * small["node_stat_calls"]  # one per shard, once a launch
    assert large["manifest_mib"] < 15 * small["manifest_mib"]
    for case in ("stat_calls", "shard_stat_calls", "rank_streams", "slots"):
        assert large[case] == small[case]
    assert large["rss_mib"] <= 1.5 * small["rss_mib"] + 10, (small, large)
    assert large["resume"]["rss_mib"] <= 1.5 * small["resume"]["rss_mib"] + 10, (small, large)
    assert (tmp_path / "large/index/face.train.offsets").stat().st_size > 8 * 1_000_000
