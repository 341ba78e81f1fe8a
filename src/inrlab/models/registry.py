"""A small model registry: classes registered by name, built from ``{name, args}`` specs.

Each registration records the model's kind (``encoder``, ``decoder``, ``autoencoder``) and
a tiny set of arguments, so one parametrized test covers every registered model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from torch import nn

from inrlab.errors import InrlabError

KINDS = ("encoder", "decoder", "autoencoder")
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Registration:
    name: str
    cls: Callable[..., nn.Module]
    kind: str
    tiny: dict[str, Any] = field(default_factory=dict)


class Registry:
    def __init__(self) -> None:
        self._entries: dict[str, Registration] = {}

    def register(self, kind: str, *, tiny: dict[str, Any]) -> Callable[[T], T]:
        """Class decorator: register under the class name, with tiny test arguments."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

        def decorate(cls: T) -> T:
            name = cls.__name__
            if name in self._entries:
                raise ValueError(f"model name {name!r} is registered twice")
            self._entries[name] = Registration(name, cls, kind, dict(tiny))
            return cls

        return decorate

    def names(self, kind: str | None = None) -> list[str]:
        return sorted(n for n, r in self._entries.items() if kind is None or r.kind == kind)

    def get(self, name: str) -> Registration:
        if name not in self._entries:
            raise InrlabError(
                f"unknown model '{name}'; registered models: {', '.join(self.names())}"
            )
        return self._entries[name]

    def build(self, spec: dict[str, Any]) -> nn.Module:
        """Build from ``{"name": ..., "args": {...}}``; args may nest further specs."""
        if not isinstance(spec, dict) or "name" not in spec:
            raise InrlabError("a model spec is a mapping with 'name' and optional 'args'")
        unknown = set(spec) - {"name", "args"}
        if unknown:
            raise InrlabError(f"a model spec takes only 'name' and 'args', not {sorted(unknown)}")
        cls = self.get(spec["name"]).cls
        # A class may build some of its parts itself from their specs (EncoderDecoder fills
        # the decoder's code arguments in from its encoder): those are passed as they are.
        own = getattr(cls, "spec_arguments", ())
        args = {k: v if k in own else self._maybe_build(v)
                for k, v in (spec.get("args") or {}).items()}
        return cls(**args)

    def _maybe_build(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) <= {"name", "args"} and "name" in value \
                and value["name"] in self._entries:
            return self.build(value)
        return value

    def classes(self) -> dict[str, Callable[..., nn.Module]]:
        return {name: r.cls for name, r in self._entries.items()}


MODELS = Registry()
register_model = MODELS.register
