"""The small type system the config schemas are written in.

A schema is a tree of `Section`s (mappings with a fixed set of allowed keys); each allowed key is a
`Key` (its value type, a one-line help text, whether it is required, its default and whether that
default is filled in). Value types (`Int`, `Float`, `Bool`, `Str`, `Null`, `ListOf`, `OneOf`, `Section`)
validate a parsed YAML value and return a clean copy, or raise `Invalid` naming the key path and what
to do; the loader (modules.config.loader) turns that into a one-line `ConfigError`.

This module knows no family: the schemas (modules.config.fomm, .tpsmm, .cpabmm) are built from it, and
`index_schemas` is told by the loader which schemas exist, so that an unknown key can be answered with
the section it belongs in ("did you mean ...?", "it belongs in ..."). It imports nothing of the other
config modules and no YAML code.
"""

from __future__ import annotations

import copy
import difflib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Tuple, Union

#: The whole package logs under one name, the one it had as a single module (callers filter on it).
log = logging.getLogger("modules.config")

_WARNED: set = set()

#: A key path: section and key names, and list indices (('train_params', 'scales', 0)).
KeyPath = Tuple[Union[str, int], ...]



def warn_once(message: str) -> None:
    """log.warning, once per process for the same message (configs are loaded more than once)."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


class _NoDefault:
    """Marker for a key without a default value."""

    def __repr__(self) -> str:
        return "<no default>"


NO_DEFAULT = _NoDefault()


class Invalid(Exception):
    """One problem at a key path; turned into a ConfigError by the loader's public functions.

    `path` is the key path the message is about; `at` is the path whose YAML line is reported
    (e.g. the offending unknown key itself), defaulting to `path`.
    """

    def __init__(self, path: KeyPath, message: str, at: Optional[KeyPath] = None):
        super().__init__(message)
        self.path = tuple(path)
        self.message = message
        self.at = tuple(at) if at is not None else self.path


# ----------------------------------------------------------------------------------------------
# Value types
# ----------------------------------------------------------------------------------------------

def describe_value(value: Any) -> str:
    """Short human description of a YAML value for error messages."""
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"string {shown!r}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, Mapping):
        return "a mapping"
    return f"a {type(value).__name__}"


class ValueType:
    """Base of the schema types: `matches` is a shallow type test, `check` validates deeply.

    `check` returns a fresh copy of the value (containers are rebuilt, scalars kept as they are, so an
    int stays an int: the discriminator key depends on str(scale)).
    """

    description = "a value"
    plural = "values"

    def matches(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, value: Any, path: KeyPath) -> Any:
        return value

    def validate(self, value: Any, path: KeyPath) -> Any:
        """Check `value` (at key `path`) and return a clean copy, or raise `Invalid`."""
        if not self.matches(value):
            raise Invalid(path, f"expected {self.description}, got {describe_value(value)}"
                                f"{type_hint(self, value)}")
        return self.check(value, path)

    def kinds(self) -> set:
        """Basic kinds this type accepts ('int', 'float', 'bool', 'str', 'null', 'list', 'map')."""
        return set()


class Int(ValueType):
    """An integer (booleans and floats are refused), optionally with a lower bound."""

    description = "an integer"
    plural = "integers"

    def __init__(self, min: Optional[int] = None):
        self.min = min

    def matches(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def check(self, value: Any, path: KeyPath) -> Any:
        if self.min is not None and value < self.min:
            raise Invalid(path, f"must be >= {self.min}, got {value}")
        return value

    def kinds(self) -> set:
        return {"int"}


class Float(ValueType):
    """A real number; integers are accepted and kept as integers. Optional range and extra rule."""

    description = "a number"
    plural = "numbers"

    def __init__(self, min: Optional[float] = None, max: Optional[float] = None,
                 min_exclusive: bool = False, rule: Optional[Callable[[float], Optional[str]]] = None):
        self.min = min
        self.max = max
        self.min_exclusive = min_exclusive
        self.rule = rule

    def matches(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def check(self, value: Any, path: KeyPath) -> Any:
        if not math.isfinite(value):
            raise Invalid(path, f"must be a finite number, got {value!r}")
        if self.min is not None:
            if self.min_exclusive and value <= self.min:
                raise Invalid(path, f"must be > {self.min}, got {value!r}")
            if not self.min_exclusive and value < self.min:
                raise Invalid(path, f"must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise Invalid(path, f"must be <= {self.max}, got {value!r}")
        if self.rule is not None:
            problem = self.rule(value)
            if problem:
                raise Invalid(path, problem)
        return value

    def kinds(self) -> set:
        return {"int", "float"}


class Bool(ValueType):
    """true or false (YAML also reads True/False/yes/no as booleans)."""

    description = "true or false"
    plural = "booleans"

    def matches(self, value: Any) -> bool:
        return isinstance(value, bool)

    def kinds(self) -> set:
        return {"bool"}


class Str(ValueType):
    """A string, optionally restricted by a rule (a function returning a problem or None)."""

    description = "a string"
    plural = "strings"

    def __init__(self, rule: Optional[Callable[[str], Optional[str]]] = None):
        self.rule = rule

    def matches(self, value: Any) -> bool:
        return isinstance(value, str)

    def check(self, value: Any, path: KeyPath) -> Any:
        if self.rule is not None:
            problem = self.rule(value)
            if problem:
                raise Invalid(path, problem)
        return value

    def kinds(self) -> set:
        return {"str"}


class Null(ValueType):
    """YAML null (``null``, ``~`` or an empty value)."""

    description = "null"
    plural = "nulls"

    def matches(self, value: Any) -> bool:
        return value is None

    def kinds(self) -> set:
        return {"null"}


class ListOf(ValueType):
    """A list whose items all have type `item`; optionally an exact or minimal length."""

    plural = "lists"

    def __init__(self, item: ValueType, length: Optional[int] = None, min_length: int = 0,
                 length_reason: str = "", unique: bool = False):
        self.item = item
        self.length = length
        self.min_length = min_length
        self.length_reason = length_reason
        self.unique = unique

    @property
    def description(self) -> str:  # type: ignore[override]
        count = f"{self.length} " if self.length is not None else ""
        return f"a list of {count}{self.item.plural}"

    def matches(self, value: Any) -> bool:
        return isinstance(value, (list, tuple))

    def check(self, value: Any, path: KeyPath) -> Any:
        reason = f" ({self.length_reason})" if self.length_reason else ""
        if self.length is not None and len(value) != self.length:
            raise Invalid(path, f"must have exactly {self.length} items{reason}, got {len(value)}")
        if len(value) < self.min_length:
            raise Invalid(path, f"must have at least {self.min_length} item(s){reason}, got {len(value)}")
        out = [self.item.validate(item, path + (i,)) for i, item in enumerate(value)]
        if self.unique:
            seen = {}
            for i, item in enumerate(out):
                if str(item) in seen:
                    raise Invalid(path + (i,), f"{item!r} is listed twice (items {seen[str(item)]} and {i}); "
                                               f"keep it once")
                seen[str(item)] = i
        return out

    def kinds(self) -> set:
        return {"list"}


class OneOf(ValueType):
    """Any one of several types; the first whose shallow test matches validates the value."""

    def __init__(self, *types: ValueType):
        self.types = types

    @property
    def description(self) -> str:  # type: ignore[override]
        return " or ".join(t.description for t in self.types)

    @property
    def plural(self) -> str:  # type: ignore[override]
        return " or ".join(t.plural for t in self.types)

    def matches(self, value: Any) -> bool:
        return any(t.matches(value) for t in self.types)

    def check(self, value: Any, path: KeyPath) -> Any:
        for t in self.types:
            if t.matches(value):
                return t.check(value, path)
        raise AssertionError("unreachable: matches() was true")  # pragma: no cover

    def kinds(self) -> set:
        return set().union(*(t.kinds() for t in self.types))


@dataclass(frozen=True)
class Key:
    """One allowed key of a section.

    Attributes:
        type: the value's type (a `ValueType`, or a `Section` for a nested mapping).
        doc: one-line description: the help text, also the comment of the key in the YAML configs
            (modules.config.comments writes and checks those comments).
        required: the key must be present.
        default: the value used when the key is absent (for optional constructor arguments this is
            the constructor's default, documented only).
        fill: when True, an absent key is added to the returned config with `default`
            (for a nested `Section`, with that section's own filled defaults).
    """

    type: ValueType
    doc: str
    required: bool = False
    default: Any = NO_DEFAULT
    fill: bool = False


class Section(ValueType):
    """A mapping with a fixed set of allowed keys (each a `Key`).

    `only_here` names keys that belong in this section only (model_params.common_params's, which are
    passed to every model): one of them met elsewhere is answered with "move it there".
    """

    description = "a mapping of keys (key: value lines)"
    plural = "mappings"

    def __init__(self, keys: Mapping[str, Key], doc: str = "", only_here: Iterable[str] = ()):
        self.keys = dict(keys)
        self.doc = doc
        self.only_here = tuple(only_here)
        self.dotted = ""  # set by index_schemas: where this section lives in its schema

    def matches(self, value: Any) -> bool:
        return isinstance(value, Mapping)

    def check(self, value: Any, path: KeyPath) -> Any:
        for name in value:
            if not isinstance(name, str):
                raise Invalid(path, f"key {name!r} is not a name; keys must be words such as "
                                    f"'{next(iter(self.keys))}'", at=path + (str(name),))
            if name not in self.keys:
                raise Invalid(path, unknown_key_message(self, name), at=path + (name,))
        out = {}
        for name, item in value.items():
            out[name] = self.keys[name].type.validate(item, path + (name,))
        for name, key in self.keys.items():
            if name in value:
                continue
            if key.required:
                raise Invalid(path, f"required key '{name}' is missing ({key.doc}); add it")
            if key.fill:
                out[name] = self.default_for(name, path)
        return out

    def default_for(self, name: str, path: KeyPath) -> Any:
        """The value filled in for the absent key `name` (a fresh copy)."""
        key = self.keys[name]
        if isinstance(key.type, Section) and key.default is NO_DEFAULT:
            return key.type.check({}, path + (name,))
        return copy.deepcopy(key.default)

    def kinds(self) -> set:
        return {"map"}


def type_hint(expected: ValueType, value: Any) -> str:
    """A '; <what to do>' suffix for common type slips (quoted numbers, 1e-4, 10.0 for an int, ...)."""
    kinds = expected.kinds()
    if isinstance(value, str) and kinds & {"int", "float"}:
        try:
            number = float(value)
        except ValueError:
            return ""
        text = value.strip()
        if "e" in text.lower() and "." not in text.lower().split("e")[0]:
            mantissa, exponent = text.lower().split("e", 1)
            sign = exponent if exponent[:1] in "+-" else "+" + exponent
            return (f"; YAML reads {text} as text, write it with a dot and a signed exponent, "
                    f"e.g. {mantissa}.0e{sign}")
        if "int" in kinds and "float" not in kinds and not number.is_integer():
            return ""
        return "; remove the quotes"
    if isinstance(value, str) and "bool" in kinds and value.strip().lower() in ("true", "false", "yes", "no"):
        return "; write true or false without quotes"
    if isinstance(value, bool) and kinds & {"int", "float"}:
        return "; write a number, not true/false"
    if isinstance(value, float) and "int" in kinds and "float" not in kinds and value.is_integer():
        return f"; write it without a decimal point: {int(value)}"
    if isinstance(value, int) and not isinstance(value, bool) and "bool" in kinds:
        return "; write true or false"
    if value is None and kinds == {"map"}:
        return "; give its keys on indented lines below it, or remove it"
    return ""


# ----------------------------------------------------------------------------------------------
# Value rules and the types the schemas share
# ----------------------------------------------------------------------------------------------

def inverse_integer_rule(value: float) -> Optional[str]:
    """Rule: value in (0, 1] and 1/value a whole number (the anti-aliased downscaling keeps every
    (1/value)-th pixel)."""
    if not 0 < value <= 1:
        return f"must be in (0, 1], got {value!r}"
    inverse = 1.0 / value
    if not math.isclose(inverse, round(inverse), rel_tol=1e-9, abs_tol=1e-9):
        return (f"must be 1/n for a whole number n (1, 0.5, 0.25, 0.125, ...): the image is blurred and "
                f"then every n-th pixel kept, got {value!r}")
    return None


def extension_rule(value: str) -> Optional[str]:
    """Rule: a file extension with its leading dot, e.g. '.mp4'."""
    if not value.startswith(".") or len(value) < 2:
        return f"must be a file extension with its leading dot, e.g. '.mp4' or '.gif', got {value!r}"
    return None


def nonempty_rule(value: str) -> Optional[str]:
    """Rule: a non-empty string."""
    if not value.strip():
        return "must not be empty"
    return None


def choice_rule(*choices: str) -> Callable[[str], Optional[str]]:
    """Rule: one of `choices`."""
    return lambda value: None if value in choices else f"expected one of {list(choices)}, got {value!r}"


SCALE = Float(rule=inverse_integer_rule)
POS_INT = Int(min=1)
NONNEG_INT = Int(min=0)
NONNEG = Float(min=0)
POSITIVE = Float(min=0, min_exclusive=True)
PATH = Str(rule=nonempty_rule)


def req(type_: ValueType, doc: str) -> Key:
    """A required key."""
    return Key(type_, doc, required=True)


def opt(type_: ValueType, doc: str, default: Any = NO_DEFAULT) -> Key:
    """An optional key that is validated but not filled in (`default` is documentation only)."""
    return Key(type_, doc, default=default)


def fill(type_: ValueType, doc: str, default: Any = NO_DEFAULT) -> Key:
    """An optional key that is filled in with `default` when absent."""
    return Key(type_, doc, default=default, fill=True)


def documented_default(section: Section, name: str) -> Any:
    """Documented default of an optional key of `section`."""
    return section.keys[name].default


def motion_model_key(family: str) -> Key:
    """model_params.motion_model of the schema of `family`."""
    return opt(Str(), f"motion family: {family!r} (this layout), or the name of another registered family "
                      f"(modules.families); absent = read from the keys")


# ----------------------------------------------------------------------------------------------
# Walking a schema; where each key belongs (for the unknown-key messages)
# ----------------------------------------------------------------------------------------------

def walk_sections(section: Section, dotted: str = "") -> Iterator[Tuple[str, Section]]:
    """Yield (dotted path, Section) for `section` and every section nested in it."""
    yield dotted, section
    for name, key in section.keys.items():
        child = f"{dotted}.{name}" if dotted else name
        types = key.type.types if isinstance(key.type, OneOf) else (key.type,)
        for t in types:
            if isinstance(t, Section):
                yield from walk_sections(t, child)


def walk_keys(schema: Section) -> Iterator[Tuple[str, Key]]:
    """Yield (dotted key path, Key) for every key of `schema`, depth first, in schema order."""
    for dotted, section in walk_sections(schema):
        for name, key in section.keys.items():
            yield (f"{dotted}.{name}" if dotted else name), key


#: key name -> the dotted paths of the sections that allow it, over every indexed schema
_KEY_HOMES: dict = {}
#: names of keys that belong in one section only (Section.only_here), over every indexed schema
_ONLY_HERE: set = set()


def index_schemas(schemas: Iterable[Section]) -> None:
    """Record each section's dotted path and, over all `schemas` (every family's, in order), which
    sections allow each key name, for the unknown-key messages. Replaces any earlier index."""
    homes: dict = {}
    only_here: set = set()
    for schema in schemas:
        for dotted, section in walk_sections(schema):
            section.dotted = dotted
            only_here.update(section.only_here)
            for name in section.keys:
                if (dotted or "the top level") not in homes.setdefault(name, []):
                    homes[name].append(dotted or "the top level")
    _KEY_HOMES.clear()
    _KEY_HOMES.update(homes)
    _ONLY_HERE.clear()
    _ONLY_HERE.update(only_here)


def unknown_key_message(section: Section, name: str) -> str:
    """'unknown key ...' with a close-match suggestion and/or the section the key belongs in."""
    homes = [home for home in _KEY_HOMES.get(name, []) if home != (section.dotted or "the top level")]
    lowered = {allowed.lower(): allowed for allowed in section.keys}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if homes and name in _ONLY_HERE:
        return (f"unknown key '{name}' (it belongs in {' or '.join(homes)} only, which is passed to every "
                f"model); move it there")
    if homes and close:
        return (f"unknown key '{name}' (did you mean '{lowered[close[0]]}'? '{name}' is a key of "
                f"{' or '.join(homes)})")
    if homes:
        return f"unknown key '{name}' (it belongs in {' or '.join(homes)}); move it there"
    if close:
        return f"unknown key '{name}' (did you mean '{lowered[close[0]]}'?)"
    return f"unknown key '{name}' (allowed here: {', '.join(section.keys)}); remove or rename it"
