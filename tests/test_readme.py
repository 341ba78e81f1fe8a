"""Every Python block of README.md and docs/*.md runs as written, with small budgets, so
the examples a newcomer copies cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inrlab.models.decoders.parts import PARTS
from inrlab.models.registry import MODELS

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# The only edits: training budgets shrink to a few batches.
BUDGETS = [(re.compile(r"max_inputs=[\d_]+"), "max_inputs=64"),
           (re.compile(r"inrlab\.run\(([^()]*)\)"), r"inrlab.run(\1, max_inputs=64)")]


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks() -> list[tuple[str, str]]:
    """(name, code) of every Python block, e.g. ("README.md python block 1", ...)."""
    return [(f"{page.relative_to(ROOT)} python block {n + 1}", code) for page in PAGES
            for n, code in enumerate(BLOCK.findall(page.read_text()))]


def test_the_readme_has_python_examples() -> None:
    assert any(name.startswith("README.md") for name, _ in python_blocks()), (
        "README.md lost its Python examples (or their ```python fence)")


@pytest.mark.parametrize("name,code", python_blocks(), ids=[n for n, _ in python_blocks()])
def test_a_python_block_runs(name: str, code: str, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in an empty directory that has the project's experiments/ (as a fresh clone
    has), without ../shared: every dataset the examples use must ship with the package."""
    for pattern, small in BUDGETS:
        code = pattern.sub(small, code)
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INRLAB_RUNS_DIR", raising=False)
    monkeypatch.setenv("INRLAB_CACHE_DIR", str(tmp_path / "cache"))  # nothing downloaded
    # What an example registers (docs/development.md's PlainMLPDecoder) stays in the example:
    # later tests (the generated API reference) see the package's registries alone.
    for registry in (MODELS, PARTS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    exec(compile(code, name, "exec"), {"__name__": "readme"})
