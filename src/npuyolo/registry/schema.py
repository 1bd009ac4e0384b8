"""Registry schema as an ordered list of migrations; PRAGMA user_version holds how many have run. Also the typed
values of a run row that are not rows of their own: its status and its recipe."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

__all__ = ["MIGRATIONS", "RUN_COLUMNS", "SCHEMA_VERSION", "RunRecipe", "RunStatus", "widen_status_check"]


class RunStatus(str, Enum):
    """A run's status, stored as its text (the runs table's CHECK constraint lists the same values).

    A `str`: it compares equal to, and is stored as, the plain text ("finished" == RunStatus.FINISHED)."""

    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # the process ended without closing the run (killed, Ctrl-C, a deadline)
    STOPPED = "stopped"  # ended early on purpose by a scheduler (ASHA)

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass(frozen=True)
class RunRecipe:
    """The recipe a run recorded (train/recipe.py's `Recipe`, as it stood when the run trained), read back typed.

    Read as recorded, never re-filled: a setting the row lacks (a run recorded before npuyolo had that setting) is
    None here, not today's default, and a setting npuyolo no longer has is kept (`unknown()`), so `as_dict()` gives back
    the stored JSON whole. The registry checks the types of the settings a report reads when it reads the row
    (`registry.db.RECIPE_TYPES`: a wrong one is a damaged row). To train from it again, `Recipe.recorded(run)`
    applies today's checks and defaults (a refused setting is one RecipeError naming the run)."""

    epochs: int | None = None
    batch: int | None = None
    imgsz: int | None = None
    optimizer: str | None = None
    lr0: float | None = None
    lr_final: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    warmup_epochs: float | None = None
    seed: int | None = None
    deterministic: bool | None = None
    workers: int | None = None
    threads: int | None = None  # torch threads of a CPU run (None: every core, or not recorded)
    cache: str | bool | None = None
    patience: int | None = None
    close_mosaic: int | None = None
    device: str | None = None
    plots: bool | None = None
    fraction: float | None = None
    trackers: list[str] | None = None
    ultralytics: dict[str, Any] | None = None  # other Ultralytics train arguments (e.g. quantize: 8 for QAT)
    distill: dict[str, Any] | None = None  # a distillation run's teacher and loss weights (DistillConfig's fields)
    act_anneal: dict[str, Any] | None = None  # an annealed run's slope schedule
    stored: dict[str, Any] = field(default_factory=dict, repr=False)  # the recipe as the row holds it

    @classmethod
    def of(cls, recipe: dict[str, Any]) -> RunRecipe:
        """The typed view of a recorded recipe (a JSON object): its known settings as fields, the whole kept."""
        known = {k: v for k, v in recipe.items() if k in _RECIPE_FIELDS}
        return cls(**known, stored=copy.deepcopy(recipe))

    def as_dict(self) -> dict[str, Any]:
        """The recipe as recorded (a copy): the JSON of `runs show --json`, run.json and MLflow parameters."""
        return copy.deepcopy(self.stored)

    def unknown(self) -> dict[str, Any]:
        """Settings the row holds that this npuyolo does not know (removed since, or written by another tool)."""
        return {k: v for k, v in self.stored.items() if k not in _RECIPE_FIELDS}

    def __contains__(self, key: str) -> bool:
        """Whether the row recorded this setting (a missing one reads as None)."""
        return key in self.stored

    def get(self, key: str, default: Any = None) -> Any:
        """A setting by a name chosen at run time (`recipe.get(name)`); code that knows the name reads the field."""
        return self.stored.get(key, default)


_RECIPE_FIELDS = frozenset(f.name for f in fields(RunRecipe)) - {"stored"}


# the runs table's columns after every migration; `Registry.update_run` writes no other name into its SQL
RUN_COLUMNS = frozenset({"name", "variant", "series", "status", "recipe_json", "data_path", "data_hash", "class_names",
                         "weights_source", "weights_transferred", "device", "versions_json", "save_dir", "started_at",
                         "ended_at", "duration_s", "best_json", "pid", "pid_started", "host", "error", "amp"})

MIGRATIONS: list[str] = [
    # 1: runs, their epochs and artefacts; series and their members
    """
    CREATE TABLE runs (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL UNIQUE,
        variant       TEXT NOT NULL,
        series        TEXT,
        status        TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
        recipe_json   TEXT NOT NULL,
        data_path     TEXT NOT NULL,
        data_hash     TEXT NOT NULL,
        class_names   TEXT NOT NULL,
        weights_source TEXT,
        weights_transferred TEXT,
        device        TEXT,
        versions_json TEXT NOT NULL,
        save_dir      TEXT,
        started_at    TEXT NOT NULL,
        ended_at      TEXT,
        duration_s    REAL,
        best_json     TEXT,
        pid           INTEGER,
        pid_started   TEXT,
        host          TEXT,
        error         TEXT
    );
    CREATE TABLE epochs (
        run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        epoch      INTEGER NOT NULL,
        box_loss   REAL,
        cls_loss   REAL,
        dfl_loss   REAL,
        precision  REAL,
        recall     REAL,
        map50      REAL,
        map50_95   REAL,
        lr         REAL,
        epoch_time_s REAL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (run_id, epoch)
    );
    CREATE TABLE artifacts (
        run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
        kind       TEXT NOT NULL,
        path       TEXT NOT NULL,
        meta_json  TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (run_id, kind, path)
    );
    CREATE TABLE series (
        name       TEXT PRIMARY KEY,
        spec_json  TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE series_members (
        series   TEXT NOT NULL REFERENCES series(name) ON DELETE CASCADE,
        variant  TEXT NOT NULL,
        run_id   INTEGER REFERENCES runs(id),
        PRIMARY KEY (series, variant)
    );
    CREATE INDEX epochs_by_run ON epochs(run_id);
    """,
    # 2: NPU compatibility checks (per model and target), optionally tied to a run
    """
    CREATE TABLE npu_checks (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id       INTEGER REFERENCES runs(id) ON DELETE CASCADE,
        model_ref    TEXT NOT NULL,
        onnx_path    TEXT NOT NULL,
        target       TEXT NOT NULL,
        head         TEXT,
        share_nodes  REAL NOT NULL,
        share_nodes_fused REAL NOT NULL,
        share_macs   REAL NOT NULL,
        partitions_npu INTEGER NOT NULL,
        partitions_host INTEGER NOT NULL,
        transitions  INTEGER NOT NULL,
        report_json  TEXT NOT NULL,
        created_at   TEXT NOT NULL
    );
    CREATE INDEX npu_checks_by_run ON npu_checks(run_id, target);
    """,
    # 3: evaluations of deployed artefacts (FP32 / INT8 ONNX) with per-class metrics
    """
    CREATE TABLE deploy_evals (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      INTEGER REFERENCES runs(id) ON DELETE CASCADE,
        artefact    TEXT NOT NULL,
        precision_kind TEXT NOT NULL,
        map50       REAL NOT NULL,
        map50_95    REAL NOT NULL,
        precision   REAL NOT NULL,
        recall      REAL NOT NULL,
        result_json TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    """,
    # 4: per-epoch extra loss terms (e.g. distillation terms) as JSON
    """
    ALTER TABLE epochs ADD COLUMN extra_json TEXT;
    """,
    # 5: vendor compiler runs (referees): per-node placement, memory and the log file, per model and target
    """
    CREATE TABLE compiler_runs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id       INTEGER REFERENCES runs(id) ON DELETE CASCADE,
        model_ref    TEXT NOT NULL,
        onnx_path    TEXT NOT NULL,
        compiler     TEXT NOT NULL,
        version      TEXT NOT NULL,
        target       TEXT NOT NULL,
        log_path     TEXT NOT NULL,
        result_json  TEXT NOT NULL,
        created_at   TEXT NOT NULL
    );
    CREATE INDEX compiler_runs_by_run ON compiler_runs(run_id, target);
    """,
    # 6: whether the run trained with mixed precision (1/0; NULL: recorded before npuyolo kept it)
    """
    ALTER TABLE runs ADD COLUMN amp INTEGER;
    """,
    # 7: status 'stopped': a candidate an early-stopping scheduler (ASHA) ended before its budget
    "status:stopped",
]


_STATUS_CHECK = re.compile(r"CHECK\s*\(\s*status\s+IN\s*\(((?:\s*'[a-z]+'\s*,?)+)\)\s*\)", re.IGNORECASE)


def widen_status_check(conn, status: str) -> None:
    """Allow one more run status in runs' CHECK constraint, in place.

    SQLite cannot ALTER a CHECK constraint, and rebuilding `runs` would cascade-delete its epochs; SQLite documents
    editing the stored CREATE TABLE text instead (writable_schema, schema_version + 1) for changes that leave
    the stored rows valid, as adding an allowed value does. Runs inside the migration's transaction.
    """
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()[0]
    m = _STATUS_CHECK.search(sql)  # spacing aside (a registry edited or written by another tool), as npuyolo wrote it
    if m is None:
        raise ValueError("runs.status CHECK constraint not as expected")
    values = [v.strip().strip("'") for v in m.group(1).split(",") if v.strip()]
    if status in values:
        return
    widened = "CHECK (status IN (" + ", ".join(f"'{v}'" for v in [*values, status]) + "))"
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute("UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'runs'",
                     (sql[:m.start()] + widened + sql[m.end():],))
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")

SCHEMA_VERSION = len(MIGRATIONS)
