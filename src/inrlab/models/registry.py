"""A small model registry: classes registered by name, built from ``{name, args}`` specs.

Each registration records the model's kind (``encoder``, ``decoder``, ``autoencoder``) and
a tiny set of arguments, so one parametrized test covers every registered model. A module
built from a spec remembers it: ``model_spec`` gives the plain-data spec that rebuilds it
(what checkpoints and model files store).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

from torch import nn

from inrlab.errors import InrlabError

KINDS = ("encoder", "decoder", "autoencoder")
_SPEC = "_inrlab_spec"  # the {name, args} a module was built from (set by Registry.build)
T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Registration:
    name: str
    cls: Callable[..., nn.Module]
    kind: str
    tiny: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Classes by name; ``noun`` names them in errors (``unknown model 'X'``)."""

    def __init__(self, kinds: tuple[str, ...] = KINDS, noun: str = "model") -> None:
        self._entries: dict[str, Registration] = {}
        self.kinds = kinds
        self.noun = noun

    def register(self, kind: str, *, tiny: dict[str, Any]) -> Callable[[T], T]:
        """Class decorator: register under the class name, with tiny test arguments."""
        if kind not in self.kinds:
            raise ValueError(f"kind must be one of {self.kinds}, got {kind!r}")

        def decorate(cls: T) -> T:
            name = cls.__name__
            if name in self._entries:
                raise ValueError(f"{self.noun} name {name!r} is registered twice")
            self._entries[name] = Registration(name, cls, kind, dict(tiny))
            return cls

        return decorate

    def names(self, kind: str | None = None) -> list[str]:
        return sorted(n for n, r in self._entries.items() if kind is None or r.kind == kind)

    def get(self, name: str) -> Registration:
        if name not in self._entries:
            raise InrlabError(
                f"unknown {self.noun} '{name}'; registered {self.noun}s: {', '.join(self.names())}"
            )
        return self._entries[name]

    def build(self, spec: Mapping[str, Any], **context: Any) -> nn.Module:
        """Build from ``{"name": ..., "args": {...}}``; args may nest further specs. A name
        outside the registry or an argument its class does not take is ``InrlabError``.
        ``context``: keywords the caller adds (a decoder part's input width), not part of
        the spec the module remembers.

        A class that regrouped its arguments translates older spellings in its
        ``upgrade_arguments`` classmethod (``LocalLatentDecoder``), so specs stored by
        earlier runs still build."""
        noun = self.noun
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise InrlabError(f"a {noun} spec is a mapping with 'name' and optional 'args'")
        unknown = set(spec) - {"name", "args"}
        if unknown:
            raise InrlabError(f"a {noun} spec takes only 'name' and 'args', not "
                              f"{sorted(unknown)}")
        given = spec.get("args") or {}
        if not isinstance(given, Mapping):
            raise InrlabError(f"the args of {noun} '{spec['name']}' must be a mapping of "
                              f"argument names to values, got {type(given).__name__}")
        registration = self.get(spec["name"])
        upgrade = getattr(registration.cls, "upgrade_arguments", None)
        given = dict(upgrade(given) if upgrade is not None else given)
        _check_arguments(registration, given, noun)
        # A class may build some of its parts itself from their specs (EncoderDecoder fills
        # the decoder's code arguments in from its encoder): those are passed as they are.
        own = getattr(registration.cls, "spec_arguments", ())
        args = {k: v if k in own else self._maybe_build(v) for k, v in given.items()}
        module = registration.cls(**args, **context)
        setattr(module, _SPEC, {"name": registration.name, "args": given})
        return module

    def _maybe_build(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) <= {"name", "args"} and "name" in value \
                and value["name"] in self._entries:
            return self.build(value)
        return value

    def classes(self) -> dict[str, Callable[..., nn.Module]]:
        return {name: r.cls for name, r in self._entries.items()}


class UpgradesArguments(type):
    """Metaclass of a class that regrouped its constructor's arguments: a call with older
    spellings goes through the class's ``upgrade_arguments`` first, so snippets and specs
    written for an earlier version still build, while ``inspect.signature`` (and a spec's
    argument check) sees the current arguments only."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **cls.upgrade_arguments(kwargs))  # type: ignore[attr-defined]

    @property
    def __signature__(cls) -> inspect.Signature:
        signature = inspect.signature(cls.__init__)  # type: ignore[misc]
        return signature.replace(parameters=list(signature.parameters.values())[1:])


MODELS = Registry()
register_model = MODELS.register


def _check_arguments(registration: Registration, given: Mapping[str, Any],
                     noun: str = "model") -> None:
    """Bad input for an argument the class's constructor does not take (keyword-only ones
    are the caller's context, not the spec's)."""
    try:
        parameters = inspect.signature(registration.cls).parameters
    except (TypeError, ValueError):  # no signature to read: the constructor decides
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    known = [n for n, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]
    unknown = [name for name in given if name not in known]
    if unknown:
        raise InrlabError(f"{noun} '{registration.name}' takes no argument "
                          f"{', '.join(repr(n) for n in unknown)}; its arguments: "
                          f"{', '.join(known)}")


def model_spec(module: nn.Module) -> dict[str, Any] | None:
    """The ``{name, args}`` spec that rebuilds ``module`` from the registry alone, as plain
    data (lists for tuples), or None for a module not built from a spec or holding a value
    no file can store (a Python object among its args).

    A part the spec names (``encoder``, ``decoder``) is given as the part was built, with
    the arguments its parent filled in (the decoder's code channels and grid)."""
    spec = getattr(module, _SPEC, None)
    if spec is None:
        return None
    args: dict[str, Any] = {}
    for key, value in spec["args"].items():
        part = getattr(module, key, None)
        if isinstance(value, Mapping) and isinstance(part, nn.Module):
            value = model_spec(part) or value
        plain = _plain(value)
        if plain is _NOT_PLAIN:
            return None
        args[key] = plain
    return {"name": spec["name"], "args": args}


_NOT_PLAIN = object()


def _plain(value: Any) -> Any:
    """``value`` as JSON data (tuples as lists), or ``_NOT_PLAIN``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items = {k: _plain(v) for k, v in value.items()}
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items.values()) else items
    return _NOT_PLAIN
