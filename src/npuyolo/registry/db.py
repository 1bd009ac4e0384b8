"""The run registry: one SQLite file, every write in a transaction, dead runs found on open."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import time
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from npuyolo.errors import NpuyoloError, UnsafePathError
from npuyolo.paths import claim_dir, make_dir, out_of_space, safe_join, slug
from npuyolo.paths import default_registry_path as default_path
from npuyolo.registry.schema import MIGRATIONS, RUN_COLUMNS, SCHEMA_VERSION, RunRecipe, RunStatus, widen_status_check
from npuyolo.variants.spec import HYBRID_RE, NAME_RE

__all__ = ["Artifact", "DamagedRowError", "EpochRow", "NameTakenError", "Registry", "RegistryError", "RunRecipe", "RunRecord", "RunStatus", "default_path", "validate_run_name"]

MAX_NAME_CHARS = 100
# sqlite messages that mean "the file or disk", not "our SQL": shown to the user as one line
_STORAGE_ERRORS = ("disk is full", "readonly", "read-only", "locked", "disk I/O", "unable to open", "not a database",
                   "malformed", "no such table")


@dataclass(frozen=True)
class EpochRow:
    """One epoch as Ultralytics reported it: train losses, validation, learning rate, seconds; `extra` holds loss
    terms a run adds (e.g. distillation), which only some runs have."""

    epoch: int
    box_loss: float | None = None
    cls_loss: float | None = None
    dfl_loss: float | None = None
    precision: float | None = None
    recall: float | None = None
    map50: float | None = None
    map50_95: float | None = None
    lr: float | None = None
    epoch_time_s: float | None = None
    extra: dict[str, float] | None = field(default=None, hash=False)

    def value(self, name: str) -> float | None:
        """A metric or loss by its column name (`map50`, `box_loss`, ...), for code that picks the column at run time."""
        if name not in EPOCH_FIELDS:
            raise KeyError(f"no epoch column {name!r}; known: {', '.join(EPOCH_FIELDS)}")
        return getattr(self, name)

    def as_dict(self) -> dict:
        """The JSON form `runs show --json` and run.json exports have always had: no `extra` key when there is none."""
        row = asdict(self)
        if row["extra"] is None:
            del row["extra"]
        return row

    @classmethod
    def from_dict(cls, row: dict) -> EpochRow:
        return cls(**{k: row.get(k) for k in ("epoch", *EPOCH_FIELDS, "extra")})


EPOCH_FIELDS = tuple(f.name for f in dataclasses.fields(EpochRow) if f.name not in ("epoch", "extra"))


class RegistryError(NpuyoloError, LookupError):
    """A run or series that is not in the registry, or a registry file npuyolo cannot use."""


class DamagedRowError(RegistryError):
    """A registry row that cannot be read as npuyolo writes it (edited by hand, written by another tool): one line
    naming the run (or series) and the column, so the other rows still list."""


# the recipe keys a report reads, with the type each must have when present (train/recipe.py's Recipe)
_INT, _NUMBER = (int,), (int, float)
RECIPE_TYPES: dict[str, tuple[type, ...]] = {
    "epochs": _INT, "batch": _INT, "imgsz": _INT, "seed": _INT, "workers": _INT, "optimizer": (str,), "lr0": _NUMBER,
    "lr_final": _NUMBER, "momentum": _NUMBER, "weight_decay": _NUMBER, "warmup_epochs": _NUMBER}
BEST_METRICS = ("precision", "recall", "map50", "map50_95")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def _number(value: Any, integer: bool = False) -> float | int | None:
    """A numeric column as SQLite gave it back: None, or a number (SQLite keeps text written into a REAL column)."""
    if value is None or _is(value, _INT if integer else _NUMBER):
        return value
    raise ValueError(f"{value!r} is not a number" if not integer else f"{value!r} is not an integer")


def _json(text: Any, kind: type, nullable: bool = False) -> Any:
    """A JSON column: parsed, and of the kind npuyolo writes there."""
    if text is None and nullable:
        return None
    if not isinstance(text, str):
        raise ValueError(f"{type(text).__name__}, not JSON text")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    except ValueError as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(value, kind):
        raise ValueError(f"a JSON {type(value).__name__}, not a{'n' if kind.__name__[0] in 'aeiou' else ''} {kind.__name__}")
    return value


MAX_RECIPE_DEPTH = 32  # a recorded recipe is a few levels deep (Ultralytics' arguments, distill, act_anneal)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests lists or objects more than `limit` levels (walked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, (dict, list)):
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def _recipe(text: Any) -> RunRecipe:
    """The recipe column, typed: the settings a report reads must have their types when present (else the row is
    damaged); missing and unknown settings load (`RunRecipe` says how)."""
    recipe = _json(text, dict)
    wrong = [k for k, types in RECIPE_TYPES.items() if k in recipe and not _is(recipe[k], types)]
    if wrong:
        raise ValueError(f"{wrong[0]} is {recipe[wrong[0]]!r}")
    if _deeper_than(recipe, MAX_RECIPE_DEPTH):  # RunRecipe keeps a deep copy: Python's copy recurses, two frames a level
        raise ValueError(f"nested more than {MAX_RECIPE_DEPTH} levels deep")
    return RunRecipe.of(recipe)


def _best(text: Any) -> dict | None:
    best = _json(text, dict, nullable=True)
    if best is not None:
        missing = [m for m in BEST_METRICS if m not in best]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        for m in BEST_METRICS:
            _number(best[m])
    return best


def _status(text: Any) -> RunStatus:
    """The status column as a RunStatus (a value npuyolo never writes is a damaged row, not a traceback)."""
    try:
        return RunStatus(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a status npuyolo writes") from None


def _str_list(text: Any) -> list[str]:
    names = _json(text, list)
    if not all(isinstance(n, str) for n in names):
        raise ValueError("not a list of names")
    return names


def _extra(text: Any) -> dict | None:
    extra = _json(text, dict, nullable=True)
    for v in (extra or {}).values():
        _number(v)
    return extra


@contextmanager
def _reading(what: str, column: str) -> Iterator[None]:
    """A column's value that does not parse is one DamagedRowError naming the row and the column."""
    try:
        yield
    except ValueError as e:
        why = " ".join(str(e).split())
        raise DamagedRowError(f"{what}: column {column} is damaged ({why[:120]}); fix or delete that row") from None


def _label(row) -> str:
    name = row["name"] if isinstance(row["name"], str) else repr(row["name"])
    return f"run {row['id']} ({name[:60]})"


class NameTakenError(RegistryError):
    """A run name already in the registry (`name` says which): callers that chose the name say what to do instead."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def validate_run_name(name: str) -> str:
    """A run name a user chose: readable (any script), one line, not mistakable for an id or a path trick."""
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise RegistryError("name must not be empty", param="name")
    if len(name) > MAX_NAME_CHARS:
        raise RegistryError(f"name is {len(name)} characters; at most {MAX_NAME_CHARS}", param="name")
    if name.isdigit() or name.startswith("#"):
        raise RegistryError(f"name {name!r} would read as a run id; names need a non-digit and must not start with '#'", param="name")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise RegistryError("name must not contain control characters", param="name")

    if NAME_RE.match(name) or HYBRID_RE.match(name):
        raise RegistryError(f"name {name!r} reads as a variant name (an untrained model); add something, e.g. {name}-run", param="name")
    return name


@dataclass
class Artifact:
    kind: str
    path: str
    meta: dict | None
    created_at: str


@dataclass
class RunRecord:
    """One run as recorded; `artifact(kind)` is the one lookup for its files (latest of a kind wins)."""

    id: int
    name: str
    variant: str
    series: str | None
    status: RunStatus
    recipe: RunRecipe
    data_path: str
    data_hash: str
    class_names: list[str]
    weights_source: str | None
    weights_transferred: str | None
    device: str | None
    versions: dict
    save_dir: str | None
    started_at: str
    ended_at: str | None
    duration_s: float | None
    best: dict | None
    pid: int | None
    pid_started: str | None
    host: str | None
    error: str | None
    amp: bool | None = None  # trained with mixed precision (None: not recorded)
    epochs: list[EpochRow] = field(default_factory=list)
    artifacts: list[Artifact] = field(default_factory=list)

    def artifact(self, kind: str) -> Artifact | None:
        found = [a for a in self.artifacts if a.kind == kind]
        return found[-1] if found else None

    def artifact_path(self, *kinds: str) -> Path | None:
        """The first of `kinds` whose latest artefact is on disk (e.g. 'weights/best', 'weights/last')."""
        for kind in kinds:
            a = self.artifact(kind)
            if a is not None and Path(a.path).is_file():
                return Path(a.path)
        return None

    def as_dict(self) -> dict:
        return {**asdict(self), "recipe": self.recipe.as_dict(), "epochs": [e.as_dict() for e in self.epochs]}


@dataclass(frozen=True)
class RunSummary:
    """A line of `runs()`: what `npuyolo runs` lists (the latest epoch's mAP, the epochs recorded)."""

    id: int
    name: str
    variant: str
    series: str | None
    status: RunStatus
    started_at: str
    duration_s: float | None
    save_dir: str | None
    epochs: int
    map50: float | None
    map50_95: float | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NpuCheckRow:
    """The latest `npu check` of one model on one target."""

    id: int
    run_id: int | None
    model_ref: str
    onnx_path: str
    target: str
    head: str | None
    share_nodes: float
    share_nodes_fused: float
    share_macs: float
    partitions_npu: int
    partitions_host: int
    transitions: int
    report: dict  # the whole TargetReport, as recorded
    created_at: str


@dataclass(frozen=True)
class CompilerRunRow:
    """The latest compile of one model by one vendor compiler for one target."""

    id: int
    run_id: int | None
    model_ref: str
    onnx_path: str
    compiler: str
    version: str
    target: str
    log_path: str
    result: dict  # the CompileResult, as recorded
    created_at: str


@dataclass(frozen=True)
class DeployEvalRow:
    """One scored artefact of a run (a .pt, an FP32 or INT8 ONNX file, a vendor-compiled model)."""

    id: int
    run_id: int | None
    artefact: str
    precision_kind: str  # pt | fp32 | int8 | rknn | tflite
    map50: float
    map50_95: float
    precision: float
    recall: float
    result: dict
    created_at: str


@dataclass(frozen=True)
class SeriesMember:
    variant: str
    run_id: int | None
    status: RunStatus | None  # None: not started


@dataclass(frozen=True)
class SeriesRecord:
    name: str
    spec: dict
    created_at: str
    members: list[SeriesMember]


def _row(cls, r: sqlite3.Row, **extra: Any):
    """A typed row from a SQLite row: the class's fields that are columns, plus `extra` (decoded JSON)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: r[k] for k in r.keys() if k in names}, **extra)


def _is_io_error(e: sqlite3.DatabaseError) -> bool:
    return (getattr(e, "sqlite_errorname", None) or "").startswith("SQLITE_IOERR") or "disk I/O error" in str(e)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def process_started(pid: int) -> str | None:
    """Kernel start time of a process (Linux), so a recycled pid is not mistaken for a live run."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int | None, started: str | None) -> bool:
    if not pid:
        return False
    if not _is(pid, _INT):  # a damaged row (text in its pid): nothing to tell, so nothing is reaped
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return started is None or process_started(pid) in (None, started)


class Registry:
    """The run registry. `readonly=True` never writes (no file created, no migration, no reaping), for read commands;
    `create=False` writes to an existing registry only (a command that adds to runs, never starts a registry)."""

    def __init__(self, path: str | Path | None = None, readonly: bool = False, create: bool = True):
        self.path = (Path(path) if path else default_path()).resolve()
        self.readonly = readonly
        if self.path.is_dir():
            raise RegistryError(f"{self.path} is a folder; `registry` names the SQLite file (e.g. runs/npuyolo.db)")
        if self.path.exists() and not self.path.is_file():  # /dev/null, a FIFO: SQLite would write <path>-journal beside it
            raise RegistryError(f"{self.path} is not a regular file; `registry` names the SQLite file (e.g. runs/npuyolo.db)")
        if (readonly or not create) and not self.path.is_file():
            raise RegistryError(f"no registry at {self.path}: nothing recorded there yet (a mistyped `registry`?)")
        if readonly:
            self.conn = self._open_readonly()
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RegistryError(f"cannot create the registry folder {self.path.parent}: {e.strerror or e}") from e
            self.conn = self._connect(str(self.path))
            with self._storage_errors():
                self._enable_wal()
                self._migrate()
                self.reap_dead_runs()
        self.root = self.path.parent

    def _enable_wal(self, patience_s: float = 30.0) -> None:
        """WAL mode, waiting for other openers: SQLite answers "database is locked" at once, without its busy
        timeout, when several connections switch a new file's journal mode together (seen with six processes)."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(target, timeout=30, isolation_level=None, uri=uri)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # fails here on a file that is not SQLite
        except sqlite3.DatabaseError as e:
            said = self._disk_full(e) or (f"registry {self.path}: {e}" if _is_io_error(e) else None)
            raise RegistryError(said or f"{self.path}: not an npuyolo registry ({e})") from e
        return conn

    def _disk_full(self, e: sqlite3.DatabaseError) -> str | None:
        """'disk full' when SQLite says so, or says 'disk I/O error' (growing its -shm failed) on a full file system."""
        if getattr(e, "sqlite_errorname", None) == "SQLITE_FULL" or "disk is full" in str(e) or (_is_io_error(e) and out_of_space(self.path)):
            return f"registry {self.path}: disk full; free some space on its file system and retry"
        return None

    def _open_readonly(self) -> sqlite3.Connection:
        wal = Path(f"{self.path}-wal")
        if wal.exists():  # a writer is active (or died): read through its WAL; the -shm beside it already exists
            conn = self._connect(f"{self.path.as_uri()}?mode=ro", uri=True)
        else:  # nothing pending in a WAL: read the file as it is, creating no -wal/-shm beside it (read-only media too)
            conn = self._connect(f"{self.path.as_uri()}?mode=ro&immutable=1", uri=True)
        version = self._check_version(conn)
        if version < SCHEMA_VERSION:  # an older registry: upgrade a private in-memory copy, leave the file as it is
            memory = sqlite3.connect(":memory:", isolation_level=None)
            conn.backup(memory)
            conn.close()
            memory.row_factory = sqlite3.Row
            self.conn = memory
            self._migrate()
            return memory
        return conn

    def _check_version(self, conn: sqlite3.Connection) -> int:
        with self._storage_errors():
            # one statement, so one snapshot: read apart, another opener could commit the schema between the two
            # reads (version 0, yet tables), and a registry being created would look like a foreign SQLite file
            rows = conn.execute("SELECT u.user_version, m.name FROM pragma_user_version AS u"
                                " LEFT JOIN sqlite_master AS m ON m.type = 'table'").fetchall()
            version, tables = rows[0][0], {r[1] for r in rows if r[1] is not None}
        if version < 0 or version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path} has schema version {version}; this npuyolo knows 0..{SCHEMA_VERSION}"
                                + ("; Upgrade npuyolo to read it" if version > SCHEMA_VERSION else " (not written by npuyolo)"))
        if (version == 0 and tables) or (version > 0 and "runs" not in tables):
            raise RegistryError(f"{self.path} is an SQLite file but not an npuyolo registry (tables: {', '.join(sorted(tables)) or 'none'})")
        return version

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        """Full disk, read-only file, corrupt database: one line naming the file instead of a traceback."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            full = self._disk_full(e)
            if full or any(m in str(e) for m in _STORAGE_ERRORS):
                raise RegistryError(full or f"registry {self.path}: {e}") from e
            raise

    # -- plumbing -------------------------------------------------------------------------------------
    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        if self.readonly and self.conn.execute("PRAGMA database_list").fetchone()["file"]:
            raise RegistryError(f"registry {self.path} was opened read-only")
        with self._storage_errors():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Create or upgrade the schema in one exclusive transaction.

        Several processes or threads may open a registry that does not exist yet (two trains on a new file, a series'
        members, API threads): the first to take the write lock (BEGIN IMMEDIATE) creates every table; the others wait
        for it, then read user_version again inside their own transaction and find nothing left to do.
        """
        if self._check_version(self.conn) >= SCHEMA_VERSION:
            return
        with self.tx() as c:
            version = self._check_version(c)  # again, under the lock: another opener may have migrated meanwhile
            for v in range(version, SCHEMA_VERSION):
                if MIGRATIONS[v].startswith("status:"):  # a status value added to runs' CHECK constraint
                    status = MIGRATIONS[v].split(":", 1)[1]
                    try:
                        widen_status_check(c, status)
                    except ValueError:
                        if not self.readonly:  # reading needs no new status: read commands still list
                            raise RegistryError(f"registry {self.path}: its runs table's status CHECK constraint is not "
                                                f"the one npuyolo writes, so the {status!r} status cannot be added; "
                                                "read commands still work, copy the runs to a new registry to write") from None
                else:
                    for statement in MIGRATIONS[v].split(";"):
                        if statement.strip():
                            c.execute(statement)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    # -- runs -----------------------------------------------------------------------------------------
    def _dead(self, row) -> bool:
        return row["status"] == RunStatus.RUNNING and row["host"] == socket.gethostname() and not process_alive(row["pid"], row["pid_started"])

    def reap_dead_runs(self) -> list[int]:
        """Mark 'running' runs whose process on this host is gone as interrupted (e.g. after SIGKILL)."""
        rows = self.conn.execute("SELECT id, status, pid, pid_started, host FROM runs WHERE status = ?",
                                 (RunStatus.RUNNING.value,)).fetchall()
        dead = [r["id"] for r in rows if self._dead(r)]
        for run_id in dead:
            self.set_status(run_id, RunStatus.INTERRUPTED, error="process ended without closing the run (killed?)")
        return dead

    def unique_name(self, base: str, conn: sqlite3.Connection | None = None) -> str:
        """`base`, or `base-2`, `base-3`... when a run already has that name (re-runs, auto-names)."""
        c = conn or self.conn
        taken = {r[0] for r in c.execute("SELECT name FROM runs WHERE name = ? OR name LIKE ?", (base, f"{base}-%"))}
        if base not in taken:
            return base
        return next(f"{base}-{i}" for i in range(2, len(taken) + 3) if f"{base}-{i}" not in taken)

    def create_run(self, *, name: str | None, variant: str, recipe: dict, data_path: str, data_hash: str,
                   class_names: list[str], weights_source: str | None, device: str, versions: dict,
                   series: str | None = None) -> int:
        """Insert a run and claim its own folder `train/<id>-<name>` (never shared with another run)."""
        if name is not None:
            name = validate_run_name(name)
        with self.tx() as c:
            if name and c.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone():
                raise NameTakenError(f"a run named {name!r} already exists in {self.path}; choose another `name`", name)
            cur = c.execute(
                "INSERT INTO runs (name, variant, series, status, recipe_json, data_path, data_hash, class_names,"
                " weights_source, device, versions_json, started_at, pid, pid_started, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name or f"#pending-{os.getpid()}-{now()}", variant, series, RunStatus.RUNNING.value, json.dumps(recipe, sort_keys=True),
                 data_path, data_hash, json.dumps(class_names), weights_source, device, json.dumps(versions, sort_keys=True),
                 now(), os.getpid(), process_started(os.getpid()), socket.gethostname()),
            )
            run_id = cur.lastrowid
            if not name:
                name = self.unique_name(f"{variant}-{run_id}", c)
                c.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id))
            save_dir = claim_dir(self.root / "train", f"{run_id}-{slug(name)}")
            c.execute("UPDATE runs SET save_dir = ? WHERE id = ?", (str(save_dir), run_id))
        return run_id

    def import_run(self, *, name: str, variant: str, recipe: dict, data_path: str, data_hash: str, class_names: list[str],
                   device: str | None, versions: dict, epochs: list[dict], best: dict | None,
                   artifacts: list[tuple[str, Path, dict | None]] = ()) -> int:
        """A finished run recorded elsewhere (a committed run.json) added whole, in one transaction: every value is
        checked as `get_run` reads it back first, so a bad one leaves nothing behind (no interrupted row whose name
        then blocks the next try)."""
        name = validate_run_name(name)
        if not isinstance(variant, str) or not (NAME_RE.match(variant) or HYBRID_RE.match(variant)):
            raise RegistryError(f"run {name}: variant {str(variant)[:40]!r} is not a variant name")
        if not isinstance(data_path, str) or not isinstance(data_hash, str) or not (device is None or isinstance(device, str)):
            raise RegistryError(f"run {name}: data_path, data_hash and device must be text")
        if not isinstance(epochs, list) or not all(isinstance(e, dict) and _is(e.get("epoch"), _INT) for e in epochs):
            raise RegistryError(f"run {name}: epochs must be a list of epoch records, each with its epoch number")
        label = f"run {name}"
        as_json = {"recipe_json": json.dumps(recipe), "class_names": json.dumps(class_names), "versions_json": json.dumps(versions),
                   "best_json": json.dumps(best) if best is not None else None}
        self._check_run_row({**as_json, "name": name, "variant": variant, "status": RunStatus.FINISHED, "started_at": now()}, label)
        rows = []
        for e in epochs:
            row = {"epoch": e.get("epoch"), **{k: e.get(k) for k in EPOCH_FIELDS}}
            for k, v in row.items():
                with _reading(label, f"epochs.{k} (epoch {e.get('epoch')!r})"):
                    _number(v, integer=k == "epoch")
            with _reading(label, f"epochs.extra (epoch {e.get('epoch')!r})"):
                extra = _extra(json.dumps(e["extra"]) if e.get("extra") is not None else None)
            rows.append((row, extra))
        duration = sum(r["epoch_time_s"] or 0.0 for r, _ in rows)
        with self.tx() as c:
            if c.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone():
                raise NameTakenError(f"a run named {name!r} already exists in {self.path}", name)
            run_id = c.execute(
                "INSERT INTO runs (name, variant, status, recipe_json, data_path, data_hash, class_names, weights_source,"
                " device, versions_json, started_at, ended_at, duration_s, best_json) VALUES (?, ?, ?, ?, ?, ?, ?,"
                " NULL, ?, ?, ?, ?, ?, ?)",
                (name, variant, RunStatus.FINISHED.value, as_json["recipe_json"], data_path, data_hash, as_json["class_names"], device,
                 as_json["versions_json"], now(), now(), duration, as_json["best_json"])).lastrowid
            for row, extra in rows:
                c.execute(f"INSERT INTO epochs (run_id, epoch, {', '.join(EPOCH_FIELDS)}, extra_json, recorded_at)"
                          f" VALUES (?, ?, {', '.join('?' * len(EPOCH_FIELDS))}, ?, ?)",
                          (run_id, row["epoch"], *(row[k] for k in EPOCH_FIELDS), json.dumps(extra) if extra else None, now()))
            for kind, path, meta in artifacts:
                c.execute("INSERT INTO artifacts (run_id, kind, path, meta_json, created_at) VALUES (?, ?, ?, ?, ?)",
                          (run_id, kind, str(path), json.dumps(meta) if meta else None, now()))
            save_dir = claim_dir(self.root / "train", f"{run_id}-{slug(name)}")
            c.execute("UPDATE runs SET save_dir = ? WHERE id = ?", (str(save_dir), run_id))
        return run_id

    def run_dir(self, run: RunRecord, *parts: str) -> Path:
        """A folder inside the run's own folder (created), e.g. `run_dir(run, "deploy")`.

        Run folders live under the registry's folder; a recorded `save_dir` elsewhere (an edited registry) is refused
        rather than written into.
        """
        return make_dir(self.run_path(run, *parts))

    def run_path(self, run: RunRecord, *parts: str) -> Path:
        """`run_dir` without creating it: where another run's files are read from (never written)."""
        base = Path(run.save_dir) if run.save_dir else self.root / "train" / f"{run.id}-{slug(run.name)}"
        try:
            safe_join(self.root, base)
        except UnsafePathError:
            raise RegistryError(f"run {run.name}'s folder {base} is outside the registry's folder {self.root}; "
                                "not writing there (was the registry edited or moved?)") from None
        return safe_join(base, *parts)

    def output_dir(self, *parts: str) -> Path:
        """A folder under the registry's folder for outputs that belong to no run (series reports, variant checks)."""
        return make_dir(safe_join(self.root, *parts))

    def update_run(self, run_id: int, **fields: Any) -> None:
        """Set columns of one run; a name that is not a column of the runs table is refused before any SQL is built."""
        if not fields:
            return
        unknown = sorted(set(fields) - RUN_COLUMNS)
        if unknown:
            raise RegistryError(f"update_run: no runs column named {unknown[0][:60]!r}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def claim_run(self, run_id: int) -> None:
        """This process now owns the run (resume): status back to running, new pid."""
        self.update_run(run_id, status=RunStatus.RUNNING, ended_at=None, error=None, pid=os.getpid(),
                        pid_started=process_started(os.getpid()), host=socket.gethostname())

    def set_status(self, run_id: int, status: RunStatus | str, error: str | None = None) -> None:
        status = RunStatus(status)  # an unknown status is a bug here, not a CHECK failure in SQLite
        run = self.conn.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        if run is None:
            raise RegistryError(f"no run {run_id}")
        ended = now()
        duration = self.conn.execute("SELECT SUM(epoch_time_s) FROM epochs WHERE run_id = ?", (run_id,)).fetchone()[0]
        self.update_run(run_id, status=status, ended_at=ended, error=error, pid=None,
                        duration_s=duration if duration is not None else 0.0)

    def record_epoch(self, run_id: int, epoch: int, extra: dict | None = None, **values: float | None) -> None:
        unknown = set(values) - set(EPOCH_FIELDS)
        if unknown:
            raise ValueError(f"unknown epoch fields {sorted(unknown)}")
        row = {k: values.get(k) for k in EPOCH_FIELDS}
        with self.tx() as c:
            c.execute(
                f"INSERT OR REPLACE INTO epochs (run_id, epoch, {', '.join(EPOCH_FIELDS)}, extra_json, recorded_at)"
                f" VALUES (?, ?, {', '.join('?' * len(EPOCH_FIELDS))}, ?, ?)",
                (run_id, epoch, *row.values(), json.dumps(extra) if extra else None, now()),
            )

    def truncate_epochs(self, run_id: int, keep_upto: int) -> int:
        """Drop epochs after `keep_upto` (their weights were never checkpointed; a resume redoes them)."""
        with self.tx() as c:
            return c.execute("DELETE FROM epochs WHERE run_id = ? AND epoch > ?", (run_id, keep_upto)).rowcount

    def add_artifact(self, run_id: int, kind: str, path: str | Path, meta: dict | None = None) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO artifacts (run_id, kind, path, meta_json, created_at) VALUES (?, ?, ?, ?, ?)",
                      (run_id, kind, str(path), json.dumps(meta) if meta else None, now()))

    def resolve(self, ref: str | int) -> int:
        """A run id from `7`, `#7` (ids) or a name; names never consist of digits alone, so the two cannot clash.

        Names are looked up NFC-normalised, as validate_run_name stores them (a name typed in decomposed Unicode
        is the same name). Only ASCII digits make an id ('²' is a digit to str.isdigit but not to int), and an id
        beyond SQLite's 64-bit range is simply not there.
        """
        ref = unicodedata.normalize("NFC", str(ref)).strip()
        digits = ref[1:] if ref.startswith("#") else ref
        if digits.isascii() and digits.isdigit():
            run_id = int(digits)
            row = self.conn.execute("SELECT id FROM runs WHERE id = ?", (run_id,)).fetchone() if run_id < 2 ** 63 else None
        else:
            row = self.conn.execute("SELECT id FROM runs WHERE name = ?", (ref,)).fetchone()
        ref = ref if len(ref) <= 60 else ref[:57] + "..."
        if row is None:
            raise RegistryError(f"no run {ref!r} in {self.path}; `npuyolo runs` lists them")
        return row["id"]

    def get_run(self, ref: str | int) -> RunRecord:
        """The run, every column checked as it is read: a damaged one is a DamagedRowError naming the run and column."""
        run_id = self.resolve(ref)
        row = dict(self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
        label = _label(row)
        parsed = self._check_run_row(row, label)
        if self.readonly and self._dead(row):
            parsed["status"], row["error"] = RunStatus.INTERRUPTED, "process ended without closing the run (killed?)"
        artifacts = []
        for a in self.conn.execute("SELECT kind, path, meta_json, created_at FROM artifacts WHERE run_id = ? ORDER BY rowid", (run_id,)):
            with _reading(label, "artifacts.meta_json"):
                meta = _json(a["meta_json"] or None, dict, nullable=True)
            artifacts.append(Artifact(a["kind"], a["path"], meta or None, a["created_at"]))
        return RunRecord(
            id=row["id"], name=row["name"], variant=row["variant"], series=row["series"], status=parsed["status"],
            recipe=parsed["recipe_json"], data_path=row["data_path"], data_hash=row["data_hash"],
            class_names=parsed["class_names"], weights_source=row["weights_source"],
            weights_transferred=row["weights_transferred"], device=row["device"], versions=parsed["versions_json"],
            save_dir=row["save_dir"], started_at=row["started_at"], ended_at=row["ended_at"], duration_s=row["duration_s"],
            best=parsed["best_json"], pid=row["pid"], pid_started=row["pid_started"],
            host=row["host"], error=row["error"], amp=None if row.get("amp") is None else bool(row["amp"]),
            epochs=self.epochs(run_id, label), artifacts=artifacts)

    @staticmethod
    def _check_run_row(row: dict, label: str) -> dict[str, Any]:
        """The runs row's JSON columns parsed and its numeric ones checked (SQLite stores any text in a REAL column)."""
        parsed: dict[str, Any] = {}
        for column, parse in (("recipe_json", _recipe), ("class_names", _str_list), ("best_json", lambda t: _best(t or None)),
                              ("versions_json", lambda t: _json(t, dict))):
            with _reading(label, column):
                parsed[column] = parse(row[column])
        for column, integer in (("duration_s", False), ("pid", True), ("amp", True)):
            with _reading(label, column):
                _number(row.get(column), integer)
        for column in ("name", "variant", "status", "started_at"):
            if not isinstance(row.get(column), str):
                raise DamagedRowError(f"{label}: column {column} is damaged (not text); fix or delete that row")
        with _reading(label, "status"):
            parsed["status"] = _status(row["status"])
        return parsed

    def epochs(self, run_id: int, label: str | None = None) -> list[EpochRow]:
        rows = self.conn.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)).fetchall()
        label = label or f"run {run_id}"
        out = []
        for r in rows:
            for k in ("epoch", *EPOCH_FIELDS):
                with _reading(label, f"epochs.{k} (epoch {r['epoch']!r})"):
                    _number(r[k], integer=k == "epoch")
            with _reading(label, f"epochs.extra_json (epoch {r['epoch']})"):
                extra = _extra(r["extra_json"] or None)
            out.append(EpochRow(r["epoch"], *(r[k] for k in EPOCH_FIELDS), extra=extra))
        return out

    def runs(self, series: str | None = None) -> list[RunSummary]:
        """Every readable run (a damaged row is left out; `runs_checked` also says which and why)."""
        return self.runs_checked(series)[0]

    def runs_checked(self, series: str | None = None) -> tuple[list[RunSummary], list[str]]:
        """The runs' summaries, and one line per damaged row (the run and the column) instead of its summary."""
        good, damaged = [], []
        for summary in self._runs(series):
            if isinstance(summary, str):
                damaged.append(summary)
            else:
                good.append(summary)
        return good, damaged

    def _runs(self, series: str | None = None) -> list[RunSummary | str]:
        q = ("SELECT r.id, r.name, r.save_dir, r.pid, r.pid_started, r.host, r.variant, r.series, r.status, r.started_at, r.duration_s,"
             " (SELECT COUNT(*) FROM epochs e WHERE e.run_id = r.id) AS epochs,"
             " (SELECT map50 FROM epochs e WHERE e.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS map50,"
             " (SELECT map50_95 FROM epochs e WHERE e.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS map50_95"
             " FROM runs r")
        args: tuple = ()
        if series:
            q += " WHERE r.series = ?"
            args = (series,)
        rows = [dict(r) for r in self.conn.execute(q + " ORDER BY r.id", args)]
        out: list[RunSummary | str] = []
        for r in rows:
            try:
                for column, integer in (("duration_s", False), ("pid", True), ("map50", False), ("map50_95", False)):
                    with _reading(_label(r), column if column in ("duration_s", "pid") else f"epochs.{column}"):
                        _number(r[column], integer)
                for column in ("name", "variant", "status", "started_at"):
                    if not isinstance(r[column], str):
                        raise DamagedRowError(f"{_label(r)}: column {column} is damaged (not text); fix or delete that row")
                with _reading(_label(r), "status"):
                    r["status"] = _status(r["status"])
            except DamagedRowError as e:
                out.append(str(e))
                continue
            if self.readonly and self._dead(r):  # show what reaping would record, without writing it
                r["status"] = RunStatus.INTERRUPTED
            for k in ("pid", "pid_started", "host"):
                del r[k]
            out.append(RunSummary(**r))
        return out

    # -- NPU checks -----------------------------------------------------------------------------------
    def add_npu_check(self, *, run_id: int | None, model_ref: str, onnx_path: str, head: str | None, report: dict) -> int:
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO npu_checks (run_id, model_ref, onnx_path, target, head, share_nodes, share_nodes_fused, share_macs,"
                " partitions_npu, partitions_host, transitions, report_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, model_ref, onnx_path, report["target"], head, report["share_nodes"], report["share_nodes_fused"],
                 report["share_macs"], report["partitions_npu"], report["partitions_host"], report["transitions"],
                 json.dumps(report), now()))
            return cur.lastrowid

    def npu_checks(self, run_id: int | None = None, model_ref: str | None = None) -> list[NpuCheckRow]:
        """Latest check per target for a run (or a model reference), report included."""
        where, args = ("run_id = ?", (run_id,)) if run_id is not None else ("model_ref = ?", (model_ref,))
        rows = self.conn.execute(
            f"SELECT * FROM npu_checks WHERE id IN (SELECT MAX(id) FROM npu_checks WHERE {where} GROUP BY target) ORDER BY target", args)
        return [_row(NpuCheckRow, r, report=json.loads(r["report_json"])) for r in rows]

    # -- vendor compiler runs (referees) ------------------------------------------------------------------
    def add_compiler_run(self, *, run_id: int | None, model_ref: str, onnx_path: str, compiler: str, version: str, target: str,
                         log_path: str, result: dict) -> int:
        with self.tx() as c:
            return c.execute(
                "INSERT INTO compiler_runs (run_id, model_ref, onnx_path, compiler, version, target, log_path, result_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, model_ref, onnx_path, compiler, version, target, log_path, json.dumps(result), now())).lastrowid

    def compiler_runs(self, run_id: int | None = None, model_ref: str | None = None) -> list[CompilerRunRow]:
        """Latest compile per (compiler, target) for a run (or a model reference), result included."""
        where, args = ("run_id = ?", (run_id,)) if run_id is not None else ("model_ref = ?", (model_ref,))
        rows = self.conn.execute(
            f"SELECT * FROM compiler_runs WHERE id IN (SELECT MAX(id) FROM compiler_runs WHERE {where} GROUP BY compiler, target)"
            " ORDER BY target", args)
        return [_row(CompilerRunRow, r, result=json.loads(r["result_json"])) for r in rows]

    # -- deployment evaluations ---------------------------------------------------------------------------
    def add_deploy_eval(self, *, run_id: int | None, artefact: str, precision_kind: str, result: dict) -> int:
        with self.tx() as c:
            return c.execute(
                "INSERT INTO deploy_evals (run_id, artefact, precision_kind, map50, map50_95, precision, recall, result_json,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, artefact, precision_kind, result["map50"], result["map50_95"], result["precision"], result["recall"],
                 json.dumps(result), now())).lastrowid

    def deploy_evals(self, run_id: int) -> list[DeployEvalRow]:
        rows = self.conn.execute("SELECT * FROM deploy_evals WHERE run_id = ? ORDER BY id", (run_id,))
        return [_row(DeployEvalRow, r, result=json.loads(r["result_json"])) for r in rows]

    def artifact_run(self, path: str | Path) -> int | None:
        row = self.conn.execute("SELECT run_id FROM artifacts WHERE path = ? ORDER BY created_at DESC", (str(Path(path).resolve()),)).fetchone()
        return row["run_id"] if row else None

    # -- series ---------------------------------------------------------------------------------------
    def upsert_series(self, name: str, spec: dict) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO series (name, spec_json, created_at) VALUES (?, ?, ?)"
                      " ON CONFLICT(name) DO UPDATE SET spec_json = excluded.spec_json", (name, json.dumps(spec, sort_keys=True), now()))
            for variant in spec["variants"]:
                c.execute("INSERT OR IGNORE INTO series_members (series, variant) VALUES (?, ?)", (name, variant))

    def set_series_member(self, series: str, variant: str, run_id: int) -> None:
        with self.tx() as c:
            c.execute("UPDATE series_members SET run_id = ? WHERE series = ? AND variant = ?", (run_id, series, variant))

    def series(self, name: str) -> SeriesRecord:
        row = self.conn.execute("SELECT * FROM series WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = [r[0] for r in self.conn.execute("SELECT name FROM series ORDER BY name")]
            raise RegistryError(f"no series {name!r}" + (f"; known: {', '.join(known)}" if known else "; none recorded yet"))
        members = []
        for r in self.conn.execute("SELECT m.variant, m.run_id, r.name, r.status FROM series_members m"
                                   " LEFT JOIN runs r ON r.id = m.run_id WHERE m.series = ?", (name,)):
            with _reading(f"series {name!r}: run {r['run_id']} ({r['name']})", "status"):
                members.append(SeriesMember(r["variant"], r["run_id"], None if r["status"] is None else _status(r["status"])))
        with _reading(f"series {name!r}", "spec_json"):
            spec = _json(row["spec_json"], dict)
        return SeriesRecord(name, spec, row["created_at"], members)
