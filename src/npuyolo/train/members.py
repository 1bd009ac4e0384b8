"""What every executor shares: a member to train (`MemberJob`), what the progress table shows of it (`MemberState`),
the table itself, and the executors' one error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from npuyolo.errors import NpuyoloError
from npuyolo.registry.schema import RunStatus
from npuyolo.train.trainer import PreparedRun

__all__ = ["QUEUED", "ExecutorError", "MemberJob", "MemberState", "progress_table"]

QUEUED: Literal["queued"] = "queued"  # a member not started yet: the one state shown that is no run status


class ExecutorError(NpuyoloError, RuntimeError):
    """An executor that cannot start (Ray absent, unreachable, too few resources) or members that failed."""


@dataclass
class MemberJob:
    """One series member to train: `prepare()` registers (or re-claims) its run on the driver."""

    variant: str
    action: str  # train | resume | skip
    prepare: Callable[[], PreparedRun]
    epochs: int
    run_id: int | None = None


@dataclass
class MemberState:
    """What the progress table shows for a member."""

    variant: str
    action: str
    epochs: int
    run_id: int | None = None
    status: RunStatus | Literal["queued"] = QUEUED
    epoch: int = 0
    map50: float | None = None
    epoch_times: list[float] = field(default_factory=list)
    attempt: int = 0
    error: str | None = None

    @property
    def eta_s(self) -> float | None:
        if not self.epoch_times or self.status != RunStatus.RUNNING:
            return None
        return sum(self.epoch_times) / len(self.epoch_times) * max(self.epochs - self.epoch, 0)


def progress_table(states: list[MemberState], title: str):
    """The live table of members (Rich), one row each: epoch, mAP50, ETA, status."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title))
    for col in ("member", "run", "epoch", "mAP50", "ETA", "status"):
        table.add_column(Text(col))
    colours = {RunStatus.FINISHED: "green", RunStatus.RUNNING: "cyan", RunStatus.FAILED: "red", RunStatus.INTERRUPTED: "yellow"}
    for s in states:
        eta = s.eta_s
        table.add_row(Text(s.variant), Text("-" if s.run_id is None else str(s.run_id)), Text(f"{s.epoch}/{s.epochs}"),
                      Text("-" if s.map50 is None else f"{s.map50:.3f}"),
                      Text("-" if eta is None else f"{eta:.0f} s"),
                      Text(s.status + (f" (retry {s.attempt})" if s.attempt else ""), style=colours.get(s.status, "")))
    return table

