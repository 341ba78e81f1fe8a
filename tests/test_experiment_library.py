"""Every experiment file in experiments/ builds; the logs' parameter counts come out; the
shipped files outside logs/ are models as data (``{name, args}`` specs, at most two
``$extends`` levels) and experiments/README.md names every one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import ROOT, RLTILES

FILES = sorted(p for p in (ROOT / "experiments").rglob("*.yml") if "base" not in p.parts)

LOG_COUNTS = {
    "ae-manifold-300tiles.yml": (1_725_264, 42_497),
    "ae-manifold-concat-residual.yml": (1_725_264, 3_502_785),
    "rpg-resnet.yml": (11_741_838, 293_891),
}


SHIPPED = [p for p in FILES if "logs" not in p.parts]


def extends_depth(path: Path) -> int:
    """How many ``$extends`` levels lie above ``path`` (0 for a file extending nothing)."""
    parent = re.search(r"^\$extends:\s*(\S+)", path.read_text(), re.MULTILINE)
    return 0 if parent is None else 1 + extends_depth((path.parent / parent[1]).resolve())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_files_are_models_as_data(path: Path) -> None:
    from inrlab.experiment import load_experiment

    for spec in load_experiment(path):
        assert isinstance(spec.values["model"], dict), f"{spec.experiment_name}: a snippet"
    assert extends_depth(path) <= 2


def test_the_index_names_every_file() -> None:
    text = (ROOT / "experiments" / "README.md").read_text()
    index = text[text.index("## Index"):]
    index = index[:index.index("\n## ", 1)]
    rows = re.findall(r"^\| `([^`]+\.yml)` \|(.+)$", index, re.MULTILINE)
    named = [name for name, _ in rows]
    every = sorted(str(p.relative_to(ROOT / "experiments"))
                   for p in (ROOT / "experiments").rglob("*.yml"))
    assert sorted(named) == every
    for name, rest in rows:  # the figure and the command of every runnable file
        question, figure, command = [cell.strip() for cell in rest.split("|")[:3]]
        if "/base/" not in f"/{name}":
            assert question and figure and "inrlab" in command or "as " in command, name


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_experiment_file_builds(path: Path, cli) -> None:
    code, out, err = cli("show", path, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows and all(r["parameters"]["total"] > 0 for r in rows)
    if path.name in LOG_COUNTS:
        encoder, decoder = LOG_COUNTS[path.name]
        assert {(r["parameters"]["encoder"], r["parameters"]["decoder"]) for r in rows} == {
            (encoder, decoder)}


def test_decoder_size_comparison_counts() -> None:
    from inrlab.experiment import build_entry, load_experiment
    from inrlab.models import count_parameters

    specs = load_experiment(ROOT / "experiments" / "logs" / "ae-manifold-decoder-sizes.yml")
    counts = [count_parameters(build_entry(s, with_data=False).model.decoder) for s in specs]
    assert counts == [283_649, 547_841, 285_697, 549_889]


@pytest.mark.skipif(not RLTILES.is_file(), reason="RLTiles sheet not available")
def test_tiles_and_fractals_mixture_trains(cli, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the default tile config finds ../shared from the project root
    path = ROOT / "experiments" / "logs" / "ae-manifold-fullds.yml"
    code, _, err = cli("run", path, "--only", "1", "--max-inputs", "128", "--no-tensorboard")
    assert code == 0, err
