"""Slurm's compressed host lists (`gpu[001-004,007],login1`), expanded in Slurm's order.

Supported: comma-separated entries, each a host name with any number of bracket groups of numbers
and ranges, zero padding kept (`gpu[001-004]`, `rack[1-2]-gpu[01-08]`, `node[3,7-9]-ib`). Anything
else is a ValueError rather than a guess: a wrong first host leaves every node waiting for a
rendezvous that never comes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_LITERAL = re.compile(r"[A-Za-z0-9._-]*")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_GROUP = re.compile(r"\[([^\[\]]*)\]")


def expand_hostlist(nodelist: str) -> list[str]:
    """Every host of `nodelist`, in order."""
    return list(iter_hostlist(nodelist))


def first_slurm_host(nodelist: str) -> str:
    """The first host of `nodelist`, without expanding the rest (a range may be long)."""
    return next(iter_hostlist(nodelist))


def iter_hostlist(nodelist: str) -> Iterator[str]:
    """The hosts of `nodelist`, lazily; the whole list is parsed (and checked) before the first."""
    entries = [_parse_entry(entry, nodelist) for entry in _split_entries(nodelist.strip())]
    return (host for choices in entries for host in _iter_entry(choices))


# A parsed entry alternates literal text (a str) and bracket groups (lists of (low, high, width)).
_Choice = str | list[tuple[int, int, int]]


def _split_entries(nodelist: str) -> list[str]:
    """Split at the commas outside brackets (those inside separate ranges)."""
    entries: list[str] = []
    start, inside = 0, False
    for i, char in enumerate(nodelist):
        if char == "[":
            if inside:
                raise _error(nodelist, "nested '['")
            inside = True
        elif char == "]":
            if not inside:
                raise _error(nodelist, "']' without '['")
            inside = False
        elif char == "," and not inside:
            entries.append(nodelist[start:i])
            start = i + 1
    if inside:
        raise _error(nodelist, "'[' without ']'")
    entries.append(nodelist[start:])
    if any(not entry for entry in entries):
        raise _error(nodelist, "empty host name")
    return entries


def _parse_entry(entry: str, nodelist: str) -> list[_Choice]:
    # re.split with one capture group: even indices are literal text, odd ones bracket contents.
    pieces = _GROUP.split(entry)
    choices: list[_Choice] = []
    for i, piece in enumerate(pieces):
        if i % 2 == 0:
            if not _LITERAL.fullmatch(piece):
                raise _error(nodelist, f"unexpected character in {piece!r}")
            if piece:
                choices.append(piece)
        else:
            choices.append([_parse_range(item, nodelist) for item in piece.split(",")])
    return choices


def _parse_range(item: str, nodelist: str) -> tuple[int, int, int]:
    match = _RANGE.fullmatch(item)
    if match is None:
        raise _error(nodelist, f"bad range {item!r} (expected N or N-M)")
    low_text, high_text = match.group(1), match.group(2) or match.group(1)
    low, high = int(low_text), int(high_text)
    if low > high:
        raise _error(nodelist, f"range {item!r} runs backwards")
    # Slurm pads every number of a range to the width of its low end: 008-010 -> 008 009 010.
    return low, high, len(low_text)


def _iter_entry(choices: list[_Choice]) -> Iterator[str]:
    """The product of an entry's choices, leftmost slowest (`a[1-2]b[1-2]`: a1b1 a1b2 a2b1 a2b2),
    generated lazily (itertools.product would expand every range up front)."""
    if not choices:
        yield ""
        return
    for head in _iter_choice(choices[0]):
        for tail in _iter_entry(choices[1:]):
            yield head + tail


def _iter_choice(choice: _Choice) -> Iterator[str]:
    if isinstance(choice, str):
        yield choice
        return
    for low, high, width in choice:
        for number in range(low, high + 1):
            yield str(number).zfill(width)


def _error(nodelist: str, why: str) -> ValueError:
    return ValueError(f"cannot parse Slurm host list {nodelist!r}: {why}")
