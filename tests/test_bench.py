"""The benchmarks in bench/ import against the current package: they are run by hand, so
an API they use that moved would otherwise surface only when someone measures. Each stands
alone on the installed package (no sys.path edits, no imports of each other)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import ROOT

SCRIPTS = sorted((ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_a_benchmark_script_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # main() runs only under __main__
    assert callable(getattr(module, "main", None))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_a_benchmark_script_stands_alone(path: Path) -> None:
    tree = ast.parse(path.read_text())
    siblings = {p.stem for p in SCRIPTS}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [(node.module or "").split(".")[0]]
        else:
            continue
        assert not siblings & set(names), f"{path.name} imports another bench script"
    assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"
