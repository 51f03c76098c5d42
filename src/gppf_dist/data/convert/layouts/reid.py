"""Person re-identification folders named the Market-1501 way."""

from __future__ import annotations

import re
from pathlib import Path

from gppf_dist.data.convert.layouts.base import Converted, Members, image_files, image_sample

MARKET_RE = re.compile(r"^(-?\d+)_c(\d+)")
"""Market-1501 names: `<identity>_c<camera>s<sequence>_<frame>_<box>.jpg` (MSMT17's
`<identity>_c<camera>_<n>.jpg` too); identity -1 is junk, 0 a distractor."""


def parse_names(folder: Path) -> tuple[list[tuple[str, int, int]], dict[str, int]]:
    """`(path, identity, camera)` per image of `folder` with a person identity; the others
    counted by reason (bad_name, junk_identity -1, distractor 0000)."""
    items: list[tuple[str, int, int]] = []
    skipped: dict[str, int] = {}
    for path in image_files(folder):
        match = MARKET_RE.match(path.name)
        identity = int(match.group(1)) if match else None
        reason = (
            "bad_name" if identity is None
            else "junk_identity" if identity < 0
            else "distractor" if identity == 0
            else None
        )  # fmt: skip
        if reason is not None:
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        assert match is not None and identity is not None
        items.append((str(path), identity, int(match.group(2))))
    return items, skipped


def load_reid(item: tuple[str, int, int]) -> Members:
    return image_sample(Path(item[0]), {"identity": item[1], "camera": item[2]})


MARKET_TRAIN = "bounding_box_train"
MARKET_VAL = ("query", "bounding_box_test")


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for reason, n in more.items():
        total[reason] = total.get(reason, 0) + n


def read_market_tree(src: Path, split: str) -> Converted:
    """A Market-1501 root (MSMT17 in the same tree too): `bounding_box_train/` for train,
    `query/` + `bounding_box_test/` for val.

    Train identities become 0..N-1 in ascending order of the original ids, which the label
    space keeps (`identities`), so the classifier has exactly N classes. Val keeps the original
    ids: they are other people, compared by equality only, so they need no relabelling (and
    cannot collide with each other). Junk (-1) and distractor (0000) images are skipped in both
    splits and counted: the retrieval metric treats every sample as a query, and distractors
    all sharing identity 0 would count as matches of one another."""
    train, train_skipped = parse_names(src / MARKET_TRAIN)
    originals = sorted({identity for _, identity, _ in train})
    space = {"num_identities": len(originals), "identities": originals}
    if split == "train":
        new_id = {old: new for new, old in enumerate(originals)}
        items = [(path, new_id[identity], camera) for path, identity, camera in train]
        return Converted("reid", "market1501", space, items, load_reid, train_skipped)
    items, skipped = [], {}
    for folder in MARKET_VAL:
        if not (src / folder).is_dir():
            raise ValueError(f"convert reid: --src {src} has no {folder}/ (needed for val)")
        found, dropped = parse_names(src / folder)
        items += found
        _add(skipped, dropped)
    return Converted("reid", "market1501", space, items, load_reid, skipped)


def read_reid(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """A Market-1501 root (see `read_market_tree`), or a flat folder of Market-1501 names:
    identity and camera as in the file name, junk (-1) and distractor (0) ids skipped,
    `num_identities` = max id + 1."""
    if (src / MARKET_TRAIN).is_dir():
        return read_market_tree(src, split)
    items, skipped = parse_names(src)
    space = {"num_identities": max((i for _, i, _ in items), default=0) + 1}
    return Converted("reid", "market1501", space, items, load_reid, skipped)
