"""Ray Tune's ASHA over a series (`--scheduler asha`): members that fall behind at a rung are stopped early and
recorded `stopped`, with the weights they had."""

from __future__ import annotations

from collections.abc import Callable

from npuyolo.registry.db import Registry
from npuyolo.registry.schema import RunStatus
from npuyolo.train.members import QUEUED, ExecutorError, MemberJob, MemberState
from npuyolo.train.ray_executor import QueueSink, RayExecutor, RayOptions, _drainer, stop_reason
from npuyolo.train.records import RecordSink, RegistrySink, finish_run
from npuyolo.train.trainer import PreparedRun, train_into
from npuyolo.ultra import stdout_to_stderr

__all__ = ["ASHA_METRICS", "AshaExecutor", "tune_member"]


# what ASHA compares at each rung: (Ultralytics metric key, mode); val_loss = box + cls + dfl validation loss
ASHA_METRICS = {"map50_95": ("metrics/mAP50-95(B)", "max"), "map50": ("metrics/mAP50(B)", "max"), "val_loss": (None, "min")}


def _metric(trainer, metric: str) -> float:
    m = trainer.metrics or {}
    if metric == "val_loss":
        return float(sum(m.get(f"val/{k}_loss", 0.0) for k in ("box", "cls", "dfl")))
    return float(m.get(ASHA_METRICS[metric][0], 0.0))


class _ScheduledSink(RecordSink):
    """Passes records on; a run the scheduler stopped before its budget ends `stopped`, not `finished`."""

    def __init__(self, sink: RecordSink, budget: int, metric: str):
        self.sink, self.budget, self.metric = sink, budget, metric
        self.stopped_at: int | None = None

    def record_epoch(self, epoch, extra=None, **row):
        self.sink.record_epoch(epoch, extra=extra, **row)

    def update_run(self, **fields):
        self.sink.update_run(**fields)

    def add_artifact(self, kind, path, meta=None):
        self.sink.add_artifact(kind, path, meta)

    def set_status(self, status, error=None):
        if status == RunStatus.FINISHED and self.stopped_at is not None and self.stopped_at < self.budget:
            status, error = RunStatus.STOPPED, f"stopped early by ASHA after epoch {self.stopped_at} of {self.budget} ({self.metric} behind)"
        self.sink.set_status(status, error=error)


def tune_member(config: dict, queue=None, prepared: dict | None = None, metric: str = "map50_95") -> None:
    """Body of a Ray Tune trial: like `train_member`, and each trained epoch is also reported to Tune's scheduler.

    When the scheduler stops the trial, `tune.report` raises SystemExit in this thread; the trainer is told to stop
    after this epoch instead, so it ends as Ultralytics ends any run (final validation of best.pt, checkpoints closed).
    """
    from ray import tune


    run = prepared[config["member"]]
    sink = _ScheduledSink(QueueSink(queue, run.run_id, 0), int(run.recipe.epochs), metric)

    def report_epochs(trainer) -> None:
        trained = {"pending": False}

        def mark(t) -> None:
            trained["pending"] = True

        def report(t) -> None:  # after the registry callback: the epoch is on its way to the driver first
            if trained["pending"]:
                trained["pending"] = False
                try:
                    tune.report({"score": _metric(t, metric), "epoch": t.epoch + 1})
                except SystemExit:  # Tune's way of saying "stop this trial"
                    sink.stopped_at, t.stop = t.epoch + 1, True

        trainer.add_callback("on_train_epoch_end", mark)
        trainer.add_callback("on_fit_epoch_end", report)

    with stdout_to_stderr():
        train_into(run.build, sink, f"run {run.run_id}", on_trainer=report_epochs)


class AshaExecutor(RayExecutor):
    """Members as Ray Tune trials under ASHA: all start, the weak ones are stopped at a rung (after `grace_epochs`,
    then at grace x reduction_factor^k epochs) and recorded `stopped` with the epochs they reached.

    Ultralytics' own tuner does the same (`model.tune(use_ray=True)`); here each trial is a registered run whose
    records flow to the driver as with `RayExecutor`. A trial whose worker dies is recorded `interrupted` (no retry).
    """

    def __init__(self, options: RayOptions | None = None, grace_epochs: int = 1, metric: str = "map50_95",
                 reduction_factor: int = 2, on_progress: Callable[[list[MemberState]], None] | None = None):
        super().__init__(options, on_progress)
        if grace_epochs < 1:
            raise ExecutorError("grace_epochs must be at least 1", param="grace_epochs")
        if metric not in ASHA_METRICS:
            raise ExecutorError(f"asha_metric must be one of {', '.join(ASHA_METRICS)}, got {metric!r}", param="asha_metric")
        if reduction_factor < 2:
            raise ExecutorError("the ASHA reduction factor must be at least 2")
        self.grace_epochs, self.metric, self.reduction_factor = grace_epochs, metric, reduction_factor

    def run(self, registry: Registry, jobs: list[MemberJob], prepare_retry=None) -> list[MemberState]:
        import threading

        self.open()
        ray = self._ray
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler
        from ray.util.queue import Queue

        o = self.options
        states = [MemberState(j.variant, j.action, j.epochs, j.run_id, status=RunStatus.FINISHED if j.action == "skip" else QUEUED)
                  for j in jobs]
        todo = [(j, s) for j, s in zip(jobs, states) if j.action != "skip"]
        if not todo:
            self.close()
            return states
        by_run: dict[int, MemberState] = {}
        prepared: dict[str, PreparedRun] = {}
        members: dict[str, MemberState] = {}
        try:
            queue = Queue()
            for i, (job, state) in enumerate(todo):
                run = job.prepare()
                prepared[str(i)], members[str(i)] = run, state
                state.run_id, state.status = run.run_id, RunStatus.RUNNING
                state.epoch = len(registry.epochs(run.run_id))
                by_run[run.run_id] = state
            drain = _drainer(registry, queue, by_run)
            budget = max(s.epochs for s in members.values())
            # max_t one past the budget: a trial that trains its whole budget ends by returning (final validation,
            # artefacts, `finished`), never by the scheduler stopping it at its last epoch
            # rungs count trained epochs (reported "epoch"), so a candidate resumed from its checkpoint keeps its place
            scheduler = ASHAScheduler(time_attr="epoch", metric="score", mode=ASHA_METRICS[self.metric][1],
                                      max_t=budget + 1, grace_period=min(self.grace_epochs, budget),
                                      reduction_factor=self.reduction_factor)
            trainable = tune.with_resources(tune.with_parameters(tune_member, queue=queue, prepared=prepared, metric=self.metric),
                                            {"cpu": o.cpus_per_member, "gpu": o.gpus_per_member})
            tuner = tune.Tuner(
                trainable, param_space={"member": tune.grid_search(list(prepared))},
                tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=o.max_parallel, reuse_actors=False),
                run_config=tune.RunConfig(name=f"asha-{'-'.join(str(r.run_id) for r in prepared.values())}",
                                          storage_path=str(registry.root / "tune"), verbose=0,
                                          failure_config=tune.FailureConfig(max_failures=0)))
            outcome: dict = {}

            def fit() -> None:
                try:
                    outcome["grid"] = tuner.fit()
                except BaseException as e:  # re-raised in the driver's thread below
                    outcome["error"] = e

            thread = threading.Thread(target=fit, name="npuyolo-asha", daemon=True)
            thread.start()
            if self.on_progress:
                self.on_progress(states)
            while thread.is_alive():
                thread.join(0.5)
                if drain() and self.on_progress:
                    self.on_progress(states)
            drain()
            if "error" in outcome:
                raise outcome["error"]
            for result in outcome["grid"]:
                self._close_trial(registry, members[result.config["member"]], result.error)
        except BaseException as e:
            for state in members.values():
                if registry.get_run(state.run_id).status == RunStatus.RUNNING:
                    registry.set_status(state.run_id, RunStatus.INTERRUPTED, error=stop_reason(e))
                state.status = registry.get_run(state.run_id).status
            raise
        finally:
            self.close()
        if self.on_progress:
            self.on_progress(states)
        return states

    def _close_trial(self, registry: Registry, state: MemberState, error) -> None:
        """A trial the worker did not close itself: stopped by ASHA (no error) or lost (error)."""
        run = registry.get_run(state.run_id)
        if run.status != RunStatus.RUNNING:
            state.status = run.status
            return
        if error is not None:
            registry.set_status(state.run_id, RunStatus.INTERRUPTED, error=" ".join(f"worker lost: {error}".split())[:2000])
        else:  # what it had trained stays usable (resume, export)
            reached = len(registry.epochs(state.run_id))
            finish_run(RegistrySink(registry, state.run_id), run.save_dir, RunStatus.STOPPED,
                       error=f"stopped early by ASHA after epoch {reached} of {state.epochs} ({self.metric} behind)")
        state.status = registry.get_run(state.run_id).status

