"""Write a wheelhouse: gppf_dist and every runtime dependency except torch, as wheels, so that a
machine without a network installs with `pip install --no-index --find-links <dir>` into an
environment that already holds its own (CUDA) torch.

    python tools/wheelhouse.py --out wheelhouse --python 3.11 --python 3.12 [--set gpu-check]

The dependency closure is read from this environment's installed metadata (the project's `.venv`,
installed from `constraints.txt`), walking gppf_dist's requirements and never into torch: the
versions are the ones our tests ran with. For each target Python, binary wheels for manylinux
x86_64 come from the package index; a package published only as a source archive is built here
once, and must give a pure-Python wheel (DeepSpeed: built without ops, which it compiles at run
time). `<out>/requirements.txt` pins the set; `--set gpu-check` leaves out what `gppf-bench
gpu-check` never imports (W&B and its workspace API, which only `gppf-wandb` uses; SciPy, which
only the pedestrian `.mat` layout reads) or runs without (OpenCV: `tasks/common/pixels.py` has a
torch path; its 61 MiB wheel alone is over the set's 48 MiB).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

PROJECT = "gppf_dist"
NEVER = {"torch"}
"""The cluster's own build stays: no wheel of it, nor of what only it needs."""
SETS = {
    "all": set(),
    "gpu-check": {"wandb", "wandb-workspaces", "scipy", "opencv-python-headless"},
}
"""Each set: the project's direct requirements it leaves out (with what only they need)."""
LIMIT_MIB = {"gpu-check": 48.0}
"""A set's most MiB for one Python: gpu-check's wheels travel with the source tree to a GPU box
that takes 64 MiB in all."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
REPO = Path(__file__).resolve().parents[1]


def _active(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate({"extra": ""})


def closure(leave_out: set[str]) -> dict[str, str]:
    """{name: installed version} of gppf_dist's runtime requirements, transitively, without
    torch and without `leave_out` (and what only they pull in)."""
    skip = {canonicalize_name(n) for n in NEVER | leave_out}
    found: dict[str, str] = {}

    def walk(name: str) -> None:
        key = canonicalize_name(name)
        if key in found or key in skip:
            return
        try:
            dist = distribution(key)
        except PackageNotFoundError:
            raise SystemExit(f"wheelhouse: {key} is required but not installed here") from None
        found[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if _active(req):
                walk(req.name)

    for line in distribution(PROJECT).requires or []:
        req = Requirement(line)
        if _active(req):
            walk(req.name)
    return dict(sorted(found.items()))


def pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def download_binary(pin: str, python: str, out: Path) -> bool:
    """The binary wheel of `pin` for CPython `python` on manylinux x86_64 (or a pure one)."""
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    target = ["--python-version", python, "--implementation", "cp", *platforms, "-d", str(out)]
    proc = pip("download", "--quiet", "--no-deps", "--only-binary=:all:", *target, pin)
    return proc.returncode == 0


def build_pure(pin: str, out: Path) -> Path:
    """Build `pin` from its source archive; it must give a wheel for every Python and platform."""
    with tempfile.TemporaryDirectory() as tmp:
        name = pin.split("==")[0]
        proc = pip("wheel", "--quiet", "--no-deps", "--no-binary", name, "-w", tmp, pin)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode or len(wheels) != 1:
            raise SystemExit(f"wheelhouse: building {pin} failed:\n{proc.stderr[-3000:]}")
        wheel = wheels[0]
        _, _, _, tags = parse_wheel_filename(wheel.name)
        if any(t.abi != "none" or t.platform != "any" for t in tags):
            raise SystemExit(f"wheelhouse: {pin} built as {wheel.name}, not a pure-Python wheel")
        target = out / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target


def build_project(out: Path) -> Path:
    """gppf_dist's own wheel, configs and launch script inside (pyproject's package data)."""
    with tempfile.TemporaryDirectory() as tmp:
        # from a copy: setuptools writes build/ and *.egg-info/ beside the sources it builds
        skip = shutil.ignore_patterns(".git", ".venv", "wheelhouse", "build", "runs", "shards",
                                      "*.egg-info", "__pycache__", ".*_cache")  # fmt: skip
        source = Path(tmp, "source")
        shutil.copytree(REPO, source, symlinks=True, ignore=skip)
        proc = pip("wheel", "--quiet", "--no-deps", "-w", tmp, str(source))
        wheels = list(Path(tmp).glob(f"{PROJECT}-*.whl"))
        if proc.returncode or len(wheels) != 1:
            raise SystemExit(f"wheelhouse: building {PROJECT} failed:\n{proc.stderr[-3000:]}")
        target = out / wheels[0].name
        target.write_bytes(wheels[0].read_bytes())
        return target


def for_python(wheel: Path, python: str) -> bool:
    """Whether CPython `python` (e.g. "3.12") installs `wheel`: pure, abi3 or its own build."""
    own = "cp" + python.replace(".", "")
    tags = parse_wheel_filename(wheel.name)[3]
    return any(t.interpreter == own or t.abi in ("abi3", "none") for t in tags)


def check_limit(out: Path, pythons: list[str], limit_mib: float | None) -> None:
    """Refuse a set over its limit for any one Python, naming its largest wheels."""
    if limit_mib is None:
        return
    for python in pythons:
        wheels = sorted((w for w in out.glob("*.whl") if for_python(w, python)),
                        key=lambda w: -w.stat().st_size)  # fmt: skip
        mib = sum(w.stat().st_size for w in wheels) / 2**20
        if mib > limit_mib:
            largest = ", ".join(f"{w.name.split('-')[0]} {w.stat().st_size / 2**20:.1f}"
                                for w in wheels[:4])  # fmt: skip
            raise SystemExit(f"wheelhouse: {out} holds {mib:.1f} MiB for Python {python}, over "
                             f"its {limit_mib:.0f} MiB; largest (MiB): {largest}")  # fmt: skip
        print(f"wheelhouse: {mib:.1f} MiB for Python {python} (limit {limit_mib:.0f} MiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "wheelhouse")
    parser.add_argument("--python", action="append", help="target CPython, e.g. 3.12 (repeat)")
    parser.add_argument("--set", choices=sorted(SETS), default="all")
    args = parser.parse_args(argv)
    pythons = args.python or ["3.11", "3.12"]
    args.out.mkdir(parents=True, exist_ok=True)

    pins = [f"{name}=={version}" for name, version in closure(SETS[args.set]).items()]
    built_pure: set[str] = set()
    for pin in pins:
        for python in pythons:
            if pin in built_pure or download_binary(pin, python, args.out):
                continue
            print(f"wheelhouse: {pin} has no wheel for Python {python}; building it", flush=True)
            build_pure(pin, args.out)
            built_pure.add(pin)
    project = build_project(args.out)
    version = parse_wheel_filename(project.name)[1]
    (args.out / "requirements.txt").write_text("\n".join([f"{PROJECT}=={version}", *pins]) + "\n")
    size = sum(f.stat().st_size for f in args.out.glob("*.whl"))
    print(
        f"wheelhouse: {args.out}: {len(pins) + 1} packages for Python {', '.join(pythons)}, "
        f"{size / 2**20:.1f} MiB (set {args.set}; torch is the environment's own)"
    )
    check_limit(args.out, pythons, LIMIT_MIB.get(args.set))


if __name__ == "__main__":
    main()
