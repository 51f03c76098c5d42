"""Two runs that must be the same run (another world size, EP size, ZeRO stage, memory cap, or a
resume at another world size) compared by what they must share, not by float noise.

fp32 reductions in another order differ by ~1e-7 relative; training amplifies that 10-50x a
step, mostly through Adam (ARCHITECTURE.md "Float noise"). So the bound depends on how many
steps the two runs have taken apart: the *anchor* is the first step both take from the same
state (step 1, or the first resumed step), and at `d` steps after it the objective, every task's
loss and the global gradient norm must agree to ENVELOPE[d] (relative):

    d        0       1       2       3       4
    bound    1e-6    1e-6    1e-3    5e-3    5e-2
    noise    1.8e-7  3.7e-7  1.1e-4  3.4e-4  1.0e-2

(noise: the largest difference measured by every test that uses this module, on a machine
whose float noise failed the old fixed bound of 1e-4; d = 4 is the fine-tune's gradient norm,
1.6e-3 for pre-training.) Runs further apart are not compared: noise there was not measured.

The gradient norm after an update (d >= 1) has its own, looser row, GRAD_NORM_ENVELOPE: the
gradient passes kinks of the objective (ReLU, max) that the loss value does not feel. At the
demo's step 5 (seed 7), rounding alone decides which side of one kink the re-ID path is on: the
step-4 parameters perturbed by 1e-7 relative, in one process, give a gradient norm at one of two
values 6.6e-6 apart (the re-ID route's lego gradients differ by 2.7%) while every loss agrees to
1e-7; a resume at 3 processes lands on either side depending on its cost-aware plan (4 of 12
plans). d = 1: 6.7e-6 measured, bound 5e-5; from d = 2 on the common row already covers it.

d = 0 is the objective and the gradient of one step, d = 1 the objective after its update: at
1e-6 they catch a break at once (planted: a task's gradient counted twice under EP gave 4.6e-3
in the gradient norm; one sample missing from a rank's gradient, 5.3e-5; a resumed stream one
sample off, 9.3e-3 in the objective). Later bounds stay 5-15x above the noise measured at that
distance: they catch gross breaks that appear late, not subtle ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gppf_dist.logging.metrics import read_metrics

ENVELOPE = (1e-6, 1e-6, 1e-3, 5e-3, 5e-2)
GRAD_NORM_ENVELOPE = (1e-6, 5e-5, 1e-3, 5e-3, 5e-2)

Records = dict[int, dict[str, Any]]


def records(run_dir: Path) -> Records:
    """Metric records of a run by step."""
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}


def _keys(record: dict[str, Any]) -> list[str]:
    return sorted(k for k in record if k in ("loss", "grad_norm") or k.startswith("loss/"))


def assert_same_run(ref: Records, other: Records, anchor: int = 1, *, last: int = 0) -> None:
    """`other` is `ref` from step `anchor` on (both took step `anchor` from the same state), up
    to step `last` (default: ref's last step)."""
    last = last or max(ref)
    steps = list(range(anchor, last + 1))
    assert all(s in ref and s in other for s in steps), (sorted(ref), sorted(other), steps)
    assert last - anchor < len(ENVELOPE), f"steps {anchor}..{last}: noise measured up to d=4"
    keys = _keys(ref[anchor])
    assert keys == _keys(other[anchor]), (keys, _keys(other[anchor]))
    for step in steps:
        for key in keys:
            allowed = (GRAD_NORM_ENVELOPE if key == "grad_norm" else ENVELOPE)[step - anchor]
            a, b = ref[step][key], other[step][key]
            diff = abs(a - b) / max(abs(a), 1e-30)
            assert diff <= allowed, f"step {step} {key}: {a!r} vs {b!r} ({diff:.2g} > {allowed:g})"
