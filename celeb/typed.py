"""The one config mechanism: typed dataclasses built from YAML, with every key and value checked.

Trainer configs (celeb.config.TrainConfig) and sweep specs (celeb.sweep.spec.SweepSpec) are both
plain dataclasses; a field whose type is a dataclass is a section (`cvae:`, `asha:`). `build` turns
a nested mapping into one, checking that

- every key is a field (an unknown key names the closest valid one: "did you mean"),
- every value has its field's type (int -> float is allowed; YAML 1.1's "1e-3" string is a float),
- bounds given in a field's metadata hold (`at_least(1)`, `above(0)`),
- a field's own parser, when it has one (metadata "parse"), accepts the value,

and then the dataclass's `__post_init__` checks what spans fields. Every error is a `ConfigError`
carrying the dotted key it is about, so `Source.describe` can put the file and the line in front.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message says which and how to fix it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def at_least(minimum: float) -> dict[str, Any]:
    """Field metadata: the value is >= minimum."""
    return {"min": minimum}


def above(bound: float) -> dict[str, Any]:
    """Field metadata: the value is > bound."""
    return {"gt": bound}


@dataclass(frozen=True)
class Source:
    """Where a mapping came from, for messages: a file name and the line of each dotted key."""

    name: str = ""
    lines: Mapping[str, int] = field(default_factory=dict)

    def where(self, key: str | None) -> str:
        """"FILE, line N: " for `key` (or its nearest enclosing key with a line), "FILE: ", or ""."""
        parts = key.split(".") if key else []
        line = next((self.lines[k] for k in (".".join(parts[:i]) for i in range(len(parts), 0, -1))
                     if k in self.lines), None)
        if line is not None:
            return f"{self.name}, line {line}: "
        return f"{self.name}: " if self.name else ""

    def describe(self, error: ConfigError) -> str:
        return f"{self.where(error.key)}{error}"


# ----------------------------------------------------------------------------- building


def build(cls: type, raw: Mapping[str, Any], noun: str = "config", prefix: str = "") -> Any:
    """The dataclass `cls` from a nested mapping; unset fields keep their defaults."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            raise unknown_key_error(f"{prefix}{key}", dotted_keys(cls, prefix), noun)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, spec in fields.items():
        key = f"{prefix}{name}"
        if name not in raw:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{noun} key '{key}' is missing; add it", key)
            continue
        values[name] = _field_value(raw[name], hints[name], spec, key, noun)
    try:
        return cls(**values)
    except ConfigError as error:  # from __post_init__: its key is relative to this section
        if prefix:
            error.key = f"{prefix}{error.key}" if error.key else prefix.rstrip(".")
        raise


def _field_value(value: Any, annotation: Any, spec: dataclasses.Field, key: str, noun: str) -> Any:
    parse: Callable[[Any, str], Any] | None = spec.metadata.get("parse")
    if parse is not None:
        return parse(value, key)
    section = section_type(annotation)
    if section is not None:
        if value is None or value is False:  # "asha:" left empty, or "asha: false"
            if _allows_none(annotation):
                return None
            value = {}
        if not isinstance(value, Mapping):
            first = dataclasses.fields(section)[0].name
            raise ConfigError(f"{noun} key '{key}' is a section, not a value; set its keys, e.g. '{key}.{first}'", key)
        return build(section, value, noun, prefix=f"{key}.")
    coerced = coerce(key, value, annotation, noun)
    check_bounds(key, coerced, spec.metadata, noun)
    return coerced


def section_type(annotation: Any) -> type | None:
    """The dataclass a field's annotation names (`Dataclass` or `Dataclass | None`), else None."""
    options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    found = [o for o in options if dataclasses.is_dataclass(o)]
    return found[0] if found else None


def _allows_none(annotation: Any) -> bool:
    return type(None) in typing.get_args(annotation)


def check_bounds(key: str, value: Any, metadata: Mapping[str, Any], noun: str = "config") -> None:
    """Raise ConfigError when `value` breaks the field's `at_least` / `above` bound (None passes)."""
    if value is None:
        return
    kind = "an integer" if isinstance(value, int) else "a number"
    if "min" in metadata and value < metadata["min"]:
        raise ConfigError(f"{noun} key '{key}' must be {kind} >= {metadata['min']}, got {value!r}", key)
    if "gt" in metadata and not value > metadata["gt"]:
        raise ConfigError(f"{noun} key '{key}' must be {kind} > {metadata['gt']}, got {value!r}", key)


def dotted_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable key of `cls`, dotted through its sections: "seed", ..., "cvae.beta", ..."""
    hints = typing.get_type_hints(cls)
    keys: list[str] = []
    sections: list[str] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        section = section_type(hints[f.name])
        if section is None:
            keys.append(f"{prefix}{f.name}")
        else:
            sections += dotted_keys(section, f"{prefix}{f.name}.")
    return keys + sections


def unknown_key_error(key: str, candidates: list[str], noun: str = "config") -> ConfigError:
    section = key.rsplit(".", 1)[0] if "." in key else "top level"
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(candidates)}"
    return ConfigError(f"unknown {noun} key '{key}' (section: {section}){hint}", key)


# ----------------------------------------------------------------------------- values


def coerce(key: str, value: Any, annotation: Any, noun: str = "config") -> Any:
    """Return `value` as the annotated type (int -> float is allowed), or raise ConfigError."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, str)):  # numpy/torch scalars
        value = value.item()
    ok, coerced = _match(value, annotation)
    if not ok:
        raise ConfigError(f"{noun} key '{key}' must be {describe_type(annotation)}, got {value!r} "
                          f"({type(value).__name__})", key)
    return coerced


def _match(value: Any, annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            ok, coerced = _match(value, option)
            if ok:
                return True, coerced
        return False, None
    if origin is Literal:
        allowed = typing.get_args(annotation)
        return any(value == a and type(value) is type(a) for a in allowed), value
    if origin is list:
        if isinstance(value, str):  # "--set cvae.conditions=Male" means one condition
            value = [value]
        return _match_items(value, typing.get_args(annotation)[0], list)
    if origin is tuple:  # tuple[X, ...]: a YAML list
        return _match_items(value, typing.get_args(annotation)[0], tuple)
    if origin is dict or annotation is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else None
    if annotation is Any:
        return True, value
    if annotation is type(None):
        return value is None, None
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, str) and SCIENTIFIC.match(value):  # PyYAML reads 1e-3 as a string
            value = float(value)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else None
    if annotation is str:
        return isinstance(value, (str, Path)), str(value) if isinstance(value, (str, Path)) else None
    raise TypeError(f"unsupported config annotation {annotation!r}")


def _match_items(value: Any, item_type: Any, container: type) -> tuple[bool, Any]:
    if not isinstance(value, (list, tuple)):
        return False, None
    items = [_match(v, item_type) for v in value]
    return all(ok for ok, _ in items), container(v for _, v in items)


PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def describe_type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in typing.get_args(annotation))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        item = typing.get_args(annotation)[0]
        return f"a list of {PLURALS.get(item, describe_type(item))}"
    if origin is dict or annotation is dict:
        return "a mapping"
    if annotation is type(None):
        return "null"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(annotation, str(annotation))


# ----------------------------------------------------------------------------- YAML


def read_yaml_mapping(path: str | Path, examples: str) -> tuple[dict[str, Any], Source]:
    """A YAML file's top-level mapping and its Source (lines of every key); `examples` names where
    to look for good files in the not-found message."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; see {examples} for examples")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top, got {type(raw).__name__}")
    return raw, Source(str(path), key_lines(text))


def key_lines(text: str) -> dict[str, int]:
    """Dotted key -> 1-based line number in a YAML text, for error messages."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                name = f"{prefix}{key_node.value}"
                lines[name] = key_node.start_mark.line + 1
                walk(value_node, f"{name}.")

    root = yaml.compose(text)
    if root is not None:
        walk(root, "")
    return lines


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"cvae": {"beta": 4}} -> {"cvae.beta": 4}; already-dotted keys pass through."""
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def nest(flat: Mapping[str, Any], sections: Iterable[str]) -> dict[str, Any]:
    """{"cvae.beta": 4} -> {"cvae": {"beta": 4}} for the given section names; other keys stay."""
    sections = set(sections)
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        head, dot, rest = key.partition(".")
        if dot and head in sections:
            section = nested.setdefault(head, {})
            if not isinstance(section, dict):
                raise ConfigError(f"config key '{head}' is both a value and a section", head)
            section[rest] = value
        else:
            nested[key] = value
    return nested


def parse_override(text: str) -> tuple[str, Any]:
    """"cvae.beta=4" -> ("cvae.beta", 4): the value is parsed as YAML (so 4 is an int, [a, b] a list)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE; write e.g. --set cvae.beta=4")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({error})") from None
    return key.strip(), parsed
