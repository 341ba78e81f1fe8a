"""Write docs/api.md from the code: every registered model and decoder part, the data
helpers, the trainers and the Python API, each with its signature (every default) and
docstring. tests/test_docs.py fails when the file differs from what this prints, so the
reference cannot drift from the code.

    python scripts/reference.py            # rewrite docs/api.md
    python scripts/reference.py --check    # exit 1 when docs/api.md is out of date
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "api.md"

HEADER = """# API reference

Generated from the code by `python scripts/reference.py` (do not edit; `tests/test_docs.py`
checks it is current). Signatures show every default. A model or part is given in an
experiment file as `{name: CLASS, args: {...}}`; arguments a parent fills in (a decoder's
code channels, grid, output channels and size, from its encoder) may be left out.
"""

DATA = ("rpg_tile_dataset", "kali_patch_dataset", "sprite_dataset", "mnist_dataset",
        "image_folder_dataset", "ImageTensorDataset", "TransformDataset", "InterleaveDataset",
        "LimitDataset", "first_images")
API = ("run", "fit", "load_run", "load_model")


def signature(obj: Callable[..., Any], name: str) -> str:
    """``name(a, b=1, *, c=None)``: the parameters and defaults, without annotations."""
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return f"`{name}(...)`"
    parts, starred = [], False
    for p in parameters:
        if p.kind is p.VAR_POSITIONAL:
            parts.append(f"*{p.name}")
            starred = True
            continue
        if p.kind is p.VAR_KEYWORD:
            parts.append(f"**{p.name}")
            continue
        if p.kind is p.KEYWORD_ONLY and not starred:
            parts.append("*")
            starred = True
        parts.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
    return f"`{name}({', '.join(parts)})`"


def docstring(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else "(no docstring)"


def entry(obj: Any, name: str, note: str = "") -> list[str]:
    head = f"### {name}" + (f" ({note})" if note else "")
    return [head, "", signature(obj, name), "", docstring(obj), ""]


def registry_section(title: str, registry: Any, kinds: tuple[str, ...]) -> list[str]:
    lines = [f"## {title}", ""]
    for kind in kinds:
        for name in registry.names(kind):
            lines += entry(registry.get(name).cls, name, kind)
    return lines


def trainer_section() -> list[str]:
    from inrlab.train import TRAINERS

    lines = ["## Trainers", "",
             "The `trainer` key names one; its own keys (options) follow the settings.", ""]
    for name, cls in TRAINERS.items():
        lines += [f"### {name}", "", docstring(cls), ""]
        options = dataclasses.fields(cls.options_class)
        if options:
            lines += ["Options: " + ", ".join(f"`{f.name}` (default `{f.default!r}`)"
                                              for f in options), ""]
    return lines


def reference() -> str:
    import inrlab
    from inrlab.models import MODELS
    from inrlab.models.decoders.parts import PARTS

    lines = [HEADER]
    lines += registry_section("Models", MODELS, ("autoencoder", "encoder", "decoder"))
    lines += registry_section("Decoder parts", PARTS, ("stage", "sampling", "mlp"))
    lines += ["## Data", ""]
    for name in DATA:
        lines += entry(getattr(inrlab, name), name)
    lines += trainer_section()
    lines += ["## Python API", ""]
    for name in API:
        lines += entry(getattr(inrlab, name), f"inrlab.{name}")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    text = reference()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python scripts/reference.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
