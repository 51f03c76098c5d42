"""A worker's intra-op threads: its share of the cores, unless the user said otherwise."""

from __future__ import annotations

import pytest

from gppf_dist.dist.threads import choose_threads, local_workers


@pytest.mark.parametrize(
    ("env", "cores", "threads"),
    [
        ({"LOCAL_WORLD_SIZE": "2"}, 2, 1),  # two demo workers on a 2-core machine
        ({"LOCAL_WORLD_SIZE": "8"}, 96, 12),  # 8 GPU workers on a 96-core node
        ({"LOCAL_SIZE": "4"}, 16, 4),  # the DeepSpeed launcher's variable
        ({"SLURM_NTASKS_PER_NODE": "4(x2)"}, 32, 8),  # Slurm's per-node task count
        ({"LOCAL_WORLD_SIZE": "4"}, 2, 1),  # more workers than cores: at least one thread
        ({}, 6, 6),  # a bare process has the machine
        ({"SLURM_CPUS_PER_TASK": "7", "LOCAL_WORLD_SIZE": "2"}, 64, 7),  # Slurm's budget
    ],
)
def test_threads_are_the_workers_share_of_the_cores(
    env: dict[str, str], cores: int, threads: int
) -> None:
    assert choose_threads(0, env, cores)[0] == threads


def test_explicit_settings_win() -> None:
    env = {"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}
    threads, why = choose_threads(0, env, 16)
    assert threads is None and "OMP_NUM_THREADS=3" in why  # left as the user set it
    assert choose_threads(5, env, 16) == (5, "trainer.cpu_threads=5")


def test_local_workers_reads_the_launchers_variables() -> None:
    assert local_workers({}) == 1
    assert local_workers({"LOCAL_WORLD_SIZE": "3", "LOCAL_SIZE": "9"}) == 3
    assert local_workers({"SLURM_NTASKS_PER_NODE": "2,1"}) == 2
    assert local_workers({"LOCAL_WORLD_SIZE": "junk", "LOCAL_SIZE": "2"}) == 2
