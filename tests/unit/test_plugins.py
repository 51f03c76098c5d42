"""`plugins=[...]` (config/plugins.py): files and modules imported once per process, before the
config is checked; a bad entry is refused naming `plugins` and the entry."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gppf_dist.config.load import to_run_config
from gppf_dist.config.plugins import load_plugins

PLUGIN = """
import os
with open(os.environ["GPPF_TEST_PLUGIN_LOG"], "a") as f:
    f.write(__name__ + "\\n")
"""


def test_a_file_is_imported_once_by_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.txt"
    monkeypatch.setenv("GPPF_TEST_PLUGIN_LOG", str(log))
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    cfg = to_run_config({"plugins": ["my_plugin.py"]})  # relative to the current directory
    assert cfg.plugins == [str(plugin)]  # saved absolute, for workers started elsewhere
    load_plugins(cfg.plugins)  # a worker reading the saved config: not run twice
    assert log.read_text().split() == ["my_plugin"]  # by its own name: spawned loaders find it
    assert Path(sys.modules["my_plugin"].__file__ or "") == plugin


def test_a_module_is_imported_by_its_dotted_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.txt"
    monkeypatch.setenv("GPPF_TEST_PLUGIN_LOG", str(log))
    (tmp_path / "lab_tasks_for_test.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        load_plugins(["lab_tasks_for_test", "lab_tasks_for_test"])
        assert log.read_text().split() == ["lab_tasks_for_test"]
    finally:
        sys.modules.pop("lab_tasks_for_test", None)


def test_a_file_whose_name_is_taken_gets_a_name_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.txt"
    monkeypatch.setenv("GPPF_TEST_PLUGIN_LOG", str(log))
    plugin = tmp_path / "json.py"  # the standard library's json keeps its name
    plugin.write_text(PLUGIN)
    load_plugins([str(plugin)])
    (name,) = log.read_text().split()
    assert name.startswith("gppf_plugin_json_") and sys.modules["json"].__file__ != str(plugin)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("/nonexistent/toy.py", "`plugins`: file '/nonexistent/toy.py' does not exist"),
        ("no_such_module_for_gppf", "`plugins`: cannot import module 'no_such_module_for_gppf'"),
        ("", "`plugins`: '' must be a module name or a .py file path"),
    ],
)
def test_a_bad_entry_is_refused_naming_it(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        load_plugins([entry])


def test_a_plugin_that_raises_is_not_left_half_imported(tmp_path: Path) -> None:
    plugin = tmp_path / "broken_plugin.py"
    plugin.write_text("raise RuntimeError('broken on purpose')\n")
    for _ in range(2):  # the second try runs the file again instead of finding a husk
        with pytest.raises(RuntimeError, match="broken on purpose"):
            load_plugins([str(plugin)])
    assert "broken_plugin" not in sys.modules
