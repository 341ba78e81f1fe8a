"""Parameter matrices: the Cartesian product of a ``matrix`` mapping, ``$filter``, slugs and ids.

Order: the first key varies slowest, the last fastest (like nested for-loops). Every
entry gets ``matrix_slug`` (``key:value`` pairs joined by ``_``, each value ``str(v)[:96]``,
only letters, digits and ``.,-_:`` kept) and ``matrix_id`` (1-based position in the
*unfiltered* product, zero-padded to ``ceil(log10(N))`` digits; ``$filter`` never renumbers).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable

from inrlab.errors import InrlabError

RESERVED_KEYS = ("matrix_slug", "matrix_id")
FILTER_KEY = "$filter"
SLUG_VALUE_LENGTH = 96


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
    names: list[str] = []
    for name, values in matrix.items():
        if name == FILTER_KEY:
            continue
        if name in RESERVED_KEYS:
            raise error("matrix", f"'{name}' is reserved and cannot be a matrix key")
        if not isinstance(name, str) or not name.isidentifier():
            raise error("matrix", f"matrix key {name!r} must be a name (letters, digits, _)")
        if not isinstance(values, list) or not values:
            raise error(
                "matrix",
                f"matrix value of '{name}' must be a non-empty list, got {values!r} "
                f"(write '{name}: [{values!r}]' for a single value)",
            )
        names.append(name)
    if not names:
        return [MatrixEntry(params={}, slug="", id="1")]

    combinations = list(itertools.product(*(matrix[name] for name in names)))
    entries = []
    for index, values in enumerate(combinations, start=1):
        params = dict(zip(names, values))
        entry = MatrixEntry(params=params, slug=matrix_slug(params),
                            id=matrix_id(index, len(combinations)))
        if expression is None or keep is None or keep(str(expression), entry):
            entries.append(entry)
    return entries
