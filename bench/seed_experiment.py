"""The user's experiment at the report's full budget, on real photos (roadsign4), one member at a time or side by side.

The recipe is the report's (100 epochs, batch 16, SGD lr0 0.003 -> 0.0001, momentum 0.9, weight decay 0.001, 5 warm-up
epochs, seed 0, deterministic); only the size and the device change with the machine:

    # the CPU (2 cores, both torch threads): 320 px, about 70 min per member, one after another, none started that
    # cannot finish before the deadline
    python bench/seed_experiment.py train --imgsz 320 --device cpu --work /tmp/seed320 --deadline-min 150 --member-min 75
    # a GPU: 640 px, the report's pair side by side (two processes on the one GPU), data cached in RAM
    python bench/seed_experiment.py train --imgsz 640 --device 0 --parallel 2 --cache ram --work /tmp/seed640
    # then, on any machine holding the work folder: best.pt, the registry row as JSON, ko/en reports
    python bench/seed_experiment.py finish --work /tmp/seed320 --out bench/seed_experiment
    # and the deployment figures of each finished member (FP32/INT8 eval, NPU placement)
    python bench/seed_experiment.py post --work /tmp/seed320 --out bench/seed_experiment
    # and the pair's reports again, each against its same-seed twin, with NPU checks, INT8 scores and a deployment plan
    # (a member committed in an earlier session is adopted from its run.json)
    python bench/seed_experiment.py report --members L4-leaky L4-relu --seed 0 --work /tmp/seed320 --out bench/seed_experiment

Members: L4-leaky and L4-relu (the report's pair), L0-silu (stock YOLO11n), L4-relu-anneal (L4-relu trained through
LeakyReLU 0.1 annealed to 0). The work folder holds a copy of the data set, the registry and every run folder; a member
is finished only when its run is `finished` at the full epoch count, and only finished members are ever copied out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import npuyolo  # noqa: F401  (offline guards before Ultralytics)
from npuyolo.paths import atomic_path, write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "roadsign4" / "data.yaml"


@dataclass(frozen=True)
class Member:
    name: str
    variant: str
    act_anneal: str | None = None


MEMBERS = {m.name: m for m in (
    Member("L4-leaky", "L4-leaky"),
    Member("L4-relu", "L4-relu"),
    Member("L0-silu", "L0-silu"),
    Member("L4-relu-anneal", "L4-relu", act_anneal="leaky0.1"),
)}
# the user's report, for the table beside ours
REPORT = {"L4-leaky": {"map50": 0.901, "map50_95": 0.769, "precision": 0.901, "recall": 0.819}}


def log(msg: str) -> None:
    print(f"[seed {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> dict:
    """What the figures were measured on: CPU model and count, GPU name when one trained."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001  (a machine description never fails the experiment)
        pass
    return info


def copy_data(data: Path, work: Path) -> Path:
    """A writable copy (Ultralytics writes label caches beside the labels); reused when already there."""
    dest = work / data.parent.name
    if not (dest / data.name).is_file():
        tmp = work / f".{data.parent.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(data.parent, tmp)
        tmp.rename(dest)
    return dest / data.name


def registry_path(work: Path) -> Path:
    return work / "runs" / "npuyolo.db"


def member_key(member: str, seed: int) -> str:
    """A replicate's own name: seed 0 keeps the committed member's name, seed N is `<member>-sN`."""
    return member if seed == 0 else f"{member}-s{seed}"


def run_name(member: str, args) -> str:
    return f"seed{args.imgsz}-{member_key(member, args.seed)}"  # a bare variant name would read as an untrained model


def finished_run(reg, member: str, args):
    """The member's run if it finished at the full budget, else None."""
    epochs = args.epochs
    for row in reg.runs():
        if row.name == run_name(member, args) and row.status == "finished":
            run = reg.get_run(row.id)
            if run.recipe.epochs == epochs and len(run.epochs) == epochs:
                return run
    return None


RUN_JSON_MAX_BYTES = 16 << 20


def adopt_committed(db: Path, member: str, args, data: Path):
    """A member trained and committed in an earlier session (its work folder gone with that machine): its registry row
    rebuilt from the committed run.json (recipe, every epoch, best figures) with the committed best.pt as its weights,
    so that `post` can measure it here. Returns the run, or None when nothing (valid) is committed.

    The run.json is checked whole before anything is written, then added in one transaction, under the member's own
    run name (the one `finished_run` looks for), whatever name the file carries."""
    from npuyolo.errors import NpuyoloError
    from npuyolo.paths import read_regular_file
    from npuyolo.registry.db import Registry

    out = member_dir(args, member)
    record, best = out / "run.json", out / "best.pt"
    if not record.is_file() or not best.is_file():
        return None
    try:
        row = json.loads(read_regular_file(record, RUN_JSON_MAX_BYTES).decode("utf-8"))
    except (NpuyoloError, UnicodeDecodeError, ValueError, RecursionError) as e:
        log(f"{member}: not adopted, {record} is not a readable run record ({' '.join(str(e).split())[:120]})")
        return None
    if not isinstance(row, dict):
        log(f"{member}: not adopted, {record} is not a run record (a JSON {type(row).__name__})")
        return None
    if row.get("variant") != MEMBERS[member].variant:
        log(f"{member}: not adopted, {record} records variant {str(row.get('variant'))[:40]!r}, not {MEMBERS[member].variant}")
        return None
    epochs = row.get("epochs")
    if row.get("status") != "finished" or not isinstance(epochs, list) or len(epochs) != args.epochs:
        return None
    best_figures = row.get("best")
    try:
        run_id = Registry(db).import_run(
            name=run_name(member, args), variant=row["variant"], recipe=row.get("recipe"), data_path=str(data),
            data_hash=row.get("data_hash"), class_names=row.get("class_names"), device=row.get("device"),
            versions=row.get("versions"), epochs=epochs,
            best={**best_figures, "weights": str(best.resolve())} if isinstance(best_figures, dict) else best_figures,
            artifacts=[("weights/best", best.resolve(), {"adopted_from": str(record)})])
    except NpuyoloError as e:
        log(f"{member}: not adopted, {record}: {e}")
        return None
    log(f"{member}: adopted the committed run ({record}) into {db}")
    return Registry(db, readonly=True).get_run(run_id)


def unfinished_run(db: Path, name: str, epochs: int) -> int | None:
    """The id of the member's earlier run that did not finish, so it is resumed instead of refused as a taken name."""
    from npuyolo.registry.db import Registry

    reg = Registry(db, readonly=True)
    try:
        rows = [row for row in reg.runs() if row.name == name]
        if not rows or rows[0].status == "finished":
            if rows and reg.get_run(rows[0].id).recipe.epochs != epochs:
                raise SystemExit(f"{name}: a finished run of another budget holds this name in {db}; "
                                 "use another --work folder")
            return None
        return rows[0].id
    finally:
        reg.close()


def train_one(member: Member, args, data: Path) -> None:
    from npuyolo.api import Workspace

    overrides = {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "seed": args.seed}
    if args.device is not None:
        overrides["device"] = args.device
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.cache:
        overrides["cache"] = args.cache
    if args.amp is not None:
        overrides["ultralytics"] = {"amp": args.amp}
    # Ultralytics trains on the CPU with cpu_count - 1 torch threads: one on a 2-core machine, 74 s per epoch at 320 px
    # against 41 s with two (measured on roadsign4, L4-leaky); a CPU run takes every core unless told otherwise
    if args.threads is None and str(args.device) == "cpu":
        args.threads = os.cpu_count()
    if args.threads:  # the recipe's `threads`: the trainer sets it and the run records it (numerics)
        overrides["threads"] = args.threads
    ws = Workspace(registry_path(args.work))
    t = time.time()
    earlier = unfinished_run(registry_path(args.work), run_name(member.name, args), args.epochs)
    if earlier is not None:  # a member stopped by a deadline or a crash goes on from its last checkpoint
        log(f"{member.name}: resuming run #{earlier} from its last checkpoint")
        run = ws.resume(earlier, verbose=True)
    else:
        run = ws.train(member.variant, data, name=run_name(member.name, args), act_anneal=member.act_anneal,
                       verbose=True, **overrides)
    best = run.best or {}
    log(f"{member.name}: run #{run.id} {run.status} in {time.time() - t:.0f} s; mAP50 {best.get('map50')}")


def cmd_train(args) -> int:
    from npuyolo.registry.db import Registry

    args.work.mkdir(parents=True, exist_ok=True)
    data = copy_data(args.data.resolve(), args.work)
    reg = Registry(registry_path(args.work))  # created once here, before any member process opens it
    todo = [MEMBERS[m] for m in args.members if finished_run(reg, m, args) is None]
    reg.close()
    deadline = time.time() + args.deadline_min * 60 if args.deadline_min else None
    log(f"machine {machine()}; members to train: {[m.name for m in todo]}; {args.epochs} epochs at {args.imgsz} px")
    if args.parallel > 1:
        return train_side_by_side(todo, args, deadline)
    for member in todo:
        if deadline is not None and args.member_min and time.time() + args.member_min * 60 > deadline:
            log(f"{member.name}: not started: about {args.member_min:.0f} min needed, "
                f"{(deadline - time.time()) / 60:.0f} min left before the deadline")
            continue
        if deadline is None:
            train_one(member, args, data)
            continue
        # a member never outlives the deadline: it trains in its own process, ended when the deadline comes
        t = time.time()
        code = run_member_process(member, args, deadline - time.time())
        if code != 0:
            log(f"{member.name}: ended with exit code {code}")
        else:  # the next member is judged by what this one measured, when that is longer than the estimate
            args.member_min = max(args.member_min or 0, (time.time() - t) / 60)
    return 0


def member_command(member: Member, args) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "train", "--members", member.name, "--work", str(args.work),
           "--data", str(args.data), "--imgsz", str(args.imgsz), "--epochs", str(args.epochs), "--batch", str(args.batch),
           "--seed", str(args.seed)]
    for flag, value in (("--device", args.device), ("--workers", args.workers), ("--cache", args.cache),
                        ("--threads", args.threads)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.amp is not None:
        cmd.append("--amp" if args.amp else "--no-amp")
    return cmd


def run_member_process(member: Member, args, seconds: float) -> int:
    logfile = args.work / "logs" / f"{member_key(member.name, args.seed)}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log(f"{member.name}: training (log {logfile}), ended after {seconds / 60:.0f} min if not done")
    with open(logfile, "ab") as fh:
        proc = subprocess.Popen(member_command(member, args), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(seconds, 1))
        except subprocess.TimeoutExpired:
            log(f"{member.name}: deadline reached; stopping it (it stays unfinished and is never copied out)")
            proc.terminate()
            try:
                return proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()


def train_side_by_side(todo: list[Member], args, deadline: float | None) -> int:
    """Members in their own processes, `parallel` at a time, on the one device (a GPU holds several nano models)."""
    pending, running, codes = list(todo), {}, {}
    args.work.joinpath("logs").mkdir(parents=True, exist_ok=True)
    started = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            member = pending.pop(0)
            if deadline is not None and args.member_min and time.time() + args.member_min * 60 > deadline:
                log(f"{member.name}: not started, too little time left")
                continue
            fh = open(args.work / "logs" / f"{member_key(member.name, args.seed)}.log", "ab")
            running[member.name] = (subprocess.Popen(member_command(member, args), stdout=fh, stderr=subprocess.STDOUT,
                                                     start_new_session=True), fh)
            started[member.name] = time.time()
            log(f"{member.name}: started")
        time.sleep(2)
        for name, (proc, fh) in list(running.items()):
            if deadline is not None and time.time() > deadline and proc.poll() is None:
                log(f"{name}: deadline reached; stopping it")
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if proc.poll() is not None:
                fh.close()
                codes[name] = proc.returncode
                log(f"{name}: exit {proc.returncode} after {time.time() - started[name]:.0f} s")
                del running[name]
    return 0 if all(c == 0 for c in codes.values()) else 1


# -- after training ---------------------------------------------------------------------------------------------------
def member_dir(args, member: str) -> Path:
    return args.out / member_key(member, args.seed)


TWINS = {"L4-leaky": "L4-relu", "L4-relu": "L4-leaky"}  # the report's pair: each one's report compares the other


def cmd_finish(args) -> int:
    """Copy each finished member out: best.pt, the registry row as JSON, ko/en reports (Markdown with PNG plots); the
    pair's reports compare each with its twin of the same seed (paired intervals) once both are finished here."""
    from npuyolo.registry.db import Registry
    from npuyolo.report.render import render_runs

    reg = Registry(registry_path(args.work), readonly=True)
    for name in args.members:
        run = finished_run(reg, name, args)
        if run is None:
            log(f"{name}: not finished at {args.epochs} epochs; nothing copied")
            continue
        out = member_dir(args, name)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "best.pt") as tmp:
            shutil.copyfile(run.artifact_path("weights/best"), tmp)
        record = run.as_dict()
        record["machine"] = json.loads((args.work / "machine.json").read_text()) if (args.work / "machine.json").is_file() \
            else machine()
        record["wall_time_s"] = run.duration_s
        write_json(out / "run.json", record)
        twin = finished_run(reg, TWINS[name], args) if name in TWINS else None
        render_runs(reg, run.id, out / "reports", langs=("en", "ko"), fmts=("md",), compare=twin.id if twin else None)
        log(f"{name}: copied to {out} (mAP50 {run.best and run.best.get('map50')})")
    return 0


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


def cmd_post(args) -> int:
    """Deployment figures of each finished member: FP32 and INT8 (sweep, bias correction, per-channel) on val, NPU placement."""
    from npuyolo.api import Workspace
    from npuyolo.registry.db import Registry

    ws = Workspace(registry_path(args.work))
    data = copy_data(args.data.resolve(), args.work)
    for name in args.members:
        db = registry_path(args.work)
        run = finished_run(Registry(db, readonly=True), name, args) if db.is_file() else None
        if run is None:
            run = adopt_committed(db, name, args, data)
        if run is None:
            continue
        out = member_dir(args, name)
        post_file = out / "post.json"
        post = json.loads(post_file.read_text()) if post_file.is_file() else {}
        if "int8" not in post:
            t = time.time()
            q = ws.quantize(run.id, data, sweep=True, bias_correct=True, per_channel=True)
            fp32 = ws.evaluate(q.fp32, data)
            int8 = ws.evaluate(q.int8, data)
            keys = ("map50", "map50_95", "precision", "recall")
            post["pt"] = {k: (int8.pt or {}).get(k) for k in keys}  # best.pt through the same letterbox pipeline
            post["fp32"] = {k: getattr(fp32, k) for k in keys}
            post["int8"] = {k: getattr(int8, k) for k in keys} | {"drop_pp": int8.drop_pp, "file": Path(q.int8).name}
            post["int8"]["route"] = {k: v for k, v in q.as_dict().items()
                                     if k not in ("fp32", "int8", "run_id", "calibration_images", "holdout_images")}
            post["int8_seconds"] = round(time.time() - t)
            write_json(post_file, post)
        if "npu" not in post:
            check = ws.check(run.id, args.targets)
            post["npu"] = {r.target: {"cpu_fallback_ops": sum(r.fallback_ops.values()), "host_partitions": r.partitions_host,
                                      "share_macs": round(r.share_macs, 4), "share_nodes": round(r.share_nodes, 4),
                                      "fallback_ops": r.fallback_ops} for r in check.reports}
            write_json(post_file, post)
        if "compilers" not in post and "compilers" not in args.skip:
            post["compilers"] = compiler_verdicts(ws, run.id, data)
            write_json(post_file, post)
        if "int8_vs_ultralytics" not in post and "int8_vs_ultralytics" not in args.skip:
            post["int8_vs_ultralytics"] = int8_vs_ultralytics(run.artifact_path("weights/best"), data, run.recipe.imgsz,
                                                              args.work / "int8_vs_ultralytics" / member_key(name, args.seed))
            write_json(post_file, post)
        log(f"{name}: post {json.dumps(post, default=str)[:400]}")
    return 0


def calibration(args) -> dict:
    """--calib/--holdout where given (a small data set), else the operations' own defaults."""
    return {k: getattr(args, k) for k in ("calib", "holdout") if getattr(args, k, None) is not None}


def cmd_report(args) -> int:
    """The pair's committed reports rendered again from a registry holding everything a report reads: the run (adopted
    from its committed run.json where this work folder never trained it), its NPU checks over --targets, its INT8 file
    with FP32/INT8 scores (post's route: sweep, bias correction, per-channel), its deployment plan over --plan-targets,
    and its twin of the same seed for the paired comparison. Each step is done only when the registry lacks it."""
    from npuyolo.api import Workspace
    from npuyolo.registry.db import Registry
    from npuyolo.report.render import render_runs

    db = registry_path(args.work)
    ws = Workspace(db)
    data = copy_data(args.data.resolve(), args.work)
    runs = {}
    for name in args.members:
        run = finished_run(Registry(db, readonly=True), name, args) if db.is_file() else None
        runs[name] = run or adopt_committed(db, name, args, data)
        if runs[name] is None:
            log(f"{name}: neither finished in {args.work} nor committed in {member_dir(args, name)}; no report")
    for name, run in runs.items():
        if run is None:
            continue
        reg = Registry(db, readonly=True)
        checked = {c.target for c in reg.npu_checks(run_id=run.id)}
        if set(args.targets) - checked:
            ws.check(run.id, args.targets)
        int8_rows = [e for e in reg.deploy_evals(run.id) if e.precision_kind == "int8"]
        if int8_rows and "drop_interval" not in int8_rows[-1].result:  # scored before drops kept their interval:
            ws.evaluate(int8_rows[-1].artefact, data)  # the INT8 file scored again, its FP32 side read back
        if not int8_rows:
            q = ws.quantize(run.id, data, sweep=True, bias_correct=True, per_channel=True, **calibration(args))
            ws.evaluate(q.fp32, data)
            int8 = ws.evaluate(q.int8, data)
            committed = json.loads((member_dir(args, name) / "post.json").read_text()).get("int8", {}) \
                if (member_dir(args, name) / "post.json").is_file() else {}
            if committed.get("map50") is not None and committed["map50"] != int8.map50:
                log(f"{name}: INT8 mAP50 {int8.map50} here, {committed['map50']} in post.json")
        if reg.get_run(run.id).artifact("plan") is None and args.plan_targets:
            t = time.time()
            ws.plan(run.id, args.plan_targets, data, **calibration(args))
            log(f"{name}: plan over {args.plan_targets} in {time.time() - t:.0f} s")
        reg.close()
    reg = Registry(db, readonly=True)
    for name, run in runs.items():
        if run is None:
            continue
        twin = runs.get(TWINS.get(name)) or (finished_run(reg, TWINS[name], args) if name in TWINS else None)
        render_runs(reg, run.id, member_dir(args, name) / "reports", langs=("en", "ko"), fmts=("md",),
                    compare=twin.id if twin else None)
        log(f"{name}: reports rendered in {member_dir(args, name) / 'reports'}"
            + (f" (against {TWINS[name]})" if twin else " (no twin of this seed)"))
    return 0


COMPILES = (("rknn", "rk3588"), ("rknn", "rk3566"), ("vela", "ethos-u55-128"))


def compiler_verdicts(ws, run_id: int, data: Path) -> dict:
    """The vendor compilers' own verdicts (rows on NPU/CPU, Vela's time estimate), or why there is none."""
    from npuyolo.errors import NpuyoloError

    out = {}
    for compiler, target in COMPILES:
        t = time.time()
        try:
            res = ws.compile(run_id, compiler, target, data)
        except NpuyoloError as e:  # not installed, or the compiler refused the model: said, not hidden
            out[f"{compiler}:{target}"] = {"error": str(e)}
            continue
        build = res.build
        out[f"{compiler}:{target}"] = {"version": build.version, "summary": build.summary(),
                                       "agreement": {"share": res.agreement.share, "basis": res.agreement.basis,
                                                     "verdict": res.agreement.verdict},
                                       "performance": getattr(build, "performance", None), "notes": build.notes,
                                       "disabled_rules": build.disabled_rules, "seconds": round(time.time() - t)}
        log(f"{compiler}:{target}: {out[f'{compiler}:{target}']['summary']}")
    return out


def int8_vs_ultralytics(weights: Path, data: Path, imgsz: int, work: Path) -> list[dict]:
    """bench/int8_vs_ultralytics.py on the member's weights (no QAT): Ultralytics' INT8 beside each of our routes."""
    work.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(ROOT / "bench" / "int8_vs_ultralytics.py"), "--weights", str(weights), "--data", str(data),
           "--imgsz", str(imgsz), "--qat-epochs", "0", "--runs", "20", "--work", str(work)]
    log(f"int8_vs_ultralytics: {' '.join(cmd[1:])}")
    subprocess.run(cmd, check=True)
    return json.loads((work / "int8_vs_ultralytics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "finish", "post", "report"])
    ap.add_argument("--members", nargs="+", default=list(MEMBERS), choices=list(MEMBERS))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--work", type=Path, required=True, help="data copy, registry and run folders")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "seed_experiment")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--epochs", type=int, default=100, help="the report's budget; fewer only for a smoke test")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0,
                    help="the recipe's seed; a replicate (seed N > 0) is committed as <member>-sN beside seed 0")
    ap.add_argument("--device", default=None, help="cpu, 0, ...")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--cache", choices=["ram", "disk"], default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads on the CPU (default with --device cpu: every core; Ultralytics would use cpu_count - 1)")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--parallel", type=int, default=1, help="members trained side by side (one process each)")
    ap.add_argument("--deadline-min", type=float, default=None, help="no member runs past this many minutes from now")
    ap.add_argument("--member-min", type=float, default=None, help="expected minutes per member: none starts that cannot finish")
    ap.add_argument("--skip", nargs="+", default=[], choices=["compilers", "int8_vs_ultralytics"],
                    help="post: steps left out (e.g. int8_vs_ultralytics at 640 px on a CPU: about 40 min per member)")
    ap.add_argument("-t", "--targets", nargs="+", default=["rknn-rk3588", "rknn-rk3566", "ethos-u55", "imx500", "amd-dpu", "edgetpu", "relu-only"])
    ap.add_argument("--plan-targets", nargs="*", default=["rknn-rk3588", "ethos-u55", "amd-dpu", "relu-only"],
                    help="report: the targets of the deployment plan in each member's report (none: no plan)")
    ap.add_argument("--calib", type=int, default=None, help="report: calibration images [default: the operations' own]")
    ap.add_argument("--holdout", type=int, default=None, help="report: held-back images the sweep is judged on [default: the operations' own]")
    args = ap.parse_args(argv)
    if args.command == "train":
        (args.work).mkdir(parents=True, exist_ok=True)
        if not (args.work / "machine.json").is_file():
            write_json(args.work / "machine.json", machine())
        return cmd_train(args)
    return {"finish": cmd_finish, "post": cmd_post, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
