"""User-facing errors: one paragraph naming file, line and key; the CLI exits with status 2."""

from __future__ import annotations

from pathlib import Path


class InrlabError(Exception):
    """An error caused by the user's input (experiment file, data, arguments).

    The CLI prints it as one paragraph without a traceback (unless ``--debug``) and exits
    with status 2. ``path``, ``line`` (1-based) and ``key`` say where the problem is.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.key = key

    def located(
        self, *, path: str | Path | None = None, line: int | None = None, key: str | None = None
    ) -> "InrlabError":
        """Fill in location fields that are still unknown (inner code knows less)."""
        if self.path is None and path is not None:
            self.path = str(path)
        if self.line is None and line is not None:
            self.line = line
        if self.key is None and key is not None:
            self.key = key
        return self

    def __str__(self) -> str:
        where = ""
        if self.path:
            where = self.path + (f", line {self.line}" if self.line else "")
        if self.key:
            where = f"{where}, key '{self.key}'" if where else f"key '{self.key}'"
        text = " ".join(self.message.split()) if "\n" not in self.message else self.message
        return f"{where}: {text}" if where else text


class DataError(InrlabError):
    """A dataset could not be read or built (missing file, corrupt image, empty after filtering)."""
