"""Keys and names the schema does not know, refused with the nearest known one.

Hydra accepts any key added with `+` (and `OmegaConf.merge` keeps what the dataclasses do not
declare until `to_object` drops it), so a misspelled key would otherwise change nothing, silently.
`check_known_keys` walks the composed mapping against the dataclasses of `schema.py`
(`dict[str, <dataclass>]` fields such as `simt.tasks` take any name, with checked values).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def nearest(word: str, known: Iterable[str]) -> str | None:
    """The closest known word, if one is close enough to be a likely typo."""
    found = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def did_you_mean(word: str, known: Iterable[str], quote: str = "`") -> str:
    """'; did you mean `x`?', or the known names when none is close."""
    known = sorted(known)
    near = nearest(word, known)
    if near is not None:
        return f"; did you mean {quote}{near}{quote}?"
    return f" (known: {', '.join(known)})" if known else ""


def _unwrap(hint: Any) -> Any:
    """X from `X | None`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _dataclass_values(hint: Any) -> type | None:
    """The dataclass of a `dict[str, <dataclass>]` field's values."""
    if typing.get_origin(hint) is dict:
        value = typing.get_args(hint)[1]
        return value if dataclasses.is_dataclass(value) else None
    return None


def unknown_keys(
    data: Mapping[str, Any], schema: type, prefix: str = ""
) -> list[tuple[str, Any, list[str]]]:
    """(dotted key, value, the known keys at that level) for every key the schema lacks."""
    hints = typing.get_type_hints(schema)
    found: list[tuple[str, Any, list[str]]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in hints:
            found.append((path, value, [f"{prefix}{k}" for k in hints]))
            continue
        hint = _unwrap(hints[key])
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            found += unknown_keys(value, hint, f"{path}.")  # type: ignore[arg-type]
        elif (inner := _dataclass_values(hint)) is not None and isinstance(value, Mapping):
            for name, item in value.items():
                if isinstance(item, Mapping):
                    found += unknown_keys(item, inner, f"{path}.{name}.")
    return found


def check_known_keys(data: Mapping[str, Any], schema: type) -> None:
    """Raise ValueError naming the first unknown key, its value and the nearest known key."""
    for path, value, known in unknown_keys(data, schema):
        raise ValueError(
            f"`{path}`={value!r} is not a configuration key{did_you_mean(path, known)}"
        )


def check_only_names(only: Iterable[str], tasks: Iterable[str]) -> None:
    """`simt.only` names tasks of `simt.tasks`: raise ValueError with the nearest otherwise."""
    known = list(tasks)
    for name in only:
        if name not in known:
            hint = did_you_mean(name, known, quote="'")
            raise ValueError(f"`simt.only` names unknown task {name!r}{hint}")


def check_group_choices(args: list[str], conf_dir: Path) -> None:
    """`group=option` arguments (`model=`, `experiment=`, ...) name a YAML of `conf/<group>/`
    (or of a `--config-dir`): raise ValueError with the nearest option otherwise, before Hydra
    lists them all. Left to Hydra when `hydra.searchpath` adds places to look."""
    dirs = [conf_dir]
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            dirs.append(Path(args[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.partition("=")[2]))
        elif arg.lstrip("+").startswith("hydra.searchpath"):
            return
    for arg in args:
        key, sep, value = arg.lstrip("+~").partition("=")
        groups = [d / key for d in dirs if (d / key).is_dir()]
        if not sep or "." in key or key.startswith("-") or not groups or value in ("", "null"):
            continue
        options = [p.stem for g in groups for p in g.glob("*.yaml")]
        if value not in options:
            hint = did_you_mean(value, options, quote="'")
            raise ValueError(f"`{key}`={value!r} is not an option of conf/{key}/{hint}")


def check_override_keys(args: Iterable[str], schema: type, conf_dir: Path | None = None) -> None:
    """`a.b.c=value` arguments, with or without `+`, name keys of the schema (`hydra.*` and
    deletions aside): raise ValueError with the nearest known key otherwise, before Hydra.
    `+group=option` adding a config group of `conf_dir` that the defaults do not list (e.g.
    `+scale=smoke`) is a group choice, which `check_group_choices` checks."""
    for arg in args:
        key, sep, value = arg.lstrip("+").partition("=")
        flag = arg.startswith(("~", "-"))  # a deletion, or one of Hydra's own flags
        if not sep or flag or "@" in key or "/" in key or key.startswith("hydra."):
            continue
        if arg.startswith("+") and conf_dir is not None and (conf_dir / key).is_dir():
            continue
        nested: dict[str, Any] = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        check_known_keys(nested, schema)
