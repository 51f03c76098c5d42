"""Folder-per-label layouts: ImageNet-style ImageFolder and identity folders (faces)."""

from __future__ import annotations

from pathlib import Path

from gppf_dist.data.convert.layouts.base import Converted, Members, image_files, image_sample


def _labelled_files(src: Path, layout: str, noun: str) -> tuple[list[str], list[tuple[str, int]]]:
    """Sorted folder names and `(relative path, folder index)` for every image in them."""
    names = sorted(d.name for d in src.iterdir() if d.is_dir())
    if not names:
        raise ValueError(f"convert {layout}: --src {src} has no {noun} folders")
    items = [
        (f"{name}/{path.name}", label)
        for label, name in enumerate(names)
        for path in image_files(src / name)
    ]
    return names, items


def read_imagefolder(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """ImageNet style: `src/<class>/<image>`; classes are the sorted folder names."""
    classes, items = _labelled_files(src, "imagefolder", "class")

    def load(item: tuple[str, int]) -> Members:
        return image_sample(src / item[0], {"label": item[1]}, cls=True)

    return Converted("classification", "imagefolder", {"classes": classes}, items, load)


def read_face_folders(src: Path, images: Path | None = None, split: str = "train") -> Converted:
    """`src/<identity>/<image>`: identity = index of the folder name in sorted order."""
    names, items = _labelled_files(src, "face-folders", "identity")
    space = {"num_identities": len(names), "identities": names}

    def load(item: tuple[str, int]) -> Members:
        return image_sample(src / item[0], {"identity": item[1]})

    return Converted("face", "face_folders", space, items, load)
