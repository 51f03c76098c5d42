"""Is a checkpoint still what was written? Its files against its COMPLETE marker.

Sizes are compared always (a stat per file), checksums when asked (`digest.py` measures what
they cost). A marker written before files were recorded cannot be verified: such a checkpoint
counts as intact, and the verdict says it was not verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gppf_dist.checkpoint.digest import FileRecord, file_checksum
from gppf_dist.checkpoint.layout import COMPLETE
from gppf_dist.checkpoint.marker import read_marker


@dataclass(frozen=True)
class Verdict:
    tag: str
    problems: tuple[str, ...]
    """What is damaged, each naming its file relative to the checkpoint; empty: intact."""
    verified: bool
    """False when the marker records no files (old checkpoints): nothing could be compared."""
    files: int = 0
    bytes: int = 0
    """What the marker records."""

    @property
    def intact(self) -> bool:
        return not self.problems


def checksum_problems(tag_dir: Path, records: dict[str, FileRecord]) -> list[str]:
    """The files of `records` whose bytes under `tag_dir` no longer hash to their record."""
    problems = []
    for name, record in sorted(records.items()):
        try:
            if file_checksum(tag_dir / name) != record.sha256:
                problems.append(f"{name}: checksum differs from its marker's")
        except FileNotFoundError:
            problems.append(f"{name}: missing")
        except OSError as err:
            problems.append(f"{name}: unreadable ({err.strerror or err})")
    return problems


def verify_checkpoint(tag_dir: Path, *, checksums: bool) -> Verdict:
    """Compare every file the marker of `tag_dir` records: present, its size, its checksum."""
    tag = tag_dir.name
    try:
        marker = read_marker(tag_dir)
    except (ValueError, OSError) as err:
        return Verdict(tag, (f"{COMPLETE}: unreadable ({err})",), verified=False)
    if marker is None:
        return Verdict(tag, (f"{COMPLETE}: missing (the save did not finish)",), verified=False)
    if marker.files is None:
        return Verdict(tag, (), verified=False)
    problems = []
    for name, record in sorted(marker.files.items()):
        path = tag_dir / name
        try:
            size = path.stat().st_size
            if size != record.size:
                problems.append(f"{name}: {size} bytes, its marker records {record.size}")
            elif checksums:
                problems.extend(checksum_problems(tag_dir, {name: record}))
        except FileNotFoundError:
            problems.append(f"{name}: missing")
        except OSError as err:
            problems.append(f"{name}: unreadable ({err.strerror or err})")
    total = sum(r.size for r in marker.files.values())
    return Verdict(tag, tuple(problems), True, len(marker.files), total)
