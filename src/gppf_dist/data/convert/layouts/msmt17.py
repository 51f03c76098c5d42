"""MSMT17_V1 as released: images listed with their identity in `list_*.txt` split files.

`<root>/list_train.txt`, `list_val.txt`, `list_query.txt`, `list_gallery.txt`: one
`<relative image path> <identity>` per line, the path relative to `<root>/train/` (train and
val lists) or `<root>/test/` (query and gallery lists), e.g.
`0000/0000_000_01_0303morning_0015_0.jpg 0`. The camera is the name's third `_` field (1..15,
1-based as Market-1501's). Unlike Market-1501, identity 0 is a real person in both halves.

Splits follow `reid.read_market_tree`, so MSMT17 lands in the same annotation schema and label
space form as Market-1501:

- `train` reads `list_train.txt` and `list_val.txt`. MSMT17's val list is carved out of the same
  1,041 training identities (30,248 + 2,373 = 32,621 images, the published train size); it holds
  no unseen people, so it is no validation set for re-identification, and the usual protocol
  trains on both. Identities are relabelled 0..N-1 in ascending order of the original ids (kept
  in the label space's `identities`).
- `val` reads `list_query.txt` and `list_gallery.txt` (the 3,060 test identities) with their
  original ids: other people, compared by equality only (every sample is a query against the
  others in the reid metric).
"""

from __future__ import annotations

from pathlib import Path

from gppf_dist.data.convert.layouts.base import Converted, ItemError, Members
from gppf_dist.data.convert.layouts.reid import load_reid

MSMT_ROOT = "MSMT17_V1"
MSMT_LISTS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (("list_train.txt", "train"), ("list_val.txt", "train")),
    "val": (("list_query.txt", "test"), ("list_gallery.txt", "test")),
}
"""Our split -> its (list file, image folder) pairs."""

Item = tuple[str, int, int]


def _add(skipped: dict[str, int], reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1


def camera_of(name: str) -> int | None:
    """The 1-based camera of an MSMT17 image name (its third `_` field), None if it has none."""
    fields = Path(name).name.split("_")
    return int(fields[2]) if len(fields) >= 3 and fields[2].isdigit() else None


def read_list(list_file: Path, image_dir: Path) -> tuple[list[Item], dict[str, int]]:
    """`(image path, identity, camera)` per line of `list_file`; names without a camera field
    and negative identities are skipped and counted. A line that is not `<path> <int>` is a
    damaged list file: ValueError naming the file and line."""
    items: list[Item] = []
    skipped: dict[str, int] = {}
    lines = list_file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        cols = line.split()
        if len(cols) != 2 or not cols[1].lstrip("-").isdigit():
            raise ValueError(
                f"convert msmt17: {list_file}:{number}: expected `<image path> <identity>`, "
                f"got {line!r:.80}"
            )
        identity, camera = int(cols[1]), camera_of(cols[0])
        if camera is None:
            _add(skipped, "bad_name")
        elif identity < 0:
            _add(skipped, "junk_identity")
        else:
            items.append((str(image_dir / cols[0]), identity, camera))
    return items, skipped


def load_listed(item: Item) -> Members:
    """`load_reid` for a listed image, which may be absent (counted, not fatal)."""
    if not Path(item[0]).is_file():
        raise ItemError("missing_image", f"{item[0]} is listed but does not exist")
    return load_reid(item)


def _read_split(root: Path, images: Path, split: str) -> tuple[list[Item], dict[str, int]]:
    items: list[Item] = []
    skipped: dict[str, int] = {}
    for list_name, folder in MSMT_LISTS[split]:
        list_file = root / list_name
        if not list_file.is_file():
            raise ValueError(f"convert msmt17: --src {root}: {list_file} does not exist")
        found, dropped = read_list(list_file, images / folder)
        items += found
        for reason, n in dropped.items():
            skipped[reason] = skipped.get(reason, 0) + n
    return items, skipped


def read_msmt17(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """MSMT17_V1: `--src` the folder holding the `list_*.txt` files (or its parent);
    `--images` the folder holding `train/` and `test/` (default: `--src`)."""
    if split not in MSMT_LISTS:
        raise ValueError(f"convert msmt17: split {split!r} is not one of {sorted(MSMT_LISTS)}")
    root = src / MSMT_ROOT if (src / MSMT_ROOT).is_dir() else src
    image_root = images or root
    train, train_skipped = _read_split(root, image_root, "train")
    originals = sorted({identity for _, identity, _ in train})
    space = {"num_identities": len(originals), "identities": originals}
    if split == "train":
        new_id = {old: new for new, old in enumerate(originals)}
        items = [(path, new_id[identity], camera) for path, identity, camera in train]
        return Converted("reid", "msmt17", space, items, load_listed, train_skipped)
    items, skipped = _read_split(root, image_root, "val")
    return Converted("reid", "msmt17", space, items, load_listed, skipped)
