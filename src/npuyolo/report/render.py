"""Render run and series reports (Markdown or one self-contained HTML file) with their PNG plots."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import replace
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from npuyolo.deploy.plan import matrix
from npuyolo.errors import UnsafePathError
from npuyolo.npu.analyze import analyze
from npuyolo.npu.graph import GraphError, load_graph
from npuyolo.npu.profiles import TargetError
from npuyolo.npu.profiles import target as get_target
from npuyolo.npu.rewrite import rewrite_leaky
from npuyolo.paths import atomic_path, safe_join, unique_slug, write_text
from npuyolo.registry.db import NpuCheckRow, RunStatus
from npuyolo.report import plots, webfont
from npuyolo.report.facts import METRICS, ReportError, RunFacts, plan_and_problem, run_facts
from npuyolo.study.hybrid import pareto_front
from npuyolo.study.relu_gap import study_table
from npuyolo.train.series import has_replicates, rank_replicates, rank_series
from npuyolo.variants.spec import parse_variant

LANGS = ("en", "ko")
FORMATS = ("md", "html")
METRIC_NAMES = {"map50": "mAP50", "map50_95": "mAP50-95", "precision": "precision", "recall": "recall"}
METRIC_NAMES_KO = {"map50": "mAP50", "map50_95": "mAP50-95", "precision": "정밀도", "recall": "재현율"}
LOSS_NAMES = {"box_loss": "box loss", "cls_loss": "cls loss", "dfl_loss": "DFL loss"}
LOSS_NAMES_KO = {"box_loss": "Box 손실", "cls_loss": "Cls 손실", "dfl_loss": "DFL 손실"}
STATUS_KO = {RunStatus.RUNNING: "학습 중", RunStatus.FINISHED: "완료", RunStatus.FAILED: "실패", RunStatus.INTERRUPTED: "중단됨",
             RunStatus.STOPPED: "조기 종료", "derived": "파생"}
NOTES_KO = {"class sigmoid moved to the host decode (no NPU Sigmoid on this target)":
            "이 타깃에는 NPU Sigmoid가 없어 클래스 시그모이드를 호스트 디코딩으로 옮겼습니다"}


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`[]|*_"})
_HTML_SPECIAL = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def md_text(value, html_output: bool = True):
    """A user-given string (run, series or class name, path, error) as literal Markdown text.

    Backslash-escapes what could start a link or image, a code span, emphasis or a table cell. For HTML output
    the template engine's autoescaping handles <, > and &; for a .md file they become entities here, so raw
    HTML in a name stays text in any Markdown viewer.
    """
    if not isinstance(value, str):
        return value
    value = value.translate(_MD_SPECIAL)
    return value if html_output else value.translate(_HTML_SPECIAL)


def md_safe_run(run, html_output: bool = True):
    """The run as templates see it: every free-text field a user controls made literal Markdown."""
    if run is None:
        return None
    t = lambda v: md_text(v, html_output)  # noqa: E731
    return replace(run, name=t(run.name), series=t(run.series), error=t(run.error), data_path=t(run.data_path),
                   weights_source=t(run.weights_source), device=t(run.device), class_names=[t(c) for c in run.class_names])


def _num(fmt: str):
    return lambda v: "n/a" if v is None else format(v, fmt)


def tidy_markdown(text: str) -> str:
    """Blank lines where Markdown needs them (around tables, headings, images, lists), never more than one."""
    out: list[str] = []
    for line in text.splitlines():
        prev = out[-1] if out else ""
        kind = lambda s: ("table" if s.startswith("|") else "heading" if s.startswith("#") else "image" if s.startswith("![")
                          else "list" if s.startswith("- ") else "fence" if s.startswith("```") else "text" if s.strip() else "blank")
        a, b = kind(prev), kind(line)
        in_fence = sum(l.startswith("```") for l in out) % 2 == 1
        if not in_fence and a != "blank" and b != "blank" and out and (a != b or b in ("heading", "image")) and not (a == "text" and b == "fence"):
            out.append("")
        out.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    return f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"


def environment(html_output: bool = False) -> Environment:
    """Templates write Markdown; for HTML output every value is autoescaped, so a hostile name stays text."""
    env = Environment(loader=PackageLoader("npuyolo.report", "templates"), undefined=StrictUndefined, autoescape=html_output,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["oneline"] = lambda v: " ".join(str(v).split())  # raw values inside a code block: one line each
    env.filters["md"] = lambda v: md_text(" ".join(str(v).split()), html_output)  # recorded free text: literal, one line
    # recorded free text inside a code span: one line, no backtick to close the span, no | to split a table cell, and in a
    # .md file no raw HTML (a viewer that renders HTML in code spans shows it as text)
    env.filters["code"] = lambda v: (lambda t: t if html_output else t.translate(_HTML_SPECIAL))(
        " ".join(str(v).split()).replace("`", "'").replace("|", "\\|"))
    env.globals.update(
        f1=_num(".1f"), f2=_num(".2f"), f3=_num(".3f"), f4=_num(".4f"), hms=_hms,
        num=lambda v: "n/a" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)),
        pct=lambda v: "n/a" if v is None else f"{v * 100:.1f}%",
        signed_pp=lambda v: "n/a" if v is None else f"{v:+.1f} pp",
        signed_pp_ko=lambda v: "n/a" if v is None else f"{v:+.1f}%p",
        ops=lambda a, b: ", ".join(f"{k}×{v}" for k, v in {**a, **b}.items()) or "-",
        metric_names=METRIC_NAMES, metric_names_ko=METRIC_NAMES_KO, loss_names=LOSS_NAMES, loss_names_ko=LOSS_NAMES_KO,
        status_ko=STATUS_KO, note_ko=lambda n: NOTES_KO.get(n, n),
    )
    return env


ACT_NAMES = {"silu": "SiLU", "relu": "ReLU", "relu6": "ReLU6", "leaky": "LeakyReLU", "hardswish": "HardSwish"}


def _act_label(activation: str, slope: float | None) -> str:
    label = ACT_NAMES.get(activation, activation)
    return f"{label}({slope:g})" if slope is not None else label


def activation_label(spec) -> str:
    if spec.stage_activations is not None:
        return "hybrid (" + ", ".join(f"{stage} {_act_label(*v)}" for stage, v in spec.stage_activations.items()) + ")"
    return _act_label(spec.activation, spec.slope)


def markdown_to_html(markdown_text: str) -> str:
    """Markdown -> HTML with raw HTML and links switched off: the report's own text never needs them, names might."""
    import markdown

    md = markdown.Markdown(extensions=["tables", "fenced_code"])
    md.preprocessors.deregister("html_block")
    for pattern in ("html", "link", "reference", "short_reference", "autolink", "automail"):
        if pattern in md.inlinePatterns:
            md.inlinePatterns.deregister(pattern)
    return md.convert(markdown_text)


def to_html(markdown_text: str, folder: Path, title: str) -> str:
    """One self-contained HTML file: Markdown rendered, every PNG of `folder` embedded as a data URI."""
    body = markdown_to_html(markdown_text)

    def embed(m: re.Match) -> str:
        try:
            image = safe_join(folder, html.unescape(m.group(1)))
        except UnsafePathError:
            image = None
        data = base64.b64encode(image.read_bytes()).decode() if image is not None and image.is_file() else ""
        return f'src="data:image/{"png" if m.group(2) == "png" else "jpeg"};base64,{data}"'

    body = re.sub(r'src="([^"]+\.(png|jpg))"', embed, body)
    # only the report's own images, embedded above, may stay: nothing is fetched from elsewhere when it opens
    body = re.sub(r'<img\b[^>]*\bsrc="(?!data:image/(?:png|jpeg);base64,)[^"]*"[^>]*>', "", body)
    face = webfont.font_face_css(title + markdown_text)  # Hangul: a subset of the shipped OFL font, embedded
    first = f"'{webfont.FAMILY}'," if face else ""
    style = (f"{face}body{{font-family:{first}'DejaVu Sans','Noto Sans KR',sans-serif;max-width:980px;margin:2em auto;"
             "line-height:1.45}table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #bbb;padding:3px 8px}"
             f"th{{background:#eef}}img{{max-width:100%}}pre{{white-space:pre-wrap;overflow-wrap:anywhere}}code,pre{{background:#f4f4f4;font-family:'DejaVu Sans Mono',{first}monospace}}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
            f"</head><body>{body}</body></html>\n")


def check_langs_formats(langs, fmts) -> None:
    """Every language and format asked for is one we render, checked before anything is read or written."""
    for lang in langs:
        if lang not in LANGS:
            raise ReportError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}", param="lang")
    for fmt in fmts:
        if fmt not in FORMATS:
            raise ReportError(f"format must be md or html, got {fmt!r}", param="format")


def render_run(registry, ref, out: Path | None = None, lang: str = "en", fmt: str = "md", compare=None) -> Path:
    """A run's report; `out` defaults to the run's own folder, reports/."""
    return render_runs(registry, ref, out, langs=[lang], fmts=[fmt], compare=compare)[0]


def render_runs(registry, ref, out: Path | None = None, langs=("en",), fmts=("md",), compare=None) -> list[Path]:
    """A run's report in each language and format asked for (languages in the order given, each in every format), from
    one reading of the run: its facts (the paired bootstrap behind `compare` included) and plots are made once."""
    langs, fmts = list(dict.fromkeys(langs)), list(dict.fromkeys(fmts))
    check_langs_formats(langs, fmts)
    facts = run_facts(registry, ref, compare)
    out = Path(out) if out else registry.run_dir(facts.run, "reports")
    _make_dir(out)
    img = write_run_plots(facts, out)
    title, raw = facts.run.name, facts.run
    spec = parse_variant(raw.variant)
    written = []
    for lang in langs:
        for fmt in fmts:
            html_output = fmt == "html"
            shown = replace(facts, run=md_safe_run(raw, html_output), compare=md_safe_run(facts.compare, html_output))
            env = environment(html_output=html_output)
            say = env.get_template(f"say_{lang}.j2").module.say
            text = env.get_template(f"run_{lang}.md.j2").render(
                f=shown, spec=spec, level=spec.settings, act_label=activation_label(spec), say=say,
                registry_path=str(registry.path), img=img, raw=raw)
            text = tidy_markdown(text)
            name = f"report_{raw.id}_{lang}"
            if fmt == "md":
                written.append(write_text(out / f"{name}.md", text))
            else:
                written.append(write_text(out / f"{name}.html", to_html(text, out, title)))
    return written


def _make_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, a read-only mount...
        raise ReportError(f"out {out}: cannot create the folder ({e.strerror or e})", param="out") from None


def write_run_plots(facts: RunFacts, out: Path) -> dict[str, str]:
    """The run's plots, named after the run (two reports in one folder never overwrite each other's images)."""
    run = facts.run
    stem = f"run{run.id}" + (f"_vs_run{facts.compare.id}" if facts.compare else "")
    img = {k: f"{stem}_{k}.png" for k in ("metrics", "losses", "compare", "npu")}
    img.update(copy_validation_plots(run, out, f"run{run.id}"))
    if run.epochs:
        plots.metric_curves(run.epochs, out / img["metrics"], f"{run.name}: validation metrics")
        plots.loss_curves(run.epochs, out / img["losses"], f"{run.name}: training losses")
    if facts.compare and facts.compare.epochs and run.epochs:
        plots.compare_curves([run, facts.compare], out / img["compare"])
    if facts.npu:
        plots.npu_bars(facts.npu, out / img["npu"], f"{run.name}: NPU compatibility")
    return img


def rewrite_point(check: NpuCheckRow, target: str) -> dict | None:
    """Placement of a checked graph after `npu rewrite --leaky relu-decomp` (exact: the accuracy is the run's own).

    None when the graph has no LeakyRelu or its ONNX file is gone. Computed, never recorded: a report only reads.
    """

    path = Path(check.onnx_path or "")
    if not path.is_file():
        return None
    try:
        model, count = rewrite_leaky(load_graph(path).model, "relu-decomp")
        if not count:
            return None
        report = analyze(load_graph(model), get_target(target))
    except GraphError:
        return None
    return {"npu_share": report.share_nodes, "rewritten": count, "npu_fallbacks": report.nodes_cpu,
            "npu_host_partitions": report.partitions_host, "npu_mac_share": report.share_macs}


VALIDATION_PLOTS = {"confusion": ("confusion_matrix_normalized.png", "png"), "val_pred": ("val_batch0_pred.jpg", "jpg")}


def copy_validation_plots(run, out: Path, stem: str) -> dict[str, str]:
    """Ultralytics' own validation plots of the run (confusion matrix, predicted val images), when it made them."""
    import shutil

    found = {}
    save_dir = Path(run.save_dir) if run.save_dir else None
    for key, (name, ext) in VALIDATION_PLOTS.items():
        src = save_dir / name if save_dir else None
        if src is not None and src.is_file():
            dst = out / f"{stem}_{key}.{ext}"
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            found[key] = dst.name
    return {k: found.get(k) for k in VALIDATION_PLOTS}


def render_series(registry, name: str, out: Path | None = None, lang: str = "en", target: str = "relu-only",
                  fmt: str = "md") -> Path:
    """The series overview; `out` defaults to <registry dir>/reports/series-<name>."""
    return render_series_all(registry, name, out, langs=[lang], target=target, fmts=[fmt])[0]


def render_series_all(registry, name: str, out: Path | None = None, langs=("en",), target: str = "relu-only",
                      fmts=("md",)) -> list[Path]:
    """The series overview in each language and format asked for, from one reading of the series: its ranking (the
    paired bootstraps behind it), the rewritten placements and the plots are made once."""
    langs, fmts = list(dict.fromkeys(langs)), list(dict.fromkeys(fmts))
    check_langs_formats(langs, fmts)
    try:  # a target no profile has would be reported as unchecked everywhere, its name printed as given
        get_target(target)
    except TargetError as e:
        raise ReportError(str(e), param="target") from None
    rows = rank_series(registry, name)
    ranked = [r for r in rows if r["rank_map50"] is not None]
    if not ranked:
        raise ReportError(f"series {name!r} has no finished member yet; run `npuyolo series run` first")
    out = Path(out) if out else registry.output_dir("reports", f"series-{unique_slug(name, 'series')}")
    _make_dir(out)
    runs = [registry.get_run(r["run_id"]) for r in ranked]
    stem = f"series_{unique_slug(name, 'series')}"
    img = {"curves": f"{stem}_curves.png", "scatter": f"{stem}_accuracy_vs_npu.png"}
    plots.compare_curves(runs, out / img["curves"])

    derived, checked_by = [], []  # checked_by: members whose placement on `target` a vendor compiler checked
    for r in ranked:
        for c in registry.compiler_runs(run_id=r["run_id"]):
            if c.target == target:
                checked_by.append({"variant": r["variant"], "compiler": c.compiler, "version": c.version})
        check = next((c for c in registry.npu_checks(run_id=r["run_id"]) if c.target == target), None)
        r["npu_share"] = check.share_nodes if check else None
        if check:  # what a deployment feels first: ops falling back, host partitions, the share of the work (MACs)
            r["npu_fallbacks"] = sum((check.report.get("fallback_ops") or {}).values())
            r["npu_host_partitions"], r["npu_mac_share"] = check.partitions_host, check.share_macs
        rewritten = rewrite_point(check, target) if check else None
        if rewritten is not None:  # what the report recommends: the same weights, LeakyReLU rewritten exactly
            derived.append({**r, **rewritten, "variant": f"{r['variant']} + relu-decomp", "derived_from": r["variant"],
                            "status": "derived"})
    ranked += derived
    rows += derived
    front = {ranked[i]["variant"] for i in pareto_front(ranked)}
    for r in rows:
        r["pareto"] = r["variant"] in front
    points = [{"variant": r["variant"], "share": r["npu_share"], "map50": r["map50"], "pareto": r["pareto"]}
              for r in ranked if r["npu_share"] is not None]
    if points:
        plots.accuracy_vs_npu(points, out / img["scatter"], target)
    plan_targets, plan_cells, plan_problems = series_plan_matrix(registry, ranked)
    replicates = rank_replicates(registry, name) if has_replicates(registry, name) else []
    written = []
    for lang in langs:
        for fmt in fmts:
            env = environment(html_output=fmt == "html")
            text = env.get_template(f"series_{lang}.md.j2").render(
                name=md_text(name, fmt == "html"), rows=rows, target=target, has_scatter=bool(points), img=img,
                replicates=replicates, metrics=METRICS, checked_by=checked_by, plan_targets=plan_targets,
                plan_cells=plan_cells, plan_problems=plan_problems)
            text = tidy_markdown(text)
            if fmt == "html":
                written.append(write_text(out / f"{stem}_{lang}.html", to_html(text, out, f"series {name}")))
            else:
                written.append(write_text(out / f"{stem}_{lang}.md", text))
    return written


def series_plan_matrix(registry, members: list[dict]) -> tuple[list[str], dict[str, dict[str, dict]], dict[str, dict]]:
    """variant x target from each member's latest recorded `deploy plan` (what `series plan` records on every run);
    empty when no member has one. A plan file that is gone, not a regular file or not a valid plan leaves that member
    out, and the third value says why (variant -> {"path", "why"})."""
    plans, problems = {}, {}
    for m in members:
        if m.get("run_id") is None or m.get("status") == "derived":
            continue
        plan, problem = plan_and_problem(registry.get_run(m["run_id"]))
        if plan is not None:
            plans[m["variant"]] = plan
        elif problem is not None:
            problems[m["variant"]] = problem
    return (*matrix(plans), problems)


UNDERTRAINED_MAP50 = 0.05  # below this L4-leaky has not learned yet: gaps between near-zero scores mean nothing
HOW_KO = {"plain": "일반 학습", "distilled from the same seed's L4-leaky": "같은 시드의 L4-leaky에서 증류",
          "annealed from LeakyReLU to ReLU": "LeakyReLU에서 ReLU로 어닐링"}


def render_study(registry, name: str, out: Path | None = None, lang: str = "en") -> Path:
    """The relu-gap study's table, plot and verdicts, from its recorded runs; `out` defaults to reports/study-<name>."""
    from dataclasses import asdict


    if lang not in LANGS:
        raise ReportError(f"lang must be one of {', '.join(LANGS)}, got {lang!r}", param="lang")
    rows = study_table(registry, name)
    spec = registry.series(name).spec
    out = Path(out) if out else registry.output_dir("reports", f"study-{unique_slug(name, 'study')}")
    _make_dir(out)
    img = {"map50": f"study_{unique_slug(name, 'study')}_map50.png"}
    plots.route_bars([asdict(r) for r in rows], out / img["map50"], f"{name}: best.pt mAP50 per route (mean, seeds as dots)")
    leaky = next((r for r in rows if r.route == "leaky"), None)
    undertrained = leaky is None or leaky.mean["map50"] is None or leaky.mean["map50"] < UNDERTRAINED_MAP50
    close = [] if undertrained else [r.route for r in rows if r.route != "leaky" and r.variant.endswith("relu")
                                     and r.gap_pp["map50"] is not None and r.gap_pp["map50"] >= -0.5]
    env = environment()
    text = env.get_template(f"study_{lang}.md.j2").render(
        name=md_text(name, False), rows=rows, seeds=spec["seeds"], targets=spec["targets"], data=md_text(spec["data"], False),
        recipe=spec["recipe_resolved"],
        close=close, how_ko=HOW_KO, undertrained=undertrained, floor=UNDERTRAINED_MAP50, img=img)
    return write_text(out / f"study_{unique_slug(name, 'study')}_{lang}.md", tidy_markdown(text))
