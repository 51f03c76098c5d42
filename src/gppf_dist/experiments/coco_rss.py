"""Peak memory of reading a COCO-style annotation file: streamed into compact tables (what
`gppf-shards convert coco-*` does) against `json.loads` of the whole file.

    python -m gppf_dist.experiments.coco_rss --annotations 2000000 --out /tmp/coco_big.json

writes a COCO-style file of that many annotations (10 per image, each with a 16-number polygon,
like COCO's own), then reads it in a fresh process each way and prints the peak resident memory
of each (above the process's memory after its imports) and the seconds it took.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

PER_IMAGE = 10


def write_file(path: Path, annotations: int, seed: int = 0) -> None:
    """A COCO-style instances file, written piece by piece (never held whole)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = -(-annotations // PER_IMAGE)
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"info": {"description": "generated"}, "images": [')
        for i in range(images):
            entry = {"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480}
            f.write(("," if i else "") + json.dumps(entry))
        f.write('], "annotations": [')
        boxes = rng.uniform(0, 300, (annotations, 4)).round(2).tolist()
        for a in range(annotations):
            x, y, w, h = boxes[a]
            poly = [round(v, 2) for v in (x, y, x + w, y, x + w, y + h, x, y + h) * 2]
            entry = {
                "id": a + 1,
                "image_id": a // PER_IMAGE + 1,
                "category_id": a % 80 + 1,
                "bbox": [x, y, w, h],
                "area": round(w * h, 2),
                "iscrowd": 0,
                "segmentation": [poly],
            }
            f.write(("," if a else "") + json.dumps(entry))
        cats = [{"id": c + 1, "name": f"class{c}", "supercategory": "thing"} for c in range(80)]
        f.write('], "categories": ' + json.dumps(cats) + "}")


def _peak_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: the latter carries the
    forking parent's peak over into the child across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _measure(path: Path, how: str) -> None:
    """In this process: read `path` one way, print a JSON line of the figures."""
    from gppf_dist.data.convert.layouts.coco_json import read_coco_tables

    base = _peak_mib()
    start = time.perf_counter()
    if how == "stream":
        tables = read_coco_tables(path)
        count = len(tables.ann_image)
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        by_image: dict[int, list] = {}
        for a in data["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        count = sum(len(v) for v in by_image.values())
    seconds = time.perf_counter() - start
    print(json.dumps({"how": how, "annotations": count, "seconds": round(seconds, 1),
                      "base_mib": round(base), "peak_mib": round(_peak_mib()),
                      "peak_above_base_mib": round(_peak_mib() - base)}))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=int, default=2_000_000)
    parser.add_argument("--out", default="/tmp/coco_rss.json", help="generated file (reused)")
    parser.add_argument("--measure", choices=["stream", "json"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    path = Path(args.out)
    if args.measure:
        _measure(path, args.measure)
        return 0
    if not path.is_file():
        write_file(path, args.annotations)
    print(f"{path}: {path.stat().st_size / 2**20:.0f} MiB", flush=True)
    for how in ("stream", "json"):
        cmd = [sys.executable, "-m", "gppf_dist.experiments.coco_rss", "--out", str(path)]
        subprocess.run([*cmd, "--measure", how], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
