"""From an experiment file to one ``RunSpec`` per matrix entry.

Pipeline: a raw parse reads the ``matrix``; the product is expanded and ``$filter``ed;
then for every entry the file text is substituted with the entry's values and parsed
again (``$extends``/``!include`` resolved with the same values).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from inrlab.errors import InrlabError
from inrlab.experiment.files import Document, load_document, substitute
from inrlab.experiment.matrix import MatrixEntry, expand_matrix
from inrlab.experiment.namespace import snippet_namespace
from inrlab.experiment.snippets import evaluate
from inrlab.storage.rundir import check_experiment_name


@dataclass
class RunSpec:
    """One matrix entry of an experiment file, its text substituted and parsed; or values
    given in Python (``python_spec``: no file, ``path`` None)."""

    path: Path | None
    entry: MatrixEntry
    document: Document
    experiment_name: str

    @property
    def values(self) -> dict[str, Any]:
        return self.document.values

    def error(self, key: str, message: str) -> InrlabError:
        return self.document.error(key, message)

    def where(self, key: str) -> dict[str, Any]:
        return self.document.where(key)


def python_spec(values: dict[str, Any]) -> RunSpec:
    """The spec of a run whose values come from Python (``inrlab.fit``): ``model`` and the
    datasets may be objects; errors name the key."""
    name = check_experiment_name(values.get("experiment_name"))
    return RunSpec(path=None, entry=MatrixEntry(params={}, slug="", id="1"),
                   document=Document(path=None, values=dict(values)),  # type: ignore[arg-type]
                   experiment_name=name)


def entry_variables(entry: MatrixEntry) -> dict[str, Any]:
    """``${...}`` names: the matrix values, ``matrix_slug``, ``matrix_id`` and ``PATH`` (the
    working directory, where the seed system had its project root)."""
    return {**entry.variables, "PATH": os.getcwd()}


def load_experiment(path: str | Path) -> list[RunSpec]:
    path = Path(path)
    raw = load_document(path, None)

    def keep(expression: str, entry: MatrixEntry) -> bool:
        origin = raw.origins.get("matrix.$filter") or raw.origins.get("matrix")
        # One expression, possibly written over several lines (as the seed system read it).
        text = substitute(expression, entry_variables(entry), path).replace("\n", " ")
        line = origin.code_line if origin else 1
        return bool(evaluate(text, snippet_namespace(), path=path, first_line=line,
                             key="$filter"))

    entries = expand_matrix(raw.values.get("matrix"), error=raw.error, keep=keep)
    specs: list[RunSpec] = []
    for entry in entries:
        document = load_document(path, entry_variables(entry))
        document.values.pop("matrix", None)
        name = document.values.get("experiment_name")
        if name in (None, ""):
            raise document.error("experiment_name", "the required key 'experiment_name' is "
                                 "missing")
        try:
            name = check_experiment_name(name)
        except InrlabError as e:
            raise e.located(**document.where("experiment_name")) from None
        specs.append(RunSpec(path=path, entry=entry, document=document, experiment_name=name))
    return specs


def _matches(spec: RunSpec, pattern: str) -> bool:
    """A glob on the ``matrix_id``, ``matrix_slug`` or ``experiment_name``; a number also
    matches the id it names with or without its zero padding (``1`` is ``001``)."""
    if pattern.isdigit() and spec.entry.id.isdigit() and int(pattern) == int(spec.entry.id):
        return True
    return any(fnmatch.fnmatchcase(value, pattern)
               for value in (spec.entry.id, spec.entry.slug, spec.experiment_name))


def select_entries(specs: list[RunSpec], patterns: Sequence[str] | None,
                   path: str | Path | None = None) -> list[RunSpec]:
    """The entries that match one of the ``patterns`` (``_matches``; all entries when there
    are none). A pattern that matches no entry is bad input naming the closest ids and
    slugs."""
    if not patterns:
        return specs
    for pattern in patterns:
        if not any(_matches(spec, pattern) for spec in specs):
            names = [v for s in specs for v in (s.entry.id, s.entry.slug) if v]
            close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.4)
            ids = [s.entry.id for s in specs]
            hint = (f"the closest are {', '.join(close)}" if close else
                    f"ids run from {ids[0]} to {ids[-1]}" if len(ids) > 1 else
                    f"its one entry is {ids[0]}")
            raise InrlabError(f"--only {pattern} matches no matrix entry of {len(specs)} "
                              f"({hint}; 'inrlab show FILE' lists them)", path=path,
                              key="--only")
    return [s for s in specs if any(_matches(s, pattern) for pattern in patterns)]


def entries_to_run(path: str | Path, only: Sequence[str] | None = None) -> list[RunSpec]:
    """The entries ``inrlab run FILE [--only ...]`` trains; an error when there are none
    (a ``$filter`` that keeps no entry, ``--only`` patterns that match none) or when two
    would share one run directory."""
    specs = load_experiment(path)
    if not specs:
        raw = load_document(Path(path), None)
        where = raw.where("matrix.$filter" if "matrix.$filter" in raw.origins else "matrix")
        raise InrlabError("the $filter keeps none of the matrix entries: nothing to run",
                          **{**where, "key": "$filter"})
    selected = select_entries(specs, only, path)
    shared = shared_name_error(selected)
    if shared is not None:
        raise shared
    return selected


def shared_name_error(specs: list[RunSpec]) -> InrlabError | None:
    """The error for two entries that would share one run directory, or None.

    Listing such a file works (``inrlab show``, as in the seed system, where slugs of values
    that differ only in dropped characters coincide); training it would mix two runs.
    """
    seen: dict[str, str] = {}
    for spec in specs:
        if spec.experiment_name in seen:
            return spec.error(
                "experiment_name",
                f"matrix entries {seen[spec.experiment_name]} and {spec.entry.id} both get "
                f"experiment_name '{spec.experiment_name}' (one run directory); include "
                "${matrix_id} in it, or ${matrix_slug} when the values differ in letters "
                "or digits",
            )
        seen[spec.experiment_name] = spec.entry.id
    return None


RUN_META_KEY = "inrlab"  # the block config.yaml adds: source file and matrix entry


def load_run_spec(run_path: str | Path) -> RunSpec:
    """The ``RunSpec`` a run directory was trained from, read back from its ``config.yaml``
    (the entry's resolved values), so a run can be rebuilt without its experiment file."""
    config = Path(run_path) / "config.yaml"
    if not config.is_file():
        raise InrlabError(f"no config.yaml in {run_path}: not an inrlab run directory",
                          path=Path(run_path))
    document = load_document(config, {})
    meta = document.values.pop(RUN_META_KEY, None) or {}
    entry = MatrixEntry(params=dict(meta.get("matrix_entry") or {}),
                        slug=str(meta.get("matrix_slug") or ""),
                        id=str(meta.get("matrix_id") or "1"))
    name = check_experiment_name(document.values.get("experiment_name"))
    return RunSpec(path=config, entry=entry, document=document, experiment_name=name)
