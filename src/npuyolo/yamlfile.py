"""The one loader for every YAML file a user hands npuyolo (data.yaml, recipe, series, a run's model YAML).

`yaml.safe_load` runs no code, but it is not safe against size: a 500-byte file of nested aliases (a "billion
laughs" bomb) loads as a few shared lists that expand to hundreds of millions of values as soon as anything
walks, prints or copies them; deep nesting overflows the parser's recursion (libyaml's C composer even
segfaults). So a file is refused before it is used when it is

- larger than MAX_YAML_BYTES, or not a regular file (a FIFO would block the read forever);
- nested deeper than MAX_YAML_DEPTH;
- more than MAX_YAML_NODES values once every alias is expanded, or an alias that contains itself.

Each refusal is one `YamlFileError` line. `short(value)` is how error messages quote a value from such a file:
at most SHORT_CHARS characters, so a bad value can never turn an error line into megabytes.
"""

from __future__ import annotations

import reprlib
import stat
from pathlib import Path
from typing import Any

import yaml

from npuyolo.errors import NpuyoloError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "SHORT_CHARS", "YamlFileError", "load_yaml", "short"]

MAX_YAML_BYTES = 256 * 1024  # a data.yaml with thousands of class names is tens of KB; recipes and series far less
MAX_YAML_DEPTH = 64  # real files nest 2-4 levels
MAX_YAML_NODES = 100_000  # values after alias expansion; a real file has hundreds
SHORT_CHARS = 80

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict, _repr.maxset = 3, 8, 8, 6, 8
_repr.maxstring, _repr.maxother, _repr.maxlong = SHORT_CHARS, SHORT_CHARS, SHORT_CHARS


class YamlFileError(NpuyoloError, ValueError):
    """A YAML file that cannot be read, does not parse, or is too large once its aliases are expanded."""


def short(value: Any, limit: int = SHORT_CHARS) -> str:
    """`repr(value)` cut to `limit` characters without ever building the full repr (reprlib stops early)."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _TooLarge(Exception):
    """Raised while composing; turned into one YamlFileError line by load_yaml."""


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_YAML_DEPTH (the pure-Python composer, so a deep
    file is an error, never a RecursionError or a crash in C)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _TooLarge(f"nested deeper than {MAX_YAML_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document holds once every alias is expanded; refused past MAX_YAML_NODES.

    Memoised per node, so a bomb is measured in the time its (small) node graph takes to visit; a node met
    again while it is still being measured is an alias inside its own anchor (infinite expansion).
    """
    sizes: dict[int, int | None] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] is None:
                raise _TooLarge("an alias refers to a value that contains it (infinite expansion)")
            return sizes[key]
        sizes[key] = None
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        if total > MAX_YAML_NODES:
            raise _TooLarge(f"more than {MAX_YAML_NODES} values once its aliases (*name) are expanded")
        sizes[key] = total
        return total

    return size(root)


def load_yaml(path: str | Path) -> Any:
    """The document in `path` (None for an empty file), refused in one line if it is not a bounded, valid YAML file.

    Callers check that the file exists first (each says "not found" in its own words) and may re-raise the
    YamlFileError as their own error class.
    """
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
            raise YamlFileError(f"{path}: {kind}; expected a YAML file")
        if st.st_size > MAX_YAML_BYTES:
            raise YamlFileError(f"{path}: {st.st_size} bytes is too large for a YAML settings file (limit {MAX_YAML_BYTES})")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as e:
        raise YamlFileError(f"{path}: cannot read ({e.strerror or e})") from e
    if len(raw) > MAX_YAML_BYTES:  # grew since stat
        raise YamlFileError(f"{path}: too large for a YAML settings file (limit {MAX_YAML_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise YamlFileError(f"{path}: not UTF-8 text ({e.reason})") from e
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node)
        return loader.construct_document(node)
    except _TooLarge as e:
        raise YamlFileError(f"{path}: refused: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        problem = problem if len(problem) <= 2 * SHORT_CHARS else problem[:2 * SHORT_CHARS - 3] + "..."
        raise YamlFileError(f"{path}:{mark.line + 1 if mark else '?'}: not valid YAML ({problem})") from e
    finally:
        loader.dispose()
