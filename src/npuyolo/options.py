"""The options machinery every operation's options class is made with: typed fields, frozen, defaults stated once.

A class is typed like a dataclass, but its fields are collected by `Options.__init_subclass__` instead of `@dataclass`:
the dataclass machinery compiles an __init__, __setattr__, __delattr__, __eq__ and __repr__ per class, 40 to 60 ms for
twenty classes at every `npuyolo` start (measured with `python -X importtime`). It sits this low so that any stage can
state its own options with it (`deploy.int8.options.QuantizeOptions`) and a front door can read them at start-up; it
imports nothing but the error base.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from npuyolo.errors import NpuyoloError

__all__ = ["Field", "Options", "check_types", "fields_of", "of", "opt"]

O = TypeVar("O", bound="Options")


class Field:
    """One option: its name and annotation (filled in by the class), default, help and, where not --<name>, flags."""

    __slots__ = ("name", "type", "default", "help", "flags")

    def __init__(self, default: Any, help: str, flags: tuple[str, ...]):  # noqa: A002 (Typer's own word)
        self.name, self.type, self.default, self.help, self.flags = "", "", default, help, flags


def opt(default: Any, help: str, *flags: str) -> Any:  # noqa: A002
    """A field: its default, its help (shown by `npuyolo ... --help`) and, where not --<name>, its CLI flags."""
    return Field(default, help, flags)


def fields_of(cls_or_obj: Any) -> list[Field]:
    """The fields of an options class (or object), or of a dataclass a stage defines (`QuantizeOptions`)."""
    own = getattr(cls_or_obj, "_fields", None)
    if own is not None:
        return list(own.values())
    made = []
    for f in dataclasses.fields(cls_or_obj):
        one = Field(f.default, f.metadata.get("help", ""), tuple(f.metadata.get("flags", ())))
        one.name, one.type = f.name, str(f.type)
        made.append(one)
    return made


def _kind(value: Any, base: str) -> bool:
    if base == "bool":
        return isinstance(value, bool)
    if base == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if base == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base == "str":
        return isinstance(value, str)
    if base == "Path":
        return isinstance(value, str) or (isinstance(value, os.PathLike) and isinstance(os.fspath(value), str))
    if base.startswith("list["):
        inner = base[5:-1]
        return isinstance(value, (list, tuple)) and all(_kind(v, inner) for v in value)
    return True


def _plain_number(value: Any, annotation: str) -> Any:
    """A number of another library (numpy's int64, float32, bool_) as the Python number its field holds, so that an
    option read from an array is taken and written to JSON alike; text stays text (a str number is refused)."""
    if type(value) in (int, float, bool, str):
        return value
    base = annotation.removesuffix("| None").strip()
    if base == "bool" and type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)  # numpy's bool is no numbers.Number
    if base == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if base == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


WANTED = {"bool": "True or False", "int": "an int", "float": "a number", "str": "a str",
          "Path": "a path (str or pathlib.Path)"}


def check_types(options: Any) -> None:
    """Every field of an options object of its annotated type (a str number is not a number): one NpuyoloError
    naming the field. For the options classes here and for those a stage defines (`QuantizeOptions`)."""
    error = getattr(type(options), "error", NpuyoloError)  # a stage's own error class (QuantizeOptions: DeployError)
    if not (isinstance(error, type) and issubclass(error, NpuyoloError)):  # a field that happens to be named `error`
        error = NpuyoloError
    for f in fields_of(options):
        value = getattr(options, f.name)
        optional = f.type.endswith("| None")
        base = f.type.removesuffix("| None").strip()
        if base.startswith("tuple[") and base.endswith(", ...]"):
            base = f"list[{base[6:-6]}]"
        if value is None and optional:
            continue
        if not _kind(value, base):
            wanted = WANTED.get(base, f"a list of {base[5:-1]}" if base.startswith("list[") else base)
            raise error(f"{f.name} must be {wanted}, got {type(value).__name__} {value!r}"[:200], param=f.name)


def of(cls: type, options: Any = None, /, **fields: Any) -> Any:
    """`options` (an object of `cls`, or None for the defaults) with `fields` over it, typed; an unknown key is one
    line naming it and the accepted ones."""
    names = [f.name for f in fields_of(cls)]
    if options is not None and not isinstance(options, cls):
        raise NpuyoloError(f"options must be a {cls.__name__}, got {type(options).__name__}", param="options")
    unknown = sorted(set(fields) - set(names))
    if unknown:
        what = getattr(cls, "operation", cls.__name__.removesuffix("Options").lower())
        raise NpuyoloError(f"unknown option(s) {', '.join(unknown)} for {what}; accepted: {', '.join(names)}")
    if options is None:
        made = cls(**fields)
    elif isinstance(options, Options):
        made = cls(**{**options.as_dict(), **fields})
    else:
        made = dataclasses.replace(options, **fields)
    check_types(made)
    return made


class Options:
    """Base of every options class: typed fields (`name: type = opt(default, help)`), checked when made, frozen;
    `of()` merges an object and keywords. The class attribute of a field is its default (`PlanOptions.conf`)."""

    operation: ClassVar[str] = "this operation"
    _fields: ClassVar[dict[str, Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found = dict(cls._fields)  # a subclass keeps its base's fields, in order
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            value = cls.__dict__.get(name)
            if isinstance(value, Field):
                value.name, value.type = name, str(annotation)
                found[name] = value
                setattr(cls, name, value.default)
        cls._fields = found

    def __init__(self, **values: Any) -> None:
        unknown = sorted(set(values) - set(self._fields))
        if unknown:
            raise NpuyoloError(f"unknown option(s) {', '.join(unknown)} for {self.operation}; accepted: {', '.join(self._fields)}")
        for name, f in self._fields.items():
            value = _plain_number(values.get(name, f.default), f.type)
            object.__setattr__(self, name, list(value) if isinstance(value, tuple) and f.type.startswith("list[") else value)
        self.__post_init__()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen; make another with {type(self).__name__}.of(options, {name}=...)")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  (options hold lists)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"

    def __post_init__(self) -> None:
        check_types(self)
        for f in self._fields.values():  # a path as a Path, a list as a list, whatever the caller gave
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.type.startswith("Path"):
                if not str(value).strip():
                    raise NpuyoloError(f"{f.name} must not be empty", param=f.name)
                object.__setattr__(self, f.name, Path(value))
            elif f.type.startswith("list["):
                object.__setattr__(self, f.name, list(value))

    @classmethod
    def fields(cls) -> list[Field]:
        return list(cls._fields.values())

    @classmethod
    def names(cls) -> list[str]:
        return list(cls._fields)

    @classmethod
    def of(cls: type[O], options: O | None = None, /, **fields: Any) -> O:
        """The options of one call: `options` (an object of this class, or None for the defaults) with `fields` over
        it. An unknown key is one line naming it and the accepted ones."""
        return of(cls, options, **fields)

    @classmethod
    def pick(cls: type[O], values: dict[str, Any]) -> O:
        """The options among a command's parameters (`locals()` of a CLI command): every field must be there."""
        return cls(**{name: values[name] for name in cls._fields})

    @classmethod
    def help(cls, name: str) -> str:
        return cls._fields[name].help

    @classmethod
    def flags(cls, name: str) -> tuple[str, ...]:
        return cls._fields[name].flags

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._fields}
