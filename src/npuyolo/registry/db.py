"""The run registry: one SQLite file, every write in a transaction, dead runs found on open."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from npuyolo.registry.schema import MIGRATIONS, SCHEMA_VERSION

DEFAULT_PATH = Path("runs") / "npuyolo.db"
EPOCH_FIELDS = ("box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95", "lr", "epoch_time_s")


class RegistryError(LookupError):
    """A run or series that is not in the registry, or a registry newer than this code."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def default_path() -> Path:
    return Path(os.environ.get("NPUYOLO_REGISTRY") or DEFAULT_PATH)


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
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or process_started(pid) in (None, started)


class Registry:
    def __init__(self, path: str | Path | None = None):
        self.path = (Path(path) if path else default_path()).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self._migrate()
        self.reap_dead_runs()

    # -- plumbing -------------------------------------------------------------------------------------
    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RegistryError(f"{self.path} has schema v{version}; this npuyolo knows up to v{SCHEMA_VERSION}. Upgrade npuyolo.")
        for v in range(version, SCHEMA_VERSION):
            with self.tx() as c:
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(f"PRAGMA user_version = {v + 1}")

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    # -- runs -----------------------------------------------------------------------------------------
    def reap_dead_runs(self) -> list[int]:
        """Mark 'running' runs whose process on this host is gone as interrupted (e.g. after SIGKILL)."""
        host = socket.gethostname()
        rows = self.conn.execute("SELECT id, pid, pid_started, host FROM runs WHERE status = 'running'").fetchall()
        dead = [r["id"] for r in rows if r["host"] == host and not process_alive(r["pid"], r["pid_started"])]
        for run_id in dead:
            self.set_status(run_id, "interrupted", error="process ended without closing the run (killed?)")
        return dead

    def unique_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`... when a run already has that name (re-runs of derived runs)."""
        taken = {r[0] for r in self.conn.execute("SELECT name FROM runs WHERE name = ? OR name LIKE ?", (base, f"{base}-%"))}
        if base not in taken:
            return base
        return next(f"{base}-{i}" for i in range(2, len(taken) + 3) if f"{base}-{i}" not in taken)

    def create_run(self, *, name: str | None, variant: str, recipe: dict, data_path: str, data_hash: str,
                   class_names: list[str], weights_source: str | None, device: str, versions: dict,
                   series: str | None = None) -> int:
        if name and self.conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone():
            raise RegistryError(f"a run named {name!r} already exists in {self.path}; choose another --name")
        with self.tx() as c:
            cur = c.execute(
                "INSERT INTO runs (name, variant, series, status, recipe_json, data_path, data_hash, class_names,"
                " weights_source, device, versions_json, started_at, pid, pid_started, host)"
                " VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name or f"pending-{os.getpid()}-{now()}", variant, series, json.dumps(recipe, sort_keys=True),
                 data_path, data_hash, json.dumps(class_names), weights_source, device, json.dumps(versions, sort_keys=True),
                 now(), os.getpid(), process_started(os.getpid()), socket.gethostname()),
            )
            run_id = cur.lastrowid
            if not name:
                c.execute("UPDATE runs SET name = ? WHERE id = ?", (f"{variant}-{run_id}", run_id))
        return run_id

    def update_run(self, run_id: int, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def claim_run(self, run_id: int) -> None:
        """This process now owns the run (resume): status back to running, new pid."""
        self.update_run(run_id, status="running", ended_at=None, error=None, pid=os.getpid(),
                        pid_started=process_started(os.getpid()), host=socket.gethostname())

    def set_status(self, run_id: int, status: str, error: str | None = None) -> None:
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
        """A run id from an id or a name."""
        ref = str(ref)
        row = self.conn.execute("SELECT id FROM runs WHERE id = ? OR name = ?", (int(ref) if ref.isdigit() else -1, ref)).fetchone()
        if row is None:
            raise RegistryError(f"no run {ref!r} in {self.path}; `npuyolo runs` lists them")
        return row["id"]

    def run(self, ref: str | int) -> dict:
        run_id = self.resolve(ref)
        row = dict(self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())
        row["recipe"] = json.loads(row.pop("recipe_json"))
        row["versions"] = json.loads(row.pop("versions_json"))
        row["class_names"] = json.loads(row["class_names"])
        row["best"] = json.loads(row.pop("best_json")) if row["best_json"] else None
        row["epochs"] = self.epochs(run_id)
        row["artifacts"] = [
            {**dict(a), "meta": json.loads(a["meta_json"]) if a["meta_json"] else None}
            for a in self.conn.execute("SELECT kind, path, meta_json, created_at FROM artifacts WHERE run_id = ? ORDER BY created_at", (run_id,))
        ]
        for a in row["artifacts"]:
            a.pop("meta_json")
        return row

    def epochs(self, run_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)).fetchall()
        return [{**{k: r[k] for k in ("epoch", *EPOCH_FIELDS)}, **({"extra": json.loads(r["extra_json"])} if r["extra_json"] else {})}
                for r in rows]

    def runs(self, series: str | None = None) -> list[dict]:
        q = ("SELECT r.id, r.name, r.variant, r.series, r.status, r.started_at, r.duration_s,"
             " (SELECT COUNT(*) FROM epochs e WHERE e.run_id = r.id) AS epochs,"
             " (SELECT map50 FROM epochs e WHERE e.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS map50,"
             " (SELECT map50_95 FROM epochs e WHERE e.run_id = r.id ORDER BY epoch DESC LIMIT 1) AS map50_95"
             " FROM runs r")
        args: tuple = ()
        if series:
            q += " WHERE r.series = ?"
            args = (series,)
        return [dict(r) for r in self.conn.execute(q + " ORDER BY r.id", args)]

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

    def npu_checks(self, run_id: int | None = None, model_ref: str | None = None) -> list[dict]:
        """Latest check per target for a run (or a model reference), report included."""
        where, args = ("run_id = ?", (run_id,)) if run_id is not None else ("model_ref = ?", (model_ref,))
        rows = self.conn.execute(
            f"SELECT * FROM npu_checks WHERE id IN (SELECT MAX(id) FROM npu_checks WHERE {where} GROUP BY target) ORDER BY target", args)
        return [{**{k: r[k] for k in r.keys() if k != "report_json"}, "report": json.loads(r["report_json"])} for r in rows]

    # -- deployment evaluations ---------------------------------------------------------------------------
    def add_deploy_eval(self, *, run_id: int | None, artefact: str, precision_kind: str, result: dict) -> int:
        with self.tx() as c:
            return c.execute(
                "INSERT INTO deploy_evals (run_id, artefact, precision_kind, map50, map50_95, precision, recall, result_json,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, artefact, precision_kind, result["map50"], result["map50_95"], result["precision"], result["recall"],
                 json.dumps(result), now())).lastrowid

    def deploy_evals(self, run_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM deploy_evals WHERE run_id = ? ORDER BY id", (run_id,))
        return [{**{k: r[k] for k in r.keys() if k != "result_json"}, "result": json.loads(r["result_json"])} for r in rows]

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

    def series(self, name: str) -> dict:
        row = self.conn.execute("SELECT * FROM series WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = [r[0] for r in self.conn.execute("SELECT name FROM series ORDER BY name")]
            raise RegistryError(f"no series {name!r}" + (f"; known: {', '.join(known)}" if known else "; none recorded yet"))
        members = [dict(r) for r in self.conn.execute(
            "SELECT m.variant, m.run_id, r.status FROM series_members m LEFT JOIN runs r ON r.id = m.run_id WHERE m.series = ?", (name,))]
        return {"name": name, "spec": json.loads(row["spec_json"]), "created_at": row["created_at"], "members": members}
