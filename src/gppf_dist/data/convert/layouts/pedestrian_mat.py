"""Pedestrian attributes from the MATLAB annotation files PA-100K and RAP ship.

PA-100K: `<root>/annotation.mat` with `attributes` (26x1 cell of names), `<part>_images_name`
(Nx1 cell) and `<part>_label` (Nx26 0/1) for part train/val/test; images in
`<root>/release_data/release_data/`. `--split train` reads the train part (80,000 images),
`--split val` the test part (10,000): the common protocol trains on train and reports test, so
our `val` is the figure papers compare with. PA-100K's own val part (10,000 images, meant for
model selection) is not converted (see `PA100K_PARTS`).

RAP: `<root>/RAP_annotation/RAP_annotation.mat`, one struct `RAP_annotation` with the image
names (`name`, RAP v1 `imagesname`), attribute names (`attribute`, v1 `attribute_eng`), the
N x M label matrix (`data`, v1 `label`), `selected_attribute` (1-based indices of the attributes
of the evaluation protocol; all attributes when absent) and the partitions
(`partition_attribute`, v1 `partion`): structs with 1-based `train_index`, `val_index`,
`test_index`; partition 1 is used, train -> train_index, val -> val_index (test_index when a
partition has no val_index). RAP marks uncertain labels with 2: such a sample is skipped and
counted (`uncertain_label`), as is any value other than 0/1. Images in `<root>/RAP_dataset/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from gppf_dist.data.convert.layouts.attributes import attribute_loader
from gppf_dist.data.convert.layouts.base import Converted


def _load_mat(path: Path) -> dict[str, Any]:
    try:
        return scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, NotImplementedError) as exc:
        raise ValueError(f"convert: cannot read MATLAB file {path}: {exc}") from exc


def _strings(value: Any, where: str) -> list[str]:
    out = [str(np.asarray(v).ravel()[0]) if np.size(v) else "" for v in np.atleast_1d(value)]
    if not all(out):
        raise ValueError(f"convert: {where} must be a cell of non-empty strings")
    return out


def _items(
    names: list[str], labels: np.ndarray, where: str
) -> tuple[list[tuple[str, tuple[int, ...]]], dict[str, int]]:
    """`(image name, 0/1 attributes)` items; rows holding other values skipped and counted."""
    if labels.shape[0] != len(names):
        raise ValueError(f"convert: {where}: {labels.shape[0]} label rows for {len(names)} images")
    items, skipped = [], {}
    for name, row in zip(names, labels.tolist(), strict=True):
        if any(v not in (0, 1) for v in row):
            reason = "uncertain_label" if 2 in row else "bad_label"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        items.append((name, tuple(int(v) for v in row)))
    return items, skipped


def _image_dirs(images: Path | None, *candidates: Path) -> list[Path]:
    return [images] if images is not None else [d for d in candidates if d.is_dir()]


PA100K_PARTS = {"train": "train", "val": "test"}
"""Our split -> the PA-100K partition it reads: `val` is the test partition, the held-out set
the common protocol evaluates on (monitoring pre-training on it never trains on it)."""


def read_pa100k(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """PA-100K: `--src` the dataset root (or its `annotation.mat`); split as `PA100K_PARTS`."""
    if split not in PA100K_PARTS:
        raise ValueError(f"convert pa100k: split {split!r} is not one of {sorted(PA100K_PARTS)}")
    mat_file = src if src.is_file() else src / "annotation.mat"
    root = mat_file.parent
    if not mat_file.is_file():
        raise ValueError(f"convert pa100k: --src {src}: {mat_file} does not exist")
    mat = _load_mat(mat_file)
    part = PA100K_PARTS[split]
    keys = ("attributes", f"{part}_images_name", f"{part}_label")
    for key in keys:
        if key not in mat:
            raise ValueError(f"convert pa100k: {mat_file} has no `{key}`")
    attrs = _strings(mat["attributes"], f"{mat_file}: attributes")
    names = _strings(mat[keys[1]], f"{mat_file}: {keys[1]}")
    labels = np.asarray(mat[keys[2]]).reshape(len(names), len(attrs))
    items, skipped = _items(names, labels, f"{mat_file}: {keys[2]}")
    dirs = _image_dirs(images, root / "release_data" / "release_data", root / "release_data", root)
    load = attribute_loader(dirs)
    return Converted("attributes", "pa100k", {"attributes": attrs}, items, load, skipped)


def _field(struct: Any, names: tuple[str, ...], where: str) -> Any:
    for name in names:
        if name in getattr(struct, "_fieldnames", ()):
            return getattr(struct, name)
    raise ValueError(f"convert rap: {where} has none of the fields {list(names)}")


def read_rap(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """RAP (v2, and v1 by its field names): `--src` the root (or the `.mat` file)."""
    mat_file = src if src.is_file() else src / "RAP_annotation" / "RAP_annotation.mat"
    if not mat_file.is_file():
        raise ValueError(f"convert rap: --src {src}: {mat_file} does not exist")
    mat = _load_mat(mat_file)
    if "RAP_annotation" not in mat:
        raise ValueError(f"convert rap: {mat_file} has no struct `RAP_annotation`")
    ann, where = mat["RAP_annotation"], f"{mat_file}: RAP_annotation"
    names = _strings(_field(ann, ("name", "imagesname"), where), f"{where}.name")
    attrs = _strings(_field(ann, ("attribute", "attribute_eng"), where), f"{where}.attribute")
    labels = np.asarray(_field(ann, ("data", "label"), where)).reshape(len(names), len(attrs))
    if "selected_attribute" in ann._fieldnames:
        chosen = np.atleast_1d(ann.selected_attribute).astype(np.int64) - 1
        attrs, labels = [attrs[i] for i in chosen], labels[:, chosen]
    partition = np.atleast_1d(_field(ann, ("partition_attribute", "partion", "partition"), where))[
        0
    ]
    index_keys = ("train_index",) if split == "train" else ("val_index", "test_index")
    rows = np.atleast_1d(_field(partition, index_keys, f"{where} partition 1")).astype(np.int64) - 1
    if rows.size and (rows.min() < 0 or rows.max() >= len(names)):
        raise ValueError(f"convert rap: {where}: partition 1 indexes outside 1..{len(names)}")
    items, skipped = _items([names[i] for i in rows], labels[rows], where)
    root = mat_file.parent.parent if mat_file.parent.name == "RAP_annotation" else mat_file.parent
    dirs = _image_dirs(images, root / "RAP_dataset", root)
    load = attribute_loader(dirs)
    return Converted("attributes", "rap", {"attributes": attrs}, items, load, skipped)
