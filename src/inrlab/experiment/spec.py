"""From an experiment file to one ``RunSpec`` per matrix entry.

Pipeline: a raw parse reads the ``matrix``; the product is expanded and ``$filter``ed;
then for every entry the file text is substituted with the entry's values and parsed
again (``$extends``/``!include`` resolved with the same values).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inrlab.errors import InrlabError
from inrlab.experiment.files import Document, load_document, substitute
from inrlab.experiment.matrix import MatrixEntry, expand_matrix
from inrlab.experiment.namespace import snippet_namespace
from inrlab.experiment.snippets import evaluate
from inrlab.train.rundir import check_experiment_name


@dataclass
class RunSpec:
    """One matrix entry of an experiment file, its text substituted and parsed."""

    path: Path
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


def entry_variables(entry: MatrixEntry) -> dict[str, Any]:
    """``${...}`` names: the matrix values, ``matrix_slug``, ``matrix_id`` and ``PATH`` (the
    working directory, where the seed system had its project root)."""
    return {**entry.variables, "PATH": os.getcwd()}


def load_experiment(path: str | Path) -> list[RunSpec]:
    path = Path(path)
    raw = load_document(path, None)

    def keep(expression: str, entry: MatrixEntry) -> bool:
        origin = raw.origins.get("matrix.$filter") or raw.origins.get("matrix")
        text = substitute(expression, entry_variables(entry), path)
        line = origin.code_line if origin else 1
        return bool(evaluate(text, snippet_namespace(), path=path, first_line=line,
                             key="$filter"))

    entries = expand_matrix(raw.values.get("matrix"), error=raw.error, keep=keep)
    specs: list[RunSpec] = []
    seen: dict[str, str] = {}
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
        if name in seen:
            raise document.error(
                "experiment_name",
                f"matrix entries {seen[name]} and {entry.id} both get experiment_name "
                f"'{name}'; include ${{matrix_slug}} or ${{matrix_id}} in it",
            )
        seen[name] = entry.id
        specs.append(RunSpec(path=path, entry=entry, document=document, experiment_name=name))
    return specs


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
