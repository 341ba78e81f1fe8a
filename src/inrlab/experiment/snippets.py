"""Python snippets in experiment files: run the statements, return the last expression.

Snippets are trusted code (like a Python script), run in one explicit namespace dict that
serves as both globals and locals, so functions and lambdas defined in a snippet can use
names assigned earlier in the same snippet. Line numbers in errors are the file's lines.
"""

from __future__ import annotations

import ast
import linecache
import sys
import traceback
from pathlib import Path
from typing import Any

from inrlab.errors import InrlabError


def evaluate(
    code: Any,
    namespace: dict[str, Any],
    *,
    path: Path,
    first_line: int = 1,
    key: str | None = None,
) -> Any:
    """Evaluate a snippet; non-strings are returned unchanged.

    ``first_line`` is the file line of the snippet's first line; ``namespace`` is used
    (and extended) as is, so callers pass a copy when assignments must not leak.
    """
    if not isinstance(code, str):
        return code
    filename = f"{path}"
    try:
        tree = ast.parse(code, filename=filename, mode="exec")
    except SyntaxError as e:
        line = first_line + (e.lineno or 1) - 1
        raise InrlabError(f"Python syntax error in snippet: {e.msg}", path=path, line=line,
                          key=key) from None
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        raise InrlabError(
            "the last line of a snippet must be an expression that gives the value "
            "(e.g. the model's constructor call)",
            path=path,
            line=first_line + (tree.body[-1].lineno - 1 if tree.body else 0),
            key=key,
        )
    ast.increment_lineno(tree, first_line - 1)
    statements = ast.Module(body=tree.body[:-1], type_ignores=[])
    expression = ast.Expression(body=tree.body[-1].value)  # type: ignore[attr-defined]
    # Register the text so tracebacks can show the failing line.
    padded = "\n" * (first_line - 1) + code
    linecache.cache[filename] = (len(padded), None, padded.splitlines(True), filename)
    try:
        exec(compile(statements, filename, "exec"), namespace)
        return eval(compile(expression, filename, "eval"), namespace)
    except InrlabError as e:
        line = _snippet_line(filename, first_line)
        if e.path is not None and e.path != str(path):
            # An error about another file (a data file, say): keep its own location in the
            # message and point at the snippet that read it.
            raise InrlabError(str(e), path=path, line=line, key=key) from e
        raise e.located(path=path, line=line, key=key)
    except Exception as e:  # noqa: BLE001 - any snippet error becomes a located user error
        line = _snippet_line(filename, first_line)
        lines = code.splitlines()
        offset = line - first_line
        source = lines[offset].strip() if 0 <= offset < len(lines) else ""
        shown = f" (in `{source}`)" if source else ""
        raise InrlabError(
            f"the snippet raised {type(e).__name__}: {e}{shown}", path=path, line=line, key=key
        ) from e
    finally:
        linecache.cache.pop(filename, None)


def _snippet_line(filename: str, default: int) -> int:
    """The deepest traceback line that lies in the snippet (the one the user wrote)."""
    frames = traceback.extract_tb(sys.exc_info()[2])
    lines = [f.lineno for f in frames if f.filename == filename and f.lineno]
    return lines[-1] if lines else default
