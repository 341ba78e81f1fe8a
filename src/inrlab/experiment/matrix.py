"""Parameter matrices: the Cartesian product of a ``matrix`` mapping, ``$filter``, slugs and ids.

Order: the first key varies slowest, the last fastest (like nested for-loops). Every
entry gets ``matrix_slug`` (``key:value`` pairs joined by ``_``, each value ``str(v)[:96]``,
only letters, digits and ``.,-_:`` kept) and ``matrix_id`` (1-based position in the
*unfiltered* product, zero-padded to ``ceil(log10(N))`` digits; ``$filter`` never renumbers).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Any, Callable

from inrlab.errors import InrlabError

RESERVED_KEYS = ("matrix_slug", "matrix_id")
FILTER_KEY = "$filter"
SLUG_VALUE_LENGTH = 96
MAX_ENTRIES = 100_000  # default bound on a matrix's product; $INRLAB_MAX_MATRIX_ENTRIES raises it


def max_entries() -> int:
    """The largest product a matrix may have: ``$INRLAB_MAX_MATRIX_ENTRIES``, else 100,000."""
    try:
        return int(os.environ.get("INRLAB_MAX_MATRIX_ENTRIES", MAX_ENTRIES))
    except ValueError:
        raise InrlabError("INRLAB_MAX_MATRIX_ENTRIES must be a whole number, got "
                          f"{os.environ['INRLAB_MAX_MATRIX_ENTRIES']!r}") from None


@dataclass(frozen=True)
class MatrixEntry:
    """One combination of matrix values."""

    params: dict[str, Any]
    slug: str
    id: str

    @property
    def variables(self) -> dict[str, Any]:
        """Names available to ``${...}``: the matrix keys plus ``matrix_slug``/``matrix_id``."""
        return {**self.params, "matrix_slug": self.slug, "matrix_id": self.id}


def matrix_slug(params: dict[str, Any]) -> str:
    text = "_".join(f"{key}:{str(value)[:SLUG_VALUE_LENGTH]}" for key, value in params.items())
    return "".join(c for c in text if c.isalnum() or c in ".,-_:")


def matrix_id(index: int, count: int) -> str:
    """``index`` is 1-based; the width is ``ceil(log10(count))`` as in the seed system."""
    width = math.ceil(math.log10(count)) if count > 1 else 0
    return format(index, f"0{width}") if width else str(index)


def expand_matrix(
    matrix: Any,
    *,
    error: Callable[[str, str], InrlabError],
    keep: Callable[[str, MatrixEntry], bool] | None = None,
) -> list[MatrixEntry]:
    """All entries of ``matrix`` in order, ``$filter`` applied through ``keep``.

    ``error(key, message)`` builds a located error; ``keep(expression, entry)`` evaluates
    a ``$filter`` expression for one entry (``${...}`` not yet substituted).
    """
    if matrix is None or matrix == {}:
        return [MatrixEntry(params={}, slug="", id="1")]
    if not isinstance(matrix, dict):
        raise error("matrix", "matrix must be a mapping of parameter names to lists of values")
    expression = matrix.get(FILTER_KEY)
    if expression is not None and not isinstance(expression, (str, bool)):
        raise error("matrix", "$filter must be a Python expression written as a string")
    # Any key is a parameter (the seed system took them as written: ``learn-rate`` is
    # reached as ``${learn-rate}``); keys YAML reads as numbers or booleans count as text.
    columns: dict[str, list[Any]] = {}
    for key, values in matrix.items():
        if key == FILTER_KEY:
            continue
        name = str(key)
        if name in RESERVED_KEYS:
            raise error("matrix", f"'{name}' is reserved and cannot be a matrix key")
        if not name.strip() or "}" in name or name in columns:
            raise error("matrix", f"matrix key {key!r} cannot be used as a ${{name}}")
        if not isinstance(values, list) or not values:
            raise error(
                "matrix",
                f"matrix value of '{name}' must be a non-empty list, got {values!r} "
                f"(write '{name}: [{values!r}]' for a single value)",
            )
        columns[name] = values
    if not columns:
        return [MatrixEntry(params={}, slug="", id="1")]

    names = list(columns)
    count, limit = math.prod(len(values) for values in columns.values()), max_entries()
    if count > limit:  # counted before any entry is built
        raise error("matrix", f"the matrix has {count:,} entries (the product of its lists' "
                    f"lengths), over the limit of {limit:,}; shorten its lists, or "
                    "raise the limit with the environment variable INRLAB_MAX_MATRIX_ENTRIES")
    combinations = list(itertools.product(*columns.values()))
    entries = []
    for index, values in enumerate(combinations, start=1):
        params = dict(zip(names, values))
        entry = MatrixEntry(params=params, slug=matrix_slug(params),
                            id=matrix_id(index, len(combinations)))
        if expression is None or keep is None or keep(str(expression), entry):
            entries.append(entry)
    return entries
