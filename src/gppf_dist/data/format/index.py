"""`gppf-shards index`: add per-sample byte offsets to a root of shards written by other tools
(our writer records them as it writes), so a stream can read part of a shard. And `gppf-shards
upgrade`: a root of the previous format (offsets inside manifest.json) to the current one.

A sample's offset is that of its first tar header; samples are consecutive members sharing a
key (the WebDataset convention, as `decode.read_shard` groups them). Only headers are read:
a shard costs one pass over its headers, not its image bytes.
"""

from __future__ import annotations

import tarfile
from dataclasses import replace
from pathlib import Path

from gppf_dist.data.decode.sample import MEMBER_NAME
from gppf_dist.data.format.manifest import (
    FORMAT_1,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    Manifest,
    ShardInfo,
    load_manifest,
    manifest_from_dict,
    read_manifest_json,
    save_manifest,
)


def shard_offsets(path: Path) -> tuple[int, ...]:
    """Offsets of each sample's first header, then where the last sample's data ends."""
    offsets: list[int] = []
    key = None
    end = 0
    with tarfile.open(path, mode="r:") as tar:  # random access: headers only, data skipped
        for member in tar:
            end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            match = MEMBER_NAME.match(member.name)
            if match is None:  # not a sample member (as the reader, which skips it)
                continue
            if match.group(1) != key:
                offsets.append(member.offset)
                key = match.group(1)
    return (*offsets, end)


def index_shard(root: Path, shard: ShardInfo) -> ShardInfo:
    """`shard` with its offsets; ValueError naming the shard when its samples do not match."""
    try:
        offsets = shard_offsets(root / shard.path)
    except (OSError, tarfile.TarError) as exc:
        raise ValueError(f"cannot index shard {shard.path!r}: {exc}") from None
    if len(offsets) - 1 != shard.samples:
        raise ValueError(
            f"shard {shard.path!r} holds {len(offsets) - 1} samples, the manifest says "
            f"{shard.samples}: fix the manifest (or `gppf-shards verify`) before indexing"
        )
    return replace(shard, offsets=offsets)


def index_root(root: Path, force: bool = False) -> tuple[int, int]:
    """Index every shard of `root`'s manifest that lacks offsets (with `force`: every shard);
    saves the manifest once, at the end (atomically). Returns (shards indexed, shards kept)."""
    manifest: Manifest = load_manifest(root)
    done = kept = 0
    for task in manifest.tasks.values():
        for split, shards in task.splits.items():
            new = []
            for shard in shards:
                if len(shard.offsets) == shard.samples + 1 and not force:
                    new.append(shard)
                    kept += 1
                else:
                    new.append(index_shard(root, shard))
                    done += 1
            task.splits[split] = new
    if done:
        save_manifest(root, manifest)
    return done, kept


def upgrade_root(root: Path) -> Manifest | None:
    """Convert `root` from format 1 in place: each split's offsets to its offsets file, then
    manifest.json rewritten without them (`save_manifest`: every file atomically, the manifest
    last). A crash midway leaves the format-1 manifest, still whole, and a rerun finishes the
    job. None when `root` is already in the current format."""
    root = Path(root)
    raw = read_manifest_json(root)
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if version == SCHEMA_VERSION:
        return None
    if version != FORMAT_1:
        raise ValueError(
            f"{root / MANIFEST_NAME}: schema_version {version!r} is neither {FORMAT_1} (upgraded "
            f"by this command) nor {SCHEMA_VERSION} (current)"
        )
    manifest = manifest_from_dict(raw, str(root / MANIFEST_NAME), format_1=True)
    save_manifest(root, manifest)
    return manifest
