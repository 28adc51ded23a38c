"""Target options: one frozen dataclass per target, parsed once from ``--option TARGET.KEY=VALUE``.

A target declares its options as a subclass of :class:`TargetOptions`, one field per key with its type, default and
a ``help`` text in the field's metadata; :meth:`TargetOptions.parse` refuses unknown keys (listing the known ones),
converts strings from the command line by the field's type and lets ``__post_init__`` check the values. Nothing
else in the code base parses option values.
"""
from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Mapping, TypeVar

from .errors import UsageError

__all__ = ["TargetOptions", "NoOptions", "option", "parse_bool"]

T = TypeVar("T", bound="TargetOptions")


def parse_bool(value: Any, name: str) -> bool:
    """``True``/``False`` from a bool or the words ``true``/``false`` (any case), the only spellings the docs use
    (docs/decisions.md: yes/no, on/off and 1/0 are refused, so that one spelling is documented and accepted);
    UsageError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text == "true":
        return True
    if text == "false":
        return False
    raise UsageError(f"{name} must be true or false, got {value!r}")


def option(default: Any, help: str) -> Any:  # noqa: A002 - the field's help text
    """A dataclass field with its help text (shown when a key is unknown, and in docs)."""
    return field(default=default, metadata={"help": help})


def _convert(value: Any, kind: Any, name: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        errors = []
        for arg in args:
            try:
                return _convert(value, arg, name)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if len(errors) == 1 else f"{name}: {value!r} fits none of {args}")
    if origin is Literal:
        choices = typing.get_args(kind)
        for choice in choices:
            if value == choice or (isinstance(value, str) and str(choice).lower() == value.lower()):
                return choice
        raise UsageError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if kind is bool:
        return parse_bool(value, name)
    if kind in (int, float):
        if isinstance(value, bool):
            raise UsageError(f"{name} must be a number, got {value!r}")
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise UsageError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
    if kind is str:
        return str(value)
    raise TypeError(f"unsupported option type {kind!r} for {name}")


@dataclass(frozen=True)
class TargetOptions:
    """Base of every target's options. Subclasses add fields made with :func:`option`."""

    @classmethod
    def parse(cls: type[T], target: str, raw: Mapping[str, Any] | None) -> T:
        """Typed options from ``{key: value}`` (strings from the CLI, or Python values).

        Raises UsageError naming an unknown key (with the known keys and their help) or a value of the wrong type."""
        raw = dict(raw or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            listing = "; ".join(f"{k}: {f.metadata.get('help', '')}" for k, f in known.items()) or "none"
            raise UsageError(f"unknown {target} option(s) {', '.join(unknown)}; known: {listing}")
        hints = typing.get_type_hints(cls)
        values = {}
        for key, value in raw.items():
            try:
                values[key] = _convert(value, hints[key], f"{target} option {key}")
            except UsageError as exc:
                hint = known[key].metadata.get("help")
                raise UsageError(f"{exc}" + (f" ({hint})" if hint else "")) from None
        return cls(**values)

    def given(self) -> dict[str, Any]:
        """The options that differ from their defaults (for the manifest)."""
        out = {}
        for f in fields(self):
            default = f.default if f.default is not MISSING else None
            value = getattr(self, f.name)
            if value != default:
                out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def help(cls) -> dict[str, str]:
        """``{key: help text}`` of every option, for docs and error messages."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls)}


@dataclass(frozen=True)
class NoOptions(TargetOptions):
    """A target that takes no options: every key is refused."""
