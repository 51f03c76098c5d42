"""The user's own code, imported before a run's configuration is checked.

`plugins=[my_lab.tasks, /shared/gppf/toy_launcher.py]` names Python modules (dotted, importable
from `sys.path`) or files (a path ending in `.py`). Each is imported once per process, in
`gppf-train` before the configuration is checked and in every worker before it builds anything
(`load.to_run_config` calls `load_plugins`), so a task type or a launcher that registers itself
on import (`tasks.registry.register_task_type`, `launch.registry.register_launcher`) is known
wherever the run needs it. A file is imported by its own name from its folder (the folder is
appended to `sys.path`), or, when another module already has that name, under a name made from
its path; the saved config holds the absolute path, so workers started elsewhere find the file.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path


def is_file_entry(entry: str) -> bool:
    return entry.endswith(".py") or "/" in entry


def absolute(entries: Sequence[str]) -> list[str]:
    """`entries` with every file path made absolute (from the current directory)."""
    return [str(Path(e).expanduser().resolve()) if is_file_entry(e) else e for e in entries]


def load_plugins(entries: Sequence[str]) -> None:
    """Import every entry not yet imported; ValueError naming `plugins` and the entry when one
    does not exist or fails to import."""
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise ValueError(f"`plugins`: {entry!r} must be a module name or a .py file path")
        if is_file_entry(entry):
            _load_file(Path(entry).expanduser().resolve(), entry)
        elif entry not in sys.modules:
            try:
                importlib.import_module(entry)
            except ImportError as err:
                raise ValueError(f"`plugins`: cannot import module {entry!r}: {err}") from err


def _load_file(path: Path, entry: str) -> None:
    if not path.is_file():
        raise ValueError(f"`plugins`: file {entry!r} does not exist")
    stem = path.stem
    loaded = sys.modules.get(stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or ".").resolve() == path:
        return
    if stem.isidentifier() and loaded is None:
        found = importlib.util.find_spec(stem)
        if found is None or (found.origin and Path(found.origin).resolve() == path):
            # Importable by its own name from its folder (appended: it shadows nothing), so
            # loader processes started with `spawn` (data.decoder=gpu), which receive sys.path,
            # unpickle the task types it defines.
            if str(path.parent) not in sys.path:
                sys.path.append(str(path.parent))
            importlib.import_module(stem)
            return
    # The name is taken by another module: import it under a name made from its path.
    name = f"gppf_plugin_{stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"`plugins`: {entry!r} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except Exception:
        del sys.modules[name]
        raise
