"""Every table and summary the commands print, in one place: Rich tables of plain text (a hostile name stays text)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape

from npuyolo.cli.common import Table, console, duration, fmt, print_json

if TYPE_CHECKING:  # the registry (pydantic, sqlite) stays out of `npuyolo --help`
    from npuyolo.registry.db import RunRecord


def print_result(run, as_json: bool) -> None:
    """A created or continued run: its record as JSON, or the usual summary."""
    if as_json:
        return print_json({"run_id": run.id, "name": run.name, "status": run.status, "save_dir": run.save_dir,
                           "weights": {a.kind.split("/", 1)[1]: a.path for a in run.artifacts if a.kind.startswith("weights/")},
                           "best": run.best})
    print_run(run)


def print_run(run: RunRecord) -> None:
    console.print(f"[bold]run {run.id}[/] {escape(run.name)}  variant {escape(run.variant)}  status [bold]{escape(run.status)}[/]",
                  highlight=False)
    console.print(escape(f"data {run.data_path} (hash {run.data_hash})  device {run.device}  weights {run.weights_source or 'none (from scratch)'}"
                  + (f" transferred {run.weights_transferred}" if run.weights_transferred else "")
                  + ("" if run.amp is None else f"  AMP {'on' if run.amp else 'off'}")), highlight=False)
    console.print(f"started {run.started_at}  ended {run.ended_at or '-'}  train time {duration(run.duration_s)}", highlight=False, markup=False)
    if run.error:
        console.print(f"[red]{escape(run.error)}[/]", highlight=False)
    table = Table(title="epochs")
    for col in ("epoch", "box_loss", "cls_loss", "dfl_loss", "precision", "recall", "map50", "map50_95", "lr"):
        table.add_column(col, justify="right")
    for e in run.epochs:
        table.add_row(str(e.epoch), *(fmt(v, 4) for v in (e.box_loss, e.cls_loss, e.dfl_loss, e.precision, e.recall, e.map50, e.map50_95)), fmt(e.lr, 6))
    console.print(table)
    if run.best:
        b = run.best
        console.print(f"best.pt validation: P {fmt(b['precision'])} R {fmt(b['recall'])} mAP50 {fmt(b['map50'])} mAP50-95 {fmt(b['map50_95'])}")
    for a in run.artifacts:
        console.print(escape(f"  {a.kind}: {a.path}"), highlight=False, markup=False)


def print_series_plan(sp) -> None:
    """One row per variant, one column per target; a cell is the chosen artefact, its NPU share and INT8 mAP50."""
    table = Table(title=f"series {sp.series}: verified best artefact per variant and target")
    table.add_column("variant", no_wrap=True)
    for t in sp.targets:
        table.add_column(t)
    cells = sp.cells()
    for variant, row in cells.items():
        table.add_row(variant, *(f"{c['artefact']}\n{c['share_nodes']:.1%} NPU, {c['off_npu']} off, INT8 mAP50 {fmt(c['int8_map50'])}"
                                 if (c := row.get(t)) else "-" for t in sp.targets))
    console.print(table)
    for variant, why in sp.skipped.items():
        console.print(f"{variant}: {why}", highlight=False, markup=False, style="dim")
    for variant, p in sp.plans.items():
        console.print(f"{variant}: plan {p.path}", highlight=False, markup=False)
    console.print(f"series plan: {len(sp.plans)} member(s) ({duration(sp.seconds)})", highlight=False, markup=False)


def print_ranking(name: str, rows: list[dict]) -> None:
    """Each member's metric and rank; with per-image statistics also its 95% interval, and members the data cannot
    tell apart share a rank ('=')."""
    by_intervals = any(r.get("rank_basis") == "intervals" for r in rows)
    title = (f"series {name}: best.pt on val with 95% intervals; a rank shared (=) where the paired interval cannot "
             "tell members apart" if by_intervals else f"series {name}: final-epoch metrics (rank; one seed, no interval)")
    table = Table(title=title)
    for col in ("variant", "run", "status", "mAP50", "mAP50-95", "precision", "recall"):
        table.add_column(col)
    metrics = ("map50", "map50_95", "precision", "recall")
    shared = {m: [r[f"rank_{m}"] for r in rows if r.get(f"rank_{m}") is not None] for m in metrics}
    for r in rows:
        cells = []
        for m in metrics:
            if r.get(m) is None:
                cells.append("-")
                continue
            tie = "=" if shared[m].count(r[f"rank_{m}"]) > 1 else ""
            interval = f" [{r[m + '_interval'][0]:.3f}-{r[m + '_interval'][1]:.3f}]" if r.get(m + "_interval") else ""
            cells.append(f"{fmt(r[m])}{interval} (#{tie}{r['rank_' + m]})")
        table.add_row(r["variant"], fmt(r["run_id"]), r["status"], *cells)
    console.print(table)


def print_replicates(name: str, rows: list[dict]) -> None:
    """A series with seed replicates: per variant, mean ± sd over seeds and each seed's value; ranks shared (=) where
    the interval over images and seeds cannot tell variants apart."""
    basis = next((r.get("rank_basis") for r in rows if r.get("rank_basis")), "point")
    table = Table(title=f"series {name}: best.pt over seeds, mean ± sd (rank by {basis}"
                        + ("; one seed each: no interval)" if basis == "point" else ")"))
    for col in ("variant", "seeds", "runs", "mAP50", "per seed", "mAP50-95", "status"):
        table.add_column(col)
    ranks = [r["rank_map50"] for r in rows if r.get("rank_map50") is not None]
    for r in rows:
        if r["map50"] is None:
            table.add_row(r["variant"], "-", "-", "-", "-", "-", r["status"])
            continue
        tie = "=" if ranks.count(r["rank_map50"]) > 1 else ""
        sd = lambda m: "" if r[f"{m}_sd"] is None else f" ± {r[f'{m}_sd']:.3f}"  # noqa: E731
        table.add_row(r["variant"], ", ".join(map(str, r["seeds"])), ", ".join(map(str, r["runs"])),
                      f"{r['map50']:.3f}{sd('map50')} (#{tie}{r['rank_map50']})",
                      ", ".join(f"{v:.3f}" for v in r["map50_values"]), f"{r['map50_95']:.3f}{sd('map50_95')}", r["status"])
    console.print(table)


def print_referee(results) -> None:
    table = Table(title="NPU placement: profile vs compiler")
    for col in ("target", "compiler", "nodes", "mapped", "agree", "agreement", "profile CPU/unknown", "compiler CPU ops",
                "memory", "est. ms"):
        table.add_column(col)
    for r in results:
        a, b, s = r.agreement, r.build, r.build.summary()
        memory = r.memory or "-"  # in the compiler's own unit (`CompilerSpec.memory_text`)
        table.add_row(r.profile, f"{b.compiler} {b.version}", str(a.nodes), str(a.mapped), str(a.agree),
                      "-" if a.share is None else f"{a.share:.1%}" + ("" if a.basis == "nodes" else f" ({a.basis})"),
                      f"{r.ours.nodes_cpu}/{r.ours.nodes_unknown}",
                      f"{s['rows_cpu']}/{s['rows']}", memory, "-" if s.get("inference_ms") is None else f"{s['inference_ms']:.1f}")
    console.print(table)
    for r in results:
        s = r.build.summary()
        for note in r.build.notes:
            console.print(f"[dim]{r.profile}: {escape(note)}[/]", highlight=False)
        if r.agreement.basis != "nodes":  # Vela: TFLite operators, not our nodes; compared on the whole graph
            cpu = f" ({', '.join(s['cpu_rows'])})" if s["cpu_rows"] else ""
            console.print(f"{r.profile}: {r.agreement.verdict}{cpu} (log: {r.build.log})", highlight=False, markup=False)
        elif r.agreement.disagreements:
            t = Table(title=f"{r.profile}: disagreements (log: {r.build.log})")
            for col in ("node", "op", "profile", "profile's reason", "compiler", "compiler row"):
                t.add_column(col)
            for d in r.agreement.disagreements:
                t.add_row(d["node"], d["op"], d["ours"], d["our_reason"], d["compiler"], d["compiler_row"] or "-")
            console.print(t)
        else:
            console.print(f"{r.profile}: no disagreement on {r.agreement.mapped} mapped nodes "
                          f"({r.agreement.nodes - r.agreement.mapped} not mappable from the log)", highlight=False, markup=False)


def print_whole_model(res) -> None:
    """A compiler that runs the whole model on the device or none of it (`CompilerSpec.whole_model`): its fit and memory."""
    b = res.build
    m = b.memory
    memory = (f"{m['used_mb']:.2f} MB of {m['available_mb']:.2f} MB ({'fits' if m.get('fits') else 'does NOT fit'})"
              if "used_mb" in m and "available_mb" in m else "memory not reported")
    if "coefficients_bytes" in m:
        memory += f", coefficients {m['coefficients_bytes'] / 1024:.1f} KiB"
    acts = ", ".join(f"{k}×{v}" for k, v in b.activations.items()) or "-"
    verdict = "compiled" if b.ok else "FAILED"
    console.print(f"{b.compiler} {b.version}: {verdict} in {b.seconds:.0f} s; {memory}; activations: {acts}", highlight=False, markup=False)
    if b.error:
        console.print(f"  error: {b.error}", highlight=False, markup=False)
    console.print(f"calibration: {b.calibration}", highlight=False, markup=False)
    console.print(f"profile vs compiler: {res.agreement.verdict}", highlight=False, markup=False)
    console.print(f"log: {b.log}" + (f"; model: {b.output}" if b.output else ""), highlight=False, markup=False)


def print_quantized(info: dict, as_json: bool) -> None:
    if as_json:
        return print_json({k: v for k, v in info.items() if k not in ("calibration_images", "holdout_images")}
                          | {"calibration_count": len(info["calibration_images"])})
    console.print(f"FP32: {info['fp32']}\nINT8: {info['int8']}  ({len(info['calibration_images'])} train images, {info['calibration']}"
                  f"{', per-channel' if info['per_channel'] else ''}{', bias-corrected' if info['bias_corrected'] else ''}"
                  f"{', ends ' + info['ends'] if info['ends'] else ''}; float nodes: {', '.join(info['keep_float']) or 'none'})",
                  highlight=False, markup=False)
    if info["sweep"]:
        table = Table(title=f"calibration sweep on {info['holdout']} held-back train images (fidelity to FP32)")
        table.add_column("calibration")
        table.add_column("SQNR dB", justify="right")
        for row in info["sweep"]:
            table.add_row(row["calibration"] + (" *" if row["calibration"] == info["calibration"] else ""), f"{row['sqnr_db']:.2f}")
        console.print(table)


def print_plan(plan) -> None:
    table = Table(title=f"deployment plan for {plan.model_ref} (INT8 calibration {plan.calibration}; * chosen)")
    vendor = any(r.vendor is not None for tp in plan.targets for r in tp.rows)
    for col in ("target", "artefact", "NPU share", "off NPU", "host parts", "NPU ms", "FP32 mAP50", "INT8 mAP50",
                *(["vendor INT8 mAP50"] if vendor else []), "INT8 drop pp (95%)", f"INT8/FP32 P/R/mAP50 at {plan.conf:g}"):
        table.add_column(col, no_wrap=col == "artefact")
    pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
    for tp in plan.targets:
        for i, r in enumerate(sorted(tp.rows, key=lambda r: r is not tp.chosen)):
            p = r.placement
            ms = fmt(p.npu_ms, 2) if p.npu_ms is not None else {"compiler not installed": "not installed"}.get(p.compiler_status, p.compiler_status or "-")
            ret = r.retention
            table.add_row(tp.target if i == 0 else "", ("* " if r is tp.chosen else "  ") + r.candidate.name, f"{p.share_nodes:.1%}",
                          str(p.off_npu), str(p.host_partitions), ms, fmt(r.fp32.map50), fmt(r.int8.map50),
                          *([fmt(r.vendor.int8.map50) if r.vendor else "-"] if vendor else []),
                          "-" if r.int8_drop_pp is None else f"{r.int8_drop_pp[0]:+.1f} ({r.int8_drop_pp[1]:+.1f} to {r.int8_drop_pp[2]:+.1f})",
                          f"{pct(ret['precision'])} / {pct(ret['recall'])} / {pct(ret['map50'])}")
    console.print(table)
    for tp in plan.targets:
        line = f"{tp.target}: {tp.chosen.candidate.name}"
        if tp.runner_up is not None:
            line += f"; runner-up {tp.runner_up.candidate.name} lost: {tp.why_runner_up_lost}"
        console.print(line, highlight=False, markup=False)
        for note in tp.notes:
            console.print(f"  {tp.target}: {note}", highlight=False, markup=False, style="dim")
        for why in dict.fromkeys(r.vendor_error for r in tp.rows if r.vendor_error):  # ranked by our INT8 instead
            console.print(f"  {tp.target}: the vendor's INT8 was not scored ({why})", highlight=False, markup=False, style="dim")
    if plan.weights_note:
        console.print(f"note: {plan.weights_note}", highlight=False, markup=False)
    console.print(f"plan: {plan.path} ({duration(plan.seconds)})", highlight=False, markup=False)


def print_study(name: str, rows) -> None:
    table = Table(title=f"study {name}: best.pt mAP50 over seeds")
    for col in ("route", "variant", "runs", "mAP50 mean ± sd", "range", "mAP50-95 mean", "gap to leaky",
                "95% interval (images + seeds)", "beyond spread", "cost s"):
        table.add_column(col)
    verdicts = {"ahead": "ahead of leaky", "behind": "behind leaky", "tied": "tied within noise"}
    for r in rows:
        interval = (r.gap_interval_pp or {}).get("map50")
        table.add_row(r.route, r.variant, ", ".join(fmt(x) for x in r.runs), f"{fmt(r.mean['map50'])} ± {fmt(r.std['map50'])}",
                      fmt(r.spread["map50"]), fmt(r.mean["map50_95"]),
                      "-" if r.route == "leaky" or r.gap_pp["map50"] is None else f"{r.gap_pp['map50']:+.1f} pp",
                      "-" if interval is None else f"{interval[0]:+.1f} to {interval[1]:+.1f} pp: {verdicts[r.gap_verdict['map50']]}",
                      {None: "-", True: "yes", False: "no"}[r.beyond_spread["map50"]], fmt(r.cost_s, 0))
    console.print(table)


def print_layers(rows: list[dict], qdq: str, top: int) -> None:
    """RKNN's per-layer cosine beside ours, worst vendor layers first: where the vendor's quantizer parts from ours."""
    table = Table(title=f"per layer, worst {min(top, len(rows))} of {len(rows)} Convs by RKNN's cosine (ours: {qdq})")
    for col in ("Conv", "tensor", "RKNN cos (entire)", "RKNN cos (single)", "ours cos", "ours SQNR dB"):
        table.add_column(col)
    for r in rows[:top]:
        table.add_row(r["conv"], r["tensor"], f"{r['vendor_cos']:.4f}", f"{r['vendor_single_cos']:.4f}",
                      fmt(r["ours_cos"], 4), fmt(r["ours_sqnr_db"], 1))
    console.print(table)


def _interval(e, digits: int = 3, scale: float = 1.0, sign: bool = False) -> str:
    v, lo, hi = e.value * scale, e.low * scale, e.high * scale
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{f.format(v)} ({f.format(lo)} to {f.format(hi)})"


def print_comparison(result) -> None:
    """Each model with its intervals, then each pair: difference in points, its interval, the verdict."""
    c = result.comparison
    table = Table(title=f"{len(c.models)} models on {c.images} val images ({result.data}); 95% intervals, {c.bootstrap} paired resamples")
    for col in ("model", "mAP50", "mAP50-95", "P", "R"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in c.models:
        table.add_row(m.label, *(_interval(getattr(m, k)) for k in ("map50", "map50_95", "precision", "recall")))
    console.print(table)
    pairs = Table(title="differences (A - B, percentage points) with their paired 95% intervals")
    for col in ("A", "B", "metric", "A - B (pp)", "verdict"):
        pairs.add_column(col, justify="right" if col == "A - B (pp)" else "left")
    for p in c.pairs:
        pairs.add_row(p.a, p.b, p.metric, _interval(p.diff, 1, 100, sign=True), p.text)
    if c.pairs:
        console.print(pairs)
    for m in result.models:
        console.print(f"{m.label}: {m.kind} {m.source} ({'statistics read back' if m.cached else 'scored'})",
                      highlight=False, markup=False, style="dim")
    if result.plot:
        console.print(f"forest plot: {result.plot}", highlight=False, markup=False)
