"""Reading experiment files: YAML with line numbers, ``${var}`` text substitution,
``$extends`` (inherit another file) and ``!include`` (embed another file's content).

The loader is PyYAML's ``SafeLoader`` (YAML 1.1) with two additions: ``!include PATH``
(relative to the including file) and floats written without a dot (``1e-3`` is a float here,
where plain YAML 1.1 reads it as a string). The raw pass that reads the ``matrix`` keeps plain
YAML 1.1 (``1e-3`` stays the text ``1e-3``), as the seed system did: slugs, run directory
names and ``${...}`` substitutions then match it; the substituted ``learnrate: 1e-3`` is read
as a float in the second pass.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inrlab.errors import InrlabError

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_FLOAT_WITHOUT_DOT = re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$")


class _RawLoader(yaml.SafeLoader):
    """SafeLoader plus ``!include``: the seed system's YAML, used for the raw (matrix) pass.

    Per-load context (directory, variables, include stack) lives on the loader *instance*.
    """

    inrlab_dir: Path
    inrlab_variables: dict[str, Any] | None
    inrlab_stack: tuple[Path, ...]
    inrlab_repeats: list[tuple[str, int, int]]  # (key, first line, repeated line)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # YAML loaders keep the last of repeated keys silently (the seed system's did too);
        # note them, so that a key written twice by mistake does not go unseen.
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                line = key_node.start_mark.line + 1
                if key_node.value in first:
                    self.inrlab_repeats.append((key_node.value, first[key_node.value], line))
                first.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


class _Loader(_RawLoader):
    """The raw loader plus dot-less exponent floats (``1e-3``), for the substituted pass."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_WITHOUT_DOT, list("-+0123456789."))


def _construct_include(loader: _RawLoader, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise InrlabError(
            "!include takes a file path, e.g. '!include parts/model.yml'",
            line=node.start_mark.line + 1,
        )
    target = (loader.inrlab_dir / str(loader.construct_scalar(node))).resolve()
    if not target.is_file():
        raise InrlabError(f"!include: the file to include does not exist: {target}",
                          line=node.start_mark.line + 1)
    if target in loader.inrlab_stack:
        raise InrlabError(f"!include loops back to {target}", line=node.start_mark.line + 1)
    doc = load_document(target, loader.inrlab_variables, _stack=loader.inrlab_stack)
    return doc.values


_RawLoader.add_constructor("!include", _construct_include)


@dataclass(frozen=True)
class Origin:
    """Where a top-level key was written: file, the key's line and the value's first line."""

    path: Path
    key_line: int
    value_line: int
    block: bool  # a `|` or `>` block scalar: its text starts on the line after `value_line`

    @property
    def code_line(self) -> int:
        """File line of the first line of the value's text (for snippet line numbers)."""
        return self.value_line + 1 if self.block else self.value_line


@dataclass
class Document:
    """A parsed experiment file: top-level values plus where each key was written."""

    path: Path
    values: dict[str, Any]
    origins: dict[str, Origin] = field(default_factory=dict)

    def where(self, key: str) -> dict[str, Any]:
        """Keyword arguments for ``InrlabError`` that point at ``key``."""
        origin = self.origins.get(key)
        if origin is None:
            return {"path": self.path, "key": key}
        return {"path": origin.path, "line": origin.key_line, "key": key}

    def error(self, key: str, message: str) -> InrlabError:
        return InrlabError(message, **self.where(key))


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InrlabError("experiment file not found", path=path) from None
    except IsADirectoryError:
        hint = (" (a run directory: `inrlab report` and `inrlab render` take those)"
                if (path / "result.json").is_file() else "")
        raise InrlabError(f"this is a directory, not an experiment file{hint}",
                          path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InrlabError(f"cannot read the experiment file: {e}", path=path) from None


def _key_at_line(text: str, line: int) -> str | None:
    """The top-level key whose value spans ``line`` (1-based), for error messages."""
    for candidate in reversed(text.splitlines()[:line]):
        match = re.match(r"^([^\s#:][^:]*):(\s|$)", candidate)
        if match:
            return match.group(1).strip().strip("'\"")
    return None


def substitute(text: str, variables: dict[str, Any], path: Path) -> str:
    """Replace every ``${name}`` in the file text with ``str(variables[name])``.

    Substitution is textual (as in the seed system), so YAML re-types the result:
    ``learnrate: ${lr}`` becomes a float. An undefined name is an error.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if name not in variables:
            line = text.count("\n", 0, match.start()) + 1
            known = ", ".join(sorted(variables)) or "none"
            raise InrlabError(
                f"variable ${{{name}}} is not defined (defined variables: {known})",
                path=path,
                line=line,
                key=_key_at_line(text, line),
            )
        return str(variables[name])

    return PLACEHOLDER.sub(replace, text)


MAX_EXPANDED_NODES = 1_000_000  # values a document may hold once its aliases are expanded


def check_expanded_size(root: yaml.Node, path: Path) -> None:
    """Bad input when the document holds more than ``MAX_EXPANDED_NODES`` values with its
    aliases (``*name``) expanded, as copying, substituting or dumping it would: a few lines
    of nested aliases (a "billion laughs") expand to billions. Counted on the node graph,
    where an alias is the same node again, once per distinct node."""
    def children(node: yaml.Node) -> list[yaml.Node]:
        if isinstance(node, yaml.SequenceNode):
            return node.value
        if isinstance(node, yaml.MappingNode):
            return [item for pair in node.value for item in pair]
        return []

    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # post-order: a node is summed once all its children are
        node, children_done = stack.pop()
        if children_done:
            # A child still in progress (-1) is an ancestor: a recursive alias, endless.
            total = 1 + sum(sizes[id(child)] if sizes[id(child)] >= 0
                            else MAX_EXPANDED_NODES + 1 for child in children(node))
            sizes[id(node)] = min(total, MAX_EXPANDED_NODES + 1)
            continue
        if id(node) in sizes:
            continue
        sizes[id(node)] = -1  # in progress
        stack.append((node, True))
        stack.extend((child, False) for child in children(node) if id(child) not in sizes)
    if sizes[id(root)] > MAX_EXPANDED_NODES:
        raise InrlabError(f"the file holds over {MAX_EXPANDED_NODES:,} values once its YAML "
                          "aliases (*name) are expanded; nested aliases multiply (a 'billion "
                          "laughs'): write the values out or use fewer levels", path=path,
                          line=root.start_mark.line + 1)


def parse_yaml(text: str, path: Path, variables: dict[str, Any] | None = None,
               _stack: tuple[Path, ...] = ()) -> tuple[Any, dict[str, Origin]]:
    """Parse YAML text; return the data and, for a top-level mapping, each key's origin.

    ``variables=None`` (the raw pass) parses plain YAML 1.1, else ``1e-3`` is a float too.
    """
    try:  # the reader checks every character first: control characters fail here
        loader = (_RawLoader if variables is None else _Loader)(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise InrlabError(f"invalid YAML: the character with code {e.character} (a "
                          "control character such as ESC or NUL) is not allowed in a YAML file",
                          path=path, line=line) from None
    loader.inrlab_dir = path.parent
    loader.inrlab_variables = variables
    loader.inrlab_stack = (*_stack, path.resolve())
    loader.inrlab_repeats = []
    try:
        node = loader.get_single_node()
        if node is not None:
            check_expanded_size(node, path)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "syntax error"
        raise InrlabError(
            f"invalid YAML: {problem}", path=path, line=mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as e:
        raise InrlabError(f"invalid YAML: {e}", path=path) from None
    except InrlabError as e:
        raise e.located(path=path) from None
    finally:
        loader.dispose()
    if variables is None:  # the raw pass reads every file once; the entries' passes repeat it
        for key, first, line in loader.inrlab_repeats:
            print(f"warning: {path}, line {line}, key '{key}': also set at line {first}; the "
                  "later value counts", file=sys.stderr)
    origins: dict[str, Origin] = {}
    if isinstance(node, yaml.MappingNode):
        _record_origins(node, path, "", origins, depth=2)
    return data, origins


def _record_origins(node: yaml.MappingNode, path: Path, prefix: str,
                    origins: dict[str, Origin], depth: int) -> None:
    # Top-level keys as "key", second-level ones (e.g. globals) as "key.sub".
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        name = prefix + str(key_node.value)
        origins[name] = Origin(
            path=path,
            key_line=key_node.start_mark.line + 1,
            value_line=value_node.start_mark.line + 1,
            block=getattr(value_node, "style", None) in ("|", ">"),
        )
        if depth > 1 and isinstance(value_node, yaml.MappingNode):
            _record_origins(value_node, path, name + ".", origins, depth - 1)


def load_document(
    path: Path, variables: dict[str, Any] | None, *, _stack: tuple[Path, ...] = ()
) -> Document:
    """Load one experiment file with ``${var}`` substituted from ``variables``.

    ``variables=None`` is the *raw* pass used to read the ``matrix``: placeholders are kept
    as they are (they may even stand inside flow collections such as ``[${a}, ${b}]``).
    ``$extends`` is resolved here: the parent (relative to this file) is loaded with the
    same variables and this file's keys replace the parent's (shallow merge).
    """
    path = Path(path)
    text = read_text(path)
    if variables is None:
        data, origins = _parse_raw(text, path, _stack)
    else:
        data, origins = parse_yaml(substitute(text, variables, path), path, variables, _stack)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InrlabError(
            f"an experiment file must be a YAML mapping of keys to values, "
            f"not a {type(data).__name__}",
            path=path,
            line=1,
        )
    doc = Document(path=path, values=data, origins=origins)
    if "$extends" in data:
        doc = _extend(doc, variables, _stack)
    return doc


def _parse_raw(text: str, path: Path, stack: tuple[Path, ...]) -> tuple[Any, dict[str, Origin]]:
    # Placeholders become plain tokens so that the raw text parses wherever a substituted
    # one would; strings in the result get their placeholders back.
    originals: list[str] = []

    def tokenize(match: re.Match[str]) -> str:
        originals.append(match.group(0))
        return f"INRLABVAR{len(originals) - 1}X"

    data, origins = parse_yaml(PLACEHOLDER.sub(tokenize, text), path, None, stack)
    token = re.compile(r"INRLABVAR(\d+)X")

    def restore(value: Any) -> Any:
        if isinstance(value, str):
            return token.sub(lambda m: originals[int(m.group(1))], value)
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, dict):
            return {restore(k): restore(v) for k, v in value.items()}
        return value

    return (restore(data) if originals else data), origins


def _extend(doc: Document, variables: dict[str, Any] | None, stack: tuple[Path, ...]) -> Document:
    target = doc.values["$extends"]
    if not isinstance(target, str) or not target:
        raise doc.error("$extends", "$extends takes the path of another experiment file")
    parent_path = (doc.path.parent / target).resolve()
    if parent_path in stack or parent_path == doc.path.resolve():
        raise doc.error("$extends", f"$extends loops back to {parent_path}")
    if not parent_path.is_file():
        raise doc.error("$extends", f"the file to extend does not exist: {parent_path}")
    parent = load_document(parent_path, variables, _stack=(*stack, doc.path.resolve()))
    values = {**parent.values, **{k: v for k, v in doc.values.items() if k != "$extends"}}
    origins = {**parent.origins, **doc.origins}
    return Document(path=doc.path, values=values, origins=origins)
