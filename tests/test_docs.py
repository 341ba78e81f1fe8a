"""The reference cannot drift from the code: docs/api.md is what scripts/reference.py
generates, the keys table of docs/experiment-files.md names every key with the code's
default, docs/commands.md names every flag and the keys a re-run may change, and README.md
stays a manual."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
from typing import Any

import pytest

from conftest import ROOT

DOCS = ROOT / "docs"


def test_api_reference_is_generated_from_the_code() -> None:
    spec = importlib.util.spec_from_file_location("reference", ROOT / "scripts" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "api.md").read_text() == module.reference(), (
        "docs/api.md is out of date: run python scripts/reference.py")


def key_rows() -> dict[str, str]:
    """{key: its default cell} of the keys table."""
    text = (DOCS / "experiment-files.md").read_text()
    table = text[text.index("## Keys and defaults"):]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for key in re.findall(r"`([^`]+)`", cells[0]):
            rows[key] = cells[1]
    return rows


def written(default: Any) -> str:
    """How the table writes a default."""
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, float) and default == int(default):
        default = int(default)
    return f"`{default}`"


def test_every_key_is_documented_with_the_codes_default() -> None:
    from inrlab.experiment.build import STRUCTURAL_KEYS
    from inrlab.train import TRAINERS
    from inrlab.train.settings import TrainSettings

    rows = key_rows()
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    for trainer in TRAINERS.values():
        fields.update({f.name: f for f in dataclasses.fields(trainer.options_class)})
    prose = {"globals", "matrix", "$extends", "description"}  # the format's own sections
    assert set(rows) == set(fields) | (set(STRUCTURAL_KEYS) - prose)
    for name, field in fields.items():
        cell = rows[name]
        if field.default is dataclasses.MISSING:
            assert cell == "required", name
        elif field.default is None:
            assert cell.startswith(("none", "`")), f"{name}: {cell}"  # none, or another key
        else:
            given = re.match(r"`([^`]*)`", cell)
            assert given, f"{name}: {cell}"
            if isinstance(field.default, (int, float)) and not isinstance(field.default, bool):
                assert float(given[1]) == field.default, f"{name}: {cell}"
            else:
                assert f"`{given[1]}`" == written(field.default), f"{name}: {cell}"


def subcommand_flags() -> dict[str, set[str]]:
    from inrlab.cli import make_parser

    parser = make_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {s for action in sub._actions for s in action.option_strings
                   if s.startswith("--") and s != "--help"}
            for name, sub in commands.choices.items()}


def test_the_commands_page_names_every_flag_and_no_other() -> None:
    text = (DOCS / "commands.md").read_text()
    flags = subcommand_flags()
    for command, names in flags.items():
        assert f"`inrlab {command}" in text, command
        missing = sorted(flag for flag in names if flag not in text)
        assert not missing, f"inrlab {command}: {missing}"
    every = set().union(*flags.values()) | {"--debug", "--help"}
    ours = "\n".join(line for line in text.splitlines() if "ray start" not in line)
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", ours))
    assert named <= every, sorted(named - every)


def test_the_keys_a_rerun_may_change_are_the_codes() -> None:
    from inrlab.experiment.runner import RESUMABLE_KEYS
    from inrlab.experiment.spec import RUN_META_KEY

    text = (DOCS / "commands.md").read_text()
    listed = text[text.index("Keys that may change"):text.index("the model is compared by")]
    assert set(re.findall(r"`(\w+)`", listed)) == RESUMABLE_KEYS - {RUN_META_KEY}


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in DOCS.glob("*.md"))])
def test_links_between_pages_resolve(page: str) -> None:
    path = ROOT / page if page == "README.md" else DOCS / page
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{page} links to a missing {target}"


def test_the_readme_is_a_manual() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    for how_to in ("Run and resume a matrix", "Compare runs", "Render", "Evaluate",
                   "Export and share a model", "Sweep on a cluster", "from Python"):
        assert re.search(rf"^### .*{how_to}", text, re.MULTILINE | re.IGNORECASE), how_to
