import json
import re
from html.parser import HTMLParser

import pytest
from typer.testing import CliRunner

from npuyolo.cli import app
from npuyolo.registry.db import Registry
from npuyolo.report.facts import run_facts
from npuyolo.report.render import render_run, render_series

runner = CliRunner()
RECIPE = {"epochs": 3, "batch": 16, "imgsz": 640, "optimizer": "SGD", "lr0": 0.003, "lr_final": 0.0001, "momentum": 0.9,
          "weight_decay": 0.001, "warmup_epochs": 5, "seed": 0, "workers": 2}
LEAKY = [  # epoch rows as a real run records them
    dict(box_loss=2.0, cls_loss=4.0, dfl_loss=1.6, precision=0.40, recall=0.30, map50=0.20, map50_95=0.10, lr=0.001),
    dict(box_loss=1.5, cls_loss=2.5, dfl_loss=1.4, precision=0.70, recall=0.60, map50=0.65, map50_95=0.45, lr=0.002),
    dict(box_loss=1.2, cls_loss=1.6, dfl_loss=1.3, precision=0.901, recall=0.819, map50=0.901, map50_95=0.769, lr=0.0001),
]
RELU_FINAL = dict(box_loss=1.25, cls_loss=1.7, dfl_loss=1.32, precision=0.88, recall=0.83, map50=0.878, map50_95=0.75, lr=0.0001)


def npu_report(target, share, fallback):
    return {"target": target, "share_nodes": share, "share_nodes_fused": share, "share_macs": 1.0, "partitions_npu": 1,
            "partitions_host": len(fallback), "transitions": 2 * sum(fallback.values()), "fallback_ops": fallback,
            "unknown_ops": {}, "placements": [], "notes": []}


@pytest.fixture
def recorded(tmp_path):
    """A tiny recorded series: LeakyReLU run (+ NPU checks), its ReLU twin, and a run that died at epoch 0."""
    reg = Registry(tmp_path / "r.db")
    reg.upsert_series("v3", {"variants": ["L4-leaky", "L4-relu", "L4-relu6"]})

    def run(variant, rows, status="finished"):
        rid = reg.create_run(name=f"v3-{variant}", variant=variant, recipe=RECIPE, data_path="/data/signs.yaml",
                             data_hash="abcd", class_names=["stop", "speedlimit"], weights_source=None, device="cpu",
                             versions={"torch": "2.14.1"}, series="v3")
        for i, row in enumerate(rows, start=1):
            reg.record_epoch(rid, i, **row, epoch_time_s=10.0)
        reg.set_status(rid, status, error="CUDA out of memory" if status == "failed" else None)
        reg.set_series_member("v3", variant, rid)
        return rid

    leaky = run("L4-leaky", LEAKY)
    relu = run("L4-relu", [LEAKY[0], LEAKY[1], RELU_FINAL])
    dead = run("L4-relu6", [], status="failed")
    reg.add_npu_check(run_id=leaky, model_ref="v3-L4-leaky", onnx_path="/x.onnx", head="npu",
                      report=npu_report("relu-only", 0.638, {"LeakyRelu": 83}))
    reg.add_npu_check(run_id=leaky, model_ref="v3-L4-leaky", onnx_path="/x.onnx", head="npu",
                      report=npu_report("rknn-rk3588", 1.0, {}))
    fp32 = {"map50": 0.534, "map50_95": 0.374, "precision": 0.831, "recall": 0.522, "per_class": {}}
    int8 = {"map50": 0.5249, "map50_95": 0.3732, "precision": 0.809, "recall": 0.525, "per_class": {}}
    reg.add_deploy_eval(run_id=leaky, artefact="/d/leaky-fp32.onnx", precision_kind="fp32", result=fp32)
    reg.add_deploy_eval(run_id=leaky, artefact="/d/leaky-int8.onnx", precision_kind="int8", result=int8)
    return reg, leaky, relu, dead


INT8_EVALS = ({"map50": 0.534, "map50_95": 0.374}, {"map50": 0.5249, "map50_95": 0.3732})


SECTIONS = {
    "en": ["training report", "## 1. Final-epoch metrics", "## 2. Standing in the series", "## 3. Training setup",
           "## 4. Progress", "## 5. Comparison", "## 6. NPU compatibility and deployment", "Deployment strategies",
           "**Strengths**", "**Weaknesses**", "**Key results**", "**Recommended use and next steps**",
           "## 8. Training metadata", "## Conclusion"],
    "ko": ["학습 보고서", "## 1. 최종 에폭 성능", "## 2. 시리즈 내 순위", "## 3. 학습 설정", "## 4. 학습 진행 분석", "## 5. 비교",
           "## 6. NPU 호환성과 배포", "배포 전략", "**강점**", "**약점**", "**핵심 결과**", "**권장 용도와 다음 단계**",
           "## 8. 학습 메타데이터", "## 결론"],
}


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_report_has_every_section_with_the_right_numbers(recorded, tmp_path, lang):
    reg, leaky, relu, _ = recorded
    text = render_run(reg, leaky, tmp_path / lang, lang=lang, compare=relu).read_text(encoding="utf-8")
    for heading in SECTIONS[lang]:
        assert heading in text, heading
    for value in ("0.901", "0.769", "0.819", "1.2000", "1.6000", "LeakyReLU(0.1)", "0.003", "0.0001", "SGD", "seed: 0",
                  "63.8%", "100.0%", "LeakyRelu×83", "stop, speedlimit"):
        assert value in text, value
    assert "3.3%" in text and "10%" not in text  # the user's report claimed a "10%" final lr
    # the NPU table leads with what a deployment feels: CPU-fallback count, host partitions, MAC share (issue 9)
    row = next(line for line in text.splitlines() if line.startswith("| relu-only |"))
    assert row.split(" | ")[1:5] == ["83", "1", "100.0%", "63.8%"]
    for kind in ("metrics", "losses", "compare", "npu"):
        png = f"run{leaky}_vs_run{relu}_{kind}.png"
        assert (tmp_path / lang / png).stat().st_size > 1000 and f"]({png})" in text


def test_consistency_every_derived_figure_recomputed(recorded, tmp_path):
    reg, leaky, relu, _ = recorded
    text = render_run(reg, leaky, tmp_path, lang="en", compare=relu).read_text()
    first, last = LEAKY[0], LEAKY[-1]
    assert f"({last['map50'] / first['map50']:.2f}×)" in text  # improvement factor 4.50×
    for k in ("box_loss", "cls_loss", "dfl_loss"):
        assert f"({(first[k] - last[k]) / first[k] * 100:.1f}% lower)" in text
    for m in ("map50", "map50_95", "precision", "recall"):
        assert f"{(last[m] - RELU_FINAL[m]) * 100:+.1f} pp" in text
    assert f"({RECIPE['lr_final'] / RECIPE['lr0'] * 100:.1f}% of lr0)" in text
    fp32, int8 = INT8_EVALS
    assert f"| leaky-int8.onnx | INT8 | {int8['map50']:.3f} | {int8['map50_95']:.3f} | {(fp32['map50'] - int8['map50']) * 100:.2f} points (no interval recorded) |" in text
    # every 3- or 4-decimal number printed is a recorded value
    recorded_values = {f"{v:.3f}" for row in (*LEAKY, RELU_FINAL) for v in row.values()}
    recorded_values |= {f"{v:.4f}" for row in (*LEAKY, RELU_FINAL) for v in row.values()}
    recorded_values |= {"0.003", "0.001", "0.000"}  # recipe values and the untrained best.pt
    recorded_values |= {f"{v:.3f}" for e in INT8_EVALS for v in e.values()}
    for number in re.findall(r"(?<![\d.])\d+\.\d{3,4}(?![\d])", text):
        assert number in recorded_values, number


def test_judgements_follow_the_numbers(recorded, tmp_path):
    reg, leaky, relu, _ = recorded
    facts = run_facts(reg, leaky, relu)
    keys = {(j.kind, j.key, j.values.get("metric") or j.values.get("target")) for j in facts.judgements}
    assert ("strength", "series_first", "map50") in keys  # 0.901 > 0.878
    assert ("strength", "series_first", "recall") not in keys  # 0.819 < 0.83: not #1
    assert ("weakness", "series_last", "recall") in keys
    assert ("weakness", "npu_fallback", "relu-only") in keys and ("strength", "npu_ready", "rknn-rk3588") in keys
    assert any(j.key == "int8_drop" and j.kind == "strength" and abs(j.values["pp"] - 0.91) < 1e-9 for j in facts.judgements)
    # no plan recorded: no deployment strategy or next step is inferred from the placement rules; the report says how
    # to make a plan (issue 22: before, "rewrite LeakyReLU" was advised where the rewrite did not fit)
    assert {(j.kind, j.key) for j in facts.judgements if j.kind in ("strategy", "recommendation")} == {
        ("strategy", "no_plan"), ("recommendation", "run_plan")}


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_an_int8_drop_within_noise_is_said_so_and_is_no_weakness(recorded, tmp_path, lang):
    """Issue 31: the INT8 drop was printed as a fact (and a drop over 1 point called a weakness) with no interval."""
    reg, leaky, relu, _ = recorded
    drop = {"map50": {"metric": "map50", "pp": {"value": 1.5, "low": -0.4, "high": 3.1}, "verdict": "tied", "text": "t"}}
    reg.add_deploy_eval(run_id=leaky, artefact="/d/leaky-int8b.onnx", precision_kind="int8",
                        result={"map50": 0.519, "map50_95": 0.37, "precision": 0.8, "recall": 0.5, "per_class": {},
                                "drop_interval": drop})
    real = {"map50": {"metric": "map50", "pp": {"value": 2.4, "low": 1.1, "high": 3.9}, "verdict": "ahead", "text": "t"}}
    reg.add_deploy_eval(run_id=leaky, artefact="/d/leaky-int8c.onnx", precision_kind="int8",
                        result={"map50": 0.510, "map50_95": 0.36, "precision": 0.8, "recall": 0.5, "per_class": {},
                                "drop_interval": real})
    facts = run_facts(reg, leaky)
    by_artefact = {j.values["artefact"]: j for j in facts.judgements if j.key == "int8_drop"}
    assert by_artefact["leaky-int8b.onnx"].kind == "strength" and by_artefact["leaky-int8b.onnx"].values["ci"]["tied"]
    assert by_artefact["leaky-int8c.onnx"].kind == "weakness" and not by_artefact["leaky-int8c.onnx"].values["ci"]["tied"]
    text = render_run(reg, leaky, tmp_path / lang, lang=lang).read_text(encoding="utf-8")
    if lang == "en":
        assert "| 1.50 points (95% -0.40 to +3.10, within noise) |" in text
        assert "| 2.40 points (95% +1.10 to +3.90) |" in text
        assert "loses 1.50 mAP50 points against FP32 (95% -0.40 to +3.10 over the val images: within noise)" in text
    else:
        assert "| 1.50포인트 (95% 구간 -0.40 ~ +3.10, 잡음 범위 안) |" in text
        assert "| 2.40포인트 (95% 구간 +1.10 ~ +3.90) |" in text


def test_missing_data_is_named_with_its_command(recorded, tmp_path):
    reg, leaky, relu, dead = recorded
    text = render_run(reg, relu, tmp_path / "relu", lang="en").read_text()
    assert "No NPU check recorded for this run" in text and f"npuyolo npu check {relu}" in text
    assert f"no deployment plan recorded, so no strategy is claimed: `npuyolo deploy plan {relu} -t TARGET" in text
    assert "No comparison run given" in text and "no INT8 deployment recorded" in text and f"npuyolo deploy quantize {relu}" in text
    dead_text = render_run(reg, dead, tmp_path / "dead", lang="ko").read_text(encoding="utf-8")
    assert "기록된 에폭이 없습니다" in dead_text and f"npuyolo train --resume {dead}" in dead_text
    assert "CUDA out of memory" in dead_text


def test_bad_references_give_clear_messages(recorded, tmp_path):
    reg, *_ = recorded
    result = runner.invoke(app, ["report", "999", "--registry", str(reg.path)])
    assert result.exit_code == 2 and "no run '999'" in result.output
    reg.upsert_series("empty", {"variants": ["L4-relu"]})
    result = runner.invoke(app, ["series", "report", "empty", "--registry", str(reg.path), "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "no finished member" in result.output
    result = runner.invoke(app, ["report", "1", "--lang", "fr", "--registry", str(reg.path), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "--lang" in result.output


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.links = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(a.get("src", ""))
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a)


def test_html_is_one_self_contained_file(recorded, tmp_path):
    reg, leaky, relu, _ = recorded
    path = render_run(reg, leaky, tmp_path, lang="ko", fmt="html", compare=relu)
    html = path.read_text(encoding="utf-8")
    parser = _Images()
    parser.feed(html)
    assert len(parser.srcs) == 4 and all(s.startswith("data:image/png;base64,") and len(s) > 2000 for s in parser.srcs)
    assert parser.links == [] and "<table>" in html and "학습 보고서" in html


def test_series_report(recorded, tmp_path):
    reg, leaky, *_ = recorded
    path = render_series(reg, "v3", tmp_path, lang="en")
    text = path.read_text()
    assert "| L4-leaky | 1 | finished | 0.901 (#1)" in text and "| L4-relu6 | 3 | failed | - |" in text
    assert "CPU-fallback ops / host partitions / MAC share / node share" in text and "| 83 / 1 / 100.0% / 63.8% |" in text
    assert (tmp_path / "series_v3_curves.png").is_file() and (tmp_path / "series_v3_accuracy_vs_npu.png").is_file()
    html = render_series(reg, "v3", tmp_path / "html", lang="en", fmt="html").read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html and html.count('src="data:image/png;base64,i') == 2
    ko = render_series(reg, "v3", tmp_path / "ko", lang="ko").read_text(encoding="utf-8")
    assert "시리즈 개요" in ko and "검사 안 함" in ko
    assert "Deployment plan" not in text and "배포 계획" not in ko  # no member has a recorded plan: no matrix


def test_two_reports_in_one_folder_keep_their_own_plots(recorded, tmp_path):
    reg, leaky, relu, _ = recorded
    a = render_run(reg, leaky, tmp_path, lang="en").read_text()
    b = render_run(reg, relu, tmp_path, lang="en").read_text()
    assert f"run{leaky}_metrics.png" in a and f"run{relu}_metrics.png" in b
    assert (tmp_path / f"run{leaky}_metrics.png").read_bytes() != (tmp_path / f"run{relu}_metrics.png").read_bytes()


@pytest.mark.slow
def test_report_shows_ultralytics_validation_plots(synth_data, tiny_recipe, tmp_path):
    from npuyolo.registry.db import Registry
    from npuyolo.train.trainer import train_variant

    reg = Registry(tmp_path / "r.db")
    run = train_variant(reg, "L4-relu", synth_data, tiny_recipe.model_copy(update={"plots": True}), verbose=False)
    html = render_run(reg, run.run_id, tmp_path / "out", lang="en", fmt="html").read_text()
    assert (tmp_path / "out" / f"run{run.run_id}_confusion.png").is_file() and (tmp_path / "out" / f"run{run.run_id}_val_pred.jpg").is_file()
    assert 'alt="confusion matrix" src="data:image/png;base64,' in html and 'alt="val predictions" src="data:image/jpeg;base64,' in html


def test_series_plot_includes_the_recommended_rewrite_and_it_dominates_relu(tmp_path):
    from npuyolo.deploy.check import check_model
    from npuyolo.train.recipe import Recipe

    reg = Registry(tmp_path / "r.db")
    reg.upsert_series("v", {"variants": ["L4-leaky", "L4-relu"], "name": "v"})
    for variant, map50 in (("L4-leaky", 0.471), ("L4-relu", 0.295)):
        rid = reg.create_run(name=f"v-{variant}-run", variant=variant, recipe=Recipe.load(imgsz=64).model_dump(), data_path="d",
                             data_hash="h", class_names=["a"], weights_source=None, device="cpu", versions={}, series="v")
        reg.set_series_member("v", variant, rid)
        reg.record_epoch(rid, 1, map50=map50, map50_95=map50 / 2, precision=0.5, recall=0.4)
        reg.set_status(rid, "finished")
        checked = check_model(None, variant, ["relu-only"], imgsz=64, nc=1, workdir=tmp_path / variant)  # as `npu check` does
        reg.add_npu_check(run_id=rid, model_ref=variant, onnx_path=checked.onnx_paths["relu-only"], head="npu",
                          report=checked.reports[0].as_dict())
    text = render_series(reg, "v", tmp_path / "out", lang="en", target="relu-only").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| L4-leaky + relu-decomp"))
    assert "| derived | 0.471 |" in row and "100.0%" in row and row.rstrip().endswith("| yes |")
    relu = next(line for line in text.splitlines() if line.startswith("| L4-relu |"))
    assert not relu.rstrip().endswith("| yes |")  # dominated: same placement, lower accuracy
    assert (tmp_path / "out" / "series_v_accuracy_vs_npu.png").is_file()


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_report_says_which_placement_a_compiler_checked(recorded, tmp_path, lang):
    """rknn-rk3588 was refereed by RKNN-Toolkit2 (a recorded compile); relu-only was not: modelled from documents."""
    reg, leaky, relu, _ = recorded
    reg.add_compiler_run(run_id=leaky, model_ref="v3-L4-leaky", onnx_path="/x.onnx", compiler="rknn-toolkit2", version="2.5.0",
                         target="rknn-rk3588", log_path="/x.log",
                         result={"agreement": {"agree": 221, "mapped": 223, "share": 221 / 223}})
    reg.add_npu_check(run_id=leaky, model_ref="v3-L4-leaky", onnx_path="/x.onnx", head="npu", report=npu_report("ethos-u55", 1.0, {}))
    reg.add_compiler_run(run_id=leaky, model_ref="v3-L4-leaky", onnx_path="/x.onnx", compiler="vela", version="5.2.0",
                         target="ethos-u55", log_path="/v.log",
                         result={"agreement": {"agree": 0, "mapped": 0, "share": None},
                                 "build": {"summary": {"rows_npu": 308, "rows_cpu": 0, "inference_ms": 173.6}}})
    text = render_run(reg, leaky, tmp_path / lang, lang=lang).read_text(encoding="utf-8")
    if lang == "en":
        assert "- rknn-rk3588: placement checked by a compiler (rknn-toolkit2 2.5.0: 221 of 223 mapped nodes" in text
        assert "- relu-only: placement modelled from documents" in text
        assert ("- ethos-u55: placement checked by a compiler (vela 5.2.0: 308 operators on the NPU, 0 on the CPU; "
                "estimated NPU inference time 173.6 ms)") in text
    else:
        assert "- rknn-rk3588: 컴파일러로 확인한 배치 (rknn-toolkit2 2.5.0: 매핑된 노드 223개 중 221개" in text
        assert "- relu-only: 문서 기반으로 모델링한 배치" in text
        assert "- ethos-u55: 컴파일러로 확인한 배치 (vela 5.2.0: NPU 연산 308개, CPU 연산 0개; 추정 NPU 추론 시간 173.6 ms)" in text
    series = render_series(reg, "v3", tmp_path / f"s-{lang}", lang=lang, target="rknn-rk3588").read_text(encoding="utf-8")
    modelled = render_series(reg, "v3", tmp_path / f"m-{lang}", lang=lang, target="relu-only").read_text(encoding="utf-8")
    if lang == "en":
        assert "Placement on rknn-rk3588 was checked by a compiler for L4-leaky (rknn-toolkit2 2.5.0)" in series
        assert "Placement on relu-only is modelled from documents" in modelled
    else:
        assert "rknn-rk3588 배치는 L4-leaky(rknn-toolkit2 2.5.0)에 대해 컴파일러로 확인했고" in series
        assert "relu-only 배치는 문서 기반으로 모델링한 값입니다" in modelled



def _rendered(recorded, tmp_path, lang):
    from npuyolo.report.render import markdown_to_html

    reg, leaky, _, _ = recorded
    text = render_run(reg, leaky, tmp_path / lang, lang=lang).read_text(encoding="utf-8")
    return text, markdown_to_html(text)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_placement_bullets_are_one_list_item_each(recorded, tmp_path, lang):
    """Issue 22: the placement bullets were glued into one line, and the NPU figure glued to them."""
    _, page = _rendered(recorded, tmp_path, lang)
    items = re.findall(r"<li>(.*?)</li>", page, flags=re.S)
    placement = [i for i in items if "modelled from documents" in i or "모델링한 배치" in i]
    assert [i.split(":")[0] for i in placement] == ["relu-only", "rknn-rk3588"]
    assert all(i.count("modelled from documents") + i.count("모델링한 배치") == 1 for i in placement)
    assert not [i for i in items if "<img" in i or "![" in i]
    assert re.search(r"<p><img alt=\"npu\"", page)


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_conclusion_sentences_are_separated(recorded, tmp_path, lang):
    """Issue 22: '...입니다 (...).amd-dpu에서는' had no space after the full stop."""
    text, _ = _rendered(recorded, tmp_path, lang)
    conclusion = text.split("## 결론" if lang == "ko" else "## Conclusion")[1].strip()
    assert not re.findall(r"\.(?=[^\s\d])", conclusion), "a full stop glued to the next sentence"
    assert ("1위). relu-only에서는" if lang == "ko" else "in mAP50). On relu-only") in conclusion


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_no_table_starts_with_an_empty_header_row(recorded, tmp_path, lang):
    """Issue 22: the run and setup tables started with an empty header row (| | |)."""
    text, page = _rendered(recorded, tmp_path, lang)
    assert not re.findall(r"<th>\s*</th>", page)
    assert "| | |" not in text


def _record_plan(reg, run_id, twin_id, folder):
    """A plan as `deploy plan` records it, from hand-made verified rows (the numbers a 1-epoch model cannot give):
    amd-dpu keeps the re-sloped export, relu-only ships the ReLU twin (its FP32 2 points below the rewrite), edgetpu
    fits nothing at this size, ethos-u55 keeps native LeakyReLU by Vela's times."""
    from npuyolo.deploy.plan import Accuracy, Candidate, Placement, Plan, Row, TargetPlan, rank, target_advice

    def row(t, source, graph, share, off, fp32, int8, ms=None, first_off=None):
        acc = lambda m: Accuracy(0.8, 0.7, m, m * 0.6)  # noqa: E731
        placement = Placement(share, 300, off, 0, min(off, 9), {"LeakyRelu": off} if off else {}, {}, npu_ms=ms,
                              first_off_npu=first_off, compiler="vela 5.2.0" if ms else None,
                              compiler_status="compiled" if ms else None)
        return Row(t, Candidate(source, graph, "int8"), f"/p/{t}-{graph}.onnx", f"/p/{t}-{graph}-int8.onnx", placement,
                   acc(fp32), acc(int8), acc(fp32 - 0.05), acc(int8 - 0.06), 0.25)

    cut = "Conv /model.0/conv/Conv: output 1x16x160x160 (409600 values) is larger than the largest activation documented to map (200704)"
    rows = {
        "amd-dpu": [row("amd-dpu", "export", None, 0.582, 92, 0.640, 0.630),
                    row("amd-dpu", "export", "slope0.1015625", 0.959, 9, 0.638, 0.629)],
        "relu-only": [row("relu-only", "export", "relu-decomp", 1.0, 3, 0.640, 0.631),
                      row("relu-only", "relu-twin", None, 1.0, 0, 0.620, 0.612)],
        "edgetpu": [row("edgetpu", "export", None, 0.0, 223, 0.640, 0.630, first_off=cut)],
        "ethos-u55": [row("ethos-u55", "export", None, 1.0, 0, 0.640, 0.630, ms=20.7),
                      row("ethos-u55", "export", "relu-decomp", 1.0, 0, 0.640, 0.629, ms=52.6)],
    }
    targets = []
    for t, rs in rows.items():
        chosen, runner, why = rank(rs)
        targets.append(TargetPlan(t, chosen, runner, why, rs, target_advice(t, rs, "L4-leaky")))
    plan = Plan("v3-L4-leaky", run_id, "/data/signs.yaml", 0.25, "minmax", targets, twin_run_id=twin_id)
    path = folder / "plan.json"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan.as_dict()))
    reg.add_artifact(run_id, "plan", path)
    return plan


def test_deployment_and_next_steps_come_from_the_recorded_plan(recorded, tmp_path):
    reg, leaky, relu, _ = recorded
    plan = _record_plan(reg, leaky, relu, tmp_path / "plan")
    facts = run_facts(reg, leaky, relu)
    strategies = [j for j in facts.judgements if j.kind == "strategy"]
    assert [(j.key, j.values["target"], j.values["artefact"]) for j in strategies] == [
        ("plan_choice", tp.target, tp.chosen.candidate.name) for tp in plan.targets]
    assert [j.values["artefact"] for j in strategies] == ["export+slope0.1015625+int8", "relu-twin+int8", "export+int8",
                                                          "export+int8"]
    steps = {j.key: j.values for j in facts.judgements if j.kind == "recommendation"}
    assert steps["plan_reslope"]["target"] == "amd-dpu" and steps["plan_reslope"]["retrain"] is False
    assert steps["plan_little_on_npu"]["target"] == "edgetpu" and "409600 values" in steps["plan_little_on_npu"]["first_off_npu"]
    assert steps["plan_rewrite_cost"]["ratio"] == pytest.approx(52.6 / 20.7)
    assert steps["plan_distill"] == {"targets": "relu-only", "pp": pytest.approx(2.0), "other": "v3-L4-relu"}
    assert "run_plan" not in steps and "no_plan" not in {j.key for j in strategies}


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_the_plan_renders_as_a_table_and_one_bullet_per_line(recorded, tmp_path, lang):
    """The issue's formatting complaints, on the plan's sections: every strategy and next step is its own list item
    (checked on the rendered HTML's list structure), and the plan table has one row per target."""
    import markdown

    reg, leaky, relu, _ = recorded
    _record_plan(reg, leaky, relu, tmp_path / "plan")
    text = render_run(reg, leaky, tmp_path / lang, lang=lang, compare=relu).read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith(("| amd-dpu |", "| relu-only |", "| edgetpu |", "| ethos-u55 |"))
            and "int8" in line]
    assert [r.split(" | ")[1] for r in rows] == ["export+slope0.1015625+int8", "relu-twin+int8", "export+int8", "export+int8"]
    assert rows[3].split(" | ")[4] == "20.70 ms"
    html = markdown.markdown(text, extensions=["tables"])
    items = re.findall(r"<li>(.*?)</li>", html, flags=re.S)
    starts = ("amd-dpu:", "relu-only:", "edgetpu:", "ethos-u55:")
    plan_items = [i for i in items if i.startswith(starts) and not ("placement modelled" in i or "모델링한 배치" in i)]
    assert len(plan_items) == 4 + 3  # four choices; re-slope, edgetpu's cut, Ethos-U's rewrite cost
    assert all("\n" not in i and "\n-" not in i and i.count(":") >= 1 for i in plan_items)
    assert not any(s in i[len(s):] for i in plan_items for s in starts)  # never two targets glued into one item
    assert "409600 values" in html and ("distil" in html or "증류" in html)


def test_an_old_edited_or_hostile_plan_never_breaks_the_report(recorded, tmp_path):
    """A plan.json from before advice was data still shows its notes; one whose chosen row is missing counts as no
    plan (not a crash); a node name with Markdown or HTML in it stays text in both formats."""
    reg, leaky, relu, _ = recorded
    plan = _record_plan(reg, leaky, relu, tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    d = json.loads(path.read_text())
    hostile = "Conv </td><script>alert(1)</script> | [x](http://e) *y*"
    for tp in d["targets"]:
        tp.pop("advice"), tp.pop("runner_up_lost_on")
    d.pop("twin_run_id")
    d["targets"][2]["notes"] = [f"the first node off the NPU there: {hostile}"]
    path.write_text(json.dumps(d))
    for lang in ("en", "ko"):
        md = render_run(reg, leaky, tmp_path / f"old-{lang}", lang=lang).read_text(encoding="utf-8")
        assert "edgetpu: the first node off the NPU there: Conv &lt;/td&gt;&lt;script&gt;" in md and "\\| \\[x\\]" in md
        assert all(f"| {tp.target} |" in md for tp in plan.targets)
        html = render_run(reg, leaky, tmp_path / f"old-{lang}-html", lang=lang, fmt="html").read_text(encoding="utf-8")
        assert "<script>alert" not in html and 'href="http://e"' not in html
    d["targets"][0]["chosen"] = "export+nothing+int8"  # edited by hand: the chosen row is gone
    path.write_text(json.dumps(d))
    facts = run_facts(reg, leaky, relu)
    assert facts.plan is None and {j.key for j in facts.judgements if j.kind == "strategy"} == {"no_plan"}
    path.write_text("{\"targets\": [")  # truncated
    assert run_facts(reg, leaky, relu).plan is None


def test_a_fifo_or_a_device_at_the_recorded_plan_is_no_plan(recorded, tmp_path):
    """Issue 36, severe 2: a FIFO at the run's recorded plan.json hung `report` and `series report` for ever (a link to
    an endless device would read for ever). The plan is read like every other file: regular files only, size-capped."""
    import os
    import subprocess
    import sys

    reg, leaky, relu, _ = recorded
    _record_plan(reg, leaky, relu, tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    path.unlink()
    os.mkfifo(path)
    for argv in (["report", str(leaky)], ["series", "report", "v3"]):
        done = subprocess.run([sys.executable, "-m", "npuyolo.cli", *argv, "--registry", str(reg.path), "--out",
                               str(tmp_path / "out")], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    facts = run_facts(reg, leaky, relu)
    assert facts.plan is None and "not a regular file" in facts.plan_note
    for target in ("/dev/zero", "/dev/urandom"):
        path.unlink()
        path.symlink_to(target)
        assert run_facts(reg, leaky, relu).plan is None
        text = render_series(reg, "v3", tmp_path / "s", lang="en").read_text()
        assert "Deployment plan" not in text
    path.unlink()
    path.write_text(" " * (17 << 20))  # larger than any plan npuyolo writes
    facts = run_facts(reg, leaky, relu)
    assert facts.plan is None and "larger than" in facts.plan_note


HAND_EDITS = {  # issue 36: values of the wrong type crashed `report` and `series report` (format codes, Jinja, not a mapping)
    "share_nodes: 'lots'": lambda d: d["targets"][0]["rows"][1]["placement"].update(share_nodes="lots"),
    "fp32.map50: '0.5'": lambda d: d["targets"][0]["rows"][1]["fp32"].update(map50="0.5"),
    "npu_ms: 'fast'": lambda d: d["targets"][3]["rows"][0]["placement"].update(npu_ms="fast"),
    "advice: reslope without values": lambda d: d["targets"][0].update(advice=[{"kind": "reslope", "values": {}}]),
    "advice: 'abc'": lambda d: d["targets"][0].update(advice="abc"),
    "advice of an unknown kind": lambda d: d["targets"][0].update(advice=[{"kind": "nope", "values": {}}]),
    "conf: true": lambda d: d.update(conf=True),
    "targets: {}": lambda d: d.update(targets={}),
    "rows: a string": lambda d: d["targets"][1].update(rows="abc"),
}
VALID_EDITS = {  # legal in the model: a report shows the plan (advice null reads as a plan recorded before advice)
    "advice: null": lambda d: d["targets"][0].update(advice=None),
    "runner_up_lost_on: null": lambda d: [t.update(runner_up_lost_on=None) for t in d["targets"]],
    # the model allows no reason beside a runner-up: the English report's "no interval recorded" test ran `in` on null
    "why_runner_up_lost: null, lost on INT8 mAP50": lambda d: d["targets"][0].update(
        why_runner_up_lost=None, runner_up_lost_on={"axis": "int8_map50", "loser": 0.6, "winner": 0.63}),
}


@pytest.mark.parametrize("edit", list(VALID_EDITS))
def test_a_hand_edited_plan_that_is_still_valid_renders(recorded, tmp_path, edit):
    reg, leaky, relu, _ = recorded
    _record_plan(reg, leaky, relu, tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    d = json.loads(path.read_text())
    VALID_EDITS[edit](d)
    path.write_text(json.dumps(d))
    assert run_facts(reg, leaky, relu).plan is not None
    for lang in ("en", "ko"):
        assert "| amd-dpu |" in render_run(reg, leaky, tmp_path / lang, lang=lang, compare=relu).read_text(encoding="utf-8")


@pytest.mark.parametrize("edit", [*HAND_EDITS, "nested 200,000 deep"])
def test_a_hand_edited_plan_of_the_wrong_types_is_no_plan_with_a_note(recorded, tmp_path, edit):
    """The whole plan is validated by one typed model; an invalid plan counts as no plan and the report says why in one
    line, in both languages and formats, and the series report leaves that member out."""
    reg, leaky, relu, _ = recorded
    _record_plan(reg, leaky, relu, tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    if edit in HAND_EDITS:
        d = json.loads(path.read_text())
        HAND_EDITS[edit](d)
        path.write_text(json.dumps(d))
    else:
        path.write_text("[" * 200_000 + "]" * 200_000)
    facts = run_facts(reg, leaky, relu)
    assert facts.plan is None and facts.plan_note and "\n" not in facts.plan_note
    assert {j.key for j in facts.judgements if j.kind == "strategy"} == {"no_plan"}
    for lang in ("en", "ko"):
        for fmt in ("md", "html"):
            text = render_run(reg, leaky, tmp_path / f"r-{lang}-{fmt}", lang=lang, fmt=fmt).read_text(encoding="utf-8")
            assert "plan.json" in text and ("not a valid plan" in text or "유효한 계획이 아닙니다" in text)
        series = render_series(reg, "v3", tmp_path / f"s-{lang}", lang=lang).read_text(encoding="utf-8")
        assert "Deployment plan" not in series and "배포 계획:" not in series


def test_plan_text_with_markdown_or_html_stays_text_in_markdown_reports(recorded, tmp_path):
    """Issue 36: a target name in plan.json holding Markdown or HTML reached report_*_en.md and series_*_en.md raw: a
    heading, <script>, a remote image (the HTML reports were escaped already)."""
    reg, leaky, relu, _ = recorded
    _record_plan(reg, leaky, relu, tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    d = json.loads(path.read_text())
    hostile = "# head <script>alert(1)</script> ![x](http://e/i.png) | `code` *y*\n# second"
    for tp in d["targets"]:
        tp["target"] = f"{tp['target']}{hostile}"
        for r in tp["rows"]:
            r["target"] = tp["target"]
            r["candidate"]["name"] = r["candidate"]["name"] + "`|<b>"
        tp["chosen"] += "`|<b>"
        tp["runner_up"] = tp["runner_up"] and tp["runner_up"] + "`|<b>"
        for a in tp["advice"]:
            if a["kind"] == "reslope":
                a["values"]["train"] = "L4-leaky0.1` <img src=http://e/j.png> `"
            if a["kind"] == "rewrite_cost":
                a["values"]["graph"] = "<b>relu-decomp</b>"
    path.write_text(json.dumps(d))
    texts = [render_run(reg, leaky, tmp_path / f"r-{lang}", lang=lang, compare=relu).read_text(encoding="utf-8")
             for lang in ("en", "ko")]
    texts += [render_series(reg, "v3", tmp_path / f"s-{lang}", lang=lang).read_text(encoding="utf-8") for lang in ("en", "ko")]
    for text in texts:
        assert "relu-only" in text and ("Deployment plan" in text or "배포 계획" in text)
        assert "<script>" not in text and "<b>" not in text and "<img" not in text and "![x](http://e/i.png)" not in text
        assert not [line for line in text.splitlines() if line.startswith(("# head", "# second"))]
    for text in texts[2:]:  # the series matrix: one row per variant, as many cells as targets
        lines = text.splitlines()
        rows = [i for i, line in enumerate(lines) if line.startswith("| L4-leaky |") and "INT8 mAP50" in line]
        assert len(rows) == 1 and lines[rows[0] - 1].startswith("|---|")
        row, header = lines[rows[0]], lines[rows[0] - 2]
        assert row.replace("\\|", "").count("|") == header.replace("\\|", "").count("|") == 6  # variant + 4 targets


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_report_compare_states_the_paired_interval_or_says_one_seed(recorded, tmp_path, lang):
    """With both runs' per-image statistics, section 5 gives each difference with its paired interval and a verdict,
    and only a difference whose interval excludes 0 becomes a strength or weakness; without them, one seed, no
    interval. The generic '≤ 1.2 mAP points' claim is gone (it was no measurement of this run)."""
    from npuyolo.stats.matched import save_stats

    from .test_stats import as_stats, confident_model, missing_half

    reg, leaky, relu, _ = recorded
    plain = render_run(reg, leaky, tmp_path / "plain", lang=lang, compare=relu).read_text(encoding="utf-8")
    assert ("One seed each, no interval" if lang == "en" else "각각 시드 하나, 구간 없음") in plain
    assert ("(one seed, no interval)" if lang == "en" else "(시드 하나, 구간 없음)") in plain
    assert "1.2 mAP" not in plain and "≤ 1.2" not in plain
    per = confident_model(seed=5, images=60)
    for rid, stats in ((leaky, as_stats(per)), (relu, as_stats(missing_half(per)))):
        reg.add_artifact(rid, "stats/val", save_stats(stats, tmp_path / f"stats-{rid}.npz"))
    text = render_run(reg, leaky, tmp_path / "stats", lang=lang, compare=relu).read_text(encoding="utf-8")
    assert ("95% interval | verdict" if lang == "en" else "95% 구간 | 판정") in text
    assert ("v3-L4-leaky ahead" if lang == "en" else "v3-L4-leaky 우세") in text
    assert "one seed" not in text and "시드 하나" not in text


# ------------------------------------------------------------------------------------------------ hostile and careless input (the former test_hostile*.py)
import sqlite3
from pathlib import Path

from .helpers import cli, finished_run, new_run, one_line_error

HOSTILE = "<script>alert(1)</script>"


def test_html_report_keeps_hostile_names_as_text(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name='<img src=x onerror=alert(1)> [x](javascript:alert(2))', class_names=[HOSTILE, "ok"])
    for e in (1, 2):
        reg.record_epoch(rid, e, map50=0.1 * e, map50_95=0.05 * e, precision=0.2, recall=0.1 * e, box_loss=2.0 / e,
                         cls_loss=2.0 / e, dfl_loss=1.5 / e, lr=0.003)
    reg.set_status(rid, "finished")
    from npuyolo.report.render import render_run

    for lang in ("en", "ko"):
        html = render_run(reg, rid, tmp_path / "out", lang=lang, fmt="html").read_text()
        assert "<script>" not in html
        assert "<img src=x" not in html
        assert 'href="javascript:' not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html.split("</title>")[0]  # the title too


def test_markdown_tricks_in_names_stay_text(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name="x ![p](https://evil.example/name.gif)",
                  class_names=["![t](https://evil.example/pixel.gif)", "![j](javascript:alert(1))", "a|b|c", "last"])
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    reg.set_status(rid, "finished")
    from npuyolo.report.render import render_run

    html = render_run(reg, rid, tmp_path / "out", lang="en", fmt="html").read_text()
    assert "evil.example" not in "".join(html.split("<img")[1:]).split(">")[0]
    assert not [tag for tag in html.split("<img")[1:] if 'src="data:image/png' not in tag.split(">")[0]]
    assert "a|b|c, last" in html  # the pipe did not end the table cell
    md = render_run(reg, rid, tmp_path / "md", lang="en").read_text()
    assert "a\\|b\\|c" in md and "!\\[t\\](https://evil.example/pixel.gif)" in md


def test_markdown_reports_keep_raw_html_and_emphasis_as_text(tmp_path):
    from npuyolo.report.render import render_run

    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name="<img src=x onerror=alert(1)> run", class_names=["</td><script>alert(1)</script>", "*em* _u_"])
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    reg.set_status(rid, "finished")
    md = render_run(reg, rid, tmp_path / "md", lang="en").read_text()
    table = md.split("```yaml")[0]
    assert "<img" not in table and "<script>" not in table and "&lt;img src=x" in table and "\\*em\\*" in table
    html = render_run(reg, rid, tmp_path / "html", lang="en", fmt="html").read_text()
    assert "<em>" not in html and "*em* _u_" in html
    meta = html.split("Training metadata")[1]
    assert "model: &lt;img src=x onerror=alert(1)&gt; run_" in meta and "&amp;lt;" not in meta


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_a_hostile_artefact_name_on_int8_rows_with_a_drop_interval_stays_text(tmp_path, lang):
    """An INT8 file is named after its run (`deploy quantize` writes <run name>-...onnx): markup in the name stays text
    in the INT8 table and in the drop's judgement, beside its interval, in the HTML report (autoescaped) and in the .md
    report (entities, as every other recorded name there: before, the .md kept the raw tag and a | split the cell)."""
    name = "<img src=x onerror=alert(1)> run"
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name=name, class_names=["a", "b"])
    reg.record_epoch(rid, 1, map50=0.5, map50_95=0.3, precision=0.6, recall=0.5)
    reg.set_status(rid, "finished")
    scores = {"map50_95": 0.37, "precision": 0.8, "recall": 0.5, "per_class": {}}
    reg.add_deploy_eval(run_id=rid, artefact=f"/d/{name}-fp32.onnx", precision_kind="fp32", result={**scores, "map50": 0.534})
    tied = {"map50": {"metric": "map50", "pp": {"value": 1.5, "low": -0.4, "high": 3.1}, "verdict": "tied", "text": "t"}}
    reg.add_deploy_eval(run_id=rid, artefact=f"/d/{name}|x-int8.onnx", precision_kind="int8",
                        result={**scores, "map50": 0.519, "drop_interval": tied})
    cell = {"en": "1.50 points (95% -0.40 to +3.10, within noise)", "ko": "1.50포인트 (95% 구간 -0.40 ~ +3.10, 잡음 범위 안)"}[lang]

    html = render_run(reg, rid, tmp_path / "html", lang=lang, fmt="html").read_text(encoding="utf-8")
    assert "<img src=x" not in html and "<img" not in html.replace('<img alt="', "")  # only the report's own plots
    row = html.split("<td>&lt;img src=x onerror=alert(1)&gt; run|x-int8.onnx</td>")[1].split("</tr>")[0]
    assert f"<td>{cell}</td>" in row  # the whole name in one cell, its drop and interval beside it
    assert "(&lt;img src=x onerror=alert(1)&gt; run|x-int8.onnx)" in html  # the drop's judgement

    md = render_run(reg, rid, tmp_path / "md", lang=lang).read_text(encoding="utf-8")
    prose = md.split("```yaml")[0]  # what a Markdown viewer renders (the metadata after it is a code block)
    assert "<img" not in prose and "<" not in prose.replace("<br>", "")
    assert f"| &lt;img src=x onerror=alert(1)&gt; run\\|x-int8.onnx | INT8 | 0.519 | 0.370 | {cell} |" in prose
    assert "(&lt;img src=x onerror=alert(1)&gt; run\\|x-int8.onnx)" in prose


def test_series_report_of_a_traversal_name_stays_under_reports(tmp_path):
    work = tmp_path / "a" / "b"  # ../../../X from the registry's folder would land beside tmp_path
    db = work / "r.db"
    reg = Registry(db)
    name = "../../../X"
    reg.upsert_series(name, {"variants": ["L4-relu"], "name": name})
    rid = new_run(reg, name="member", series=name)
    reg.set_series_member(name, "L4-relu", rid)
    reg.record_epoch(rid, 1, map50=0.2, map50_95=0.1, precision=0.3, recall=0.2, box_loss=1.0, cls_loss=1.0, dfl_loss=1.0)
    reg.set_status(rid, "finished")
    r = cli("series", "report", name, registry=db)
    assert r.exit_code == 0, r.output
    written = Path(r.output.split("wrote ", 1)[1].strip())
    assert written.is_file() and (work / "reports").resolve() in written.resolve().parents
    assert not (tmp_path / "X").exists() and not (tmp_path.parent / "X").exists()


def test_unwritable_report_out(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    reg.set_status(rid, "finished")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert "--out" in one_line_error(cli("report", rid, "--out", blocker / "sub", registry=tmp_path / "r.db"))


def test_compare_with_itself(tmp_path):
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg)
    reg.record_epoch(rid, 1, map50=0.1, map50_95=0.05, precision=0.2, recall=0.1)
    assert "itself" in one_line_error(cli("report", rid, "--compare", rid, registry=tmp_path / "r.db"))


def test_a_read_command_never_writes_into_an_edited_save_dir(tmp_path):
    """A registry whose save_dir was edited made `report` (a read command) write into that outside folder."""
    db = tmp_path / "reg" / "r.db"
    reg, rid = finished_run(db)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    con = sqlite3.connect(db)
    con.execute("UPDATE runs SET save_dir = ? WHERE id = ?", (str(outside), rid))
    con.commit()
    con.close()
    assert "outside the registry's folder" in one_line_error(cli("report", "base", registry=db))
    assert list(outside.iterdir()) == []
    r = cli("report", "base", "--out", tmp_path / "mine", registry=db)  # the user's own --out is still fine
    assert r.exit_code == 0, r.output


def test_an_int8_map50_loss_is_worded_with_its_interval_and_an_old_plan_says_none_was_recorded(recorded, tmp_path):
    """The runner-up that lost on INT8 mAP50 alone (no NPU time): a plan.json recorded before the interval (no `gap_pp`)
    still loads and renders, saying no interval was recorded; a recorded interval that spans 0 is a tie on accuracy,
    one that excludes 0 a loss with its interval, in both languages."""
    from npuyolo.deploy.plan import load_recorded_plan, lost_text

    reg, leaky, relu, _ = recorded
    _record_plan(reg, leaky, relu, tmp_path / "plan")
    path = tmp_path / "plan" / "plan.json"
    recorded_plan = json.loads(path.read_text())
    cases = {  # gap_pp (None: recorded before it) -> what the en and ko reports say of ethos-u55's runner-up
        None: ("lost: lower INT8 mAP50: 0.726 against 0.728 (no interval recorded).",
               "INT8 mAP50이 낮음: 0.726 (선택한 산출물은 0.728; 구간 기록 없음)"),
        (0.2, -1.3, 1.7): ("lost: tied on INT8 mAP50: 0.726 against 0.728 (the chosen +0.2 points, 95% -1.3 to +1.7: "
                           "within noise); the higher point value was shipped.",
                           "INT8 mAP50은 동률: 0.726 (선택한 산출물은 0.728; 선택한 산출물이 +0.2%p, 95% 구간 -1.3%p~+1.7%p: "
                           "잡음 범위 안), 점추정이 더 높은 쪽을 배포"),
        (2.0, 0.5, 3.6): ("lost: lower INT8 mAP50: 0.706 against 0.728 (the chosen +2.0 points, 95% +0.5 to +3.6).",
                          "INT8 mAP50이 낮음: 0.706 (선택한 산출물은 0.728; 선택한 산출물이 +2.0%p, 95% 구간 +0.5%p~+3.6%p)"),
    }
    for gap, (en, ko) in cases.items():
        d = json.loads(json.dumps(recorded_plan))
        why = {"axis": "int8_map50", "loser": 0.726 if gap is None or gap[1] <= 0 else 0.706, "winner": 0.728}
        if gap is None:
            d["targets"][3]["why_runner_up_lost"] = "lower INT8 mAP50: 0.726 against 0.728"  # the old wording
        else:
            why["gap_pp"] = list(gap)
            d["targets"][3]["why_runner_up_lost"] = lost_text(why)
        d["targets"][3]["runner_up_lost_on"] = why
        path.write_text(json.dumps(d))
        assert load_recorded_plan(path)["targets"][3]["runner_up_lost_on"] == why
        said = {lang: " ".join(render_run(reg, leaky, tmp_path / f"{gap}-{lang}", lang=lang).read_text(encoding="utf-8")
                               .split()) for lang in ("en", "ko")}
        assert f"runner-up export+relu-decomp+int8 {en}" in said["en"], gap
        assert ko in said["ko"], gap


def _run_with_int8_drop(tmp_path, drop_interval) -> tuple[Registry, int]:
    """A finished run 'base' with an FP32 row (mAP50 0.534) and an INT8 row (0.519) recording `drop_interval`."""
    reg = Registry(tmp_path / "r.db")
    rid = new_run(reg, name="base")
    reg.record_epoch(rid, 1, map50=0.5, map50_95=0.3, precision=0.6, recall=0.5)
    reg.set_status(rid, "finished")
    scores = {"map50_95": 0.37, "precision": 0.8, "recall": 0.5, "per_class": {}}
    reg.add_deploy_eval(run_id=rid, artefact="/d/a-fp32.onnx", precision_kind="fp32", result={**scores, "map50": 0.534})
    reg.add_deploy_eval(run_id=rid, artefact="/d/a-int8.onnx", precision_kind="int8",
                        result={**scores, "map50": 0.519, "drop_interval": drop_interval})
    return reg, rid


@pytest.mark.parametrize("pp", [{"low": 10 ** 400, "high": 2.0}, {"low": "-0.4", "high": "3.1"}, {"low": "nan", "high": 1.0},
                                {"low": True, "high": 2.0}, {"low": float("-inf"), "high": float("inf")}])
def test_a_damaged_drop_interval_on_an_int8_row_is_no_interval(tmp_path, pp):
    """The INT8 row's recorded drop interval is read back from the registry (its result_json): a number too large for a
    float stopped `report` with OverflowError's traceback, and text, a bool or an infinity was printed as an interval
    ("+nan", "within noise" over -inf..+inf). Each is a damaged interval: the row says none was recorded."""
    _, rid = _run_with_int8_drop(tmp_path, {"map50": {"pp": pp}})
    r = cli("report", "base", "--out", tmp_path / "out", registry=tmp_path / "r.db")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "out" / f"report_{rid}_en.md").read_text(encoding="utf-8")
    assert "| a-int8.onnx | INT8 | 0.519 | 0.370 | 1.50 points (no interval recorded) |" in text
    assert "nan" not in text and "inf" not in text.replace("info", "")


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_a_recorded_optimizer_with_markup_stays_text_in_its_cell(tmp_path, lang):
    """The recipe's optimizer is only checked to be text when the row is read (a run.json imported whole, or an edited
    registry): the .md report printed it raw (<img ... onerror=...> live in a Markdown viewer) and a | in it split the
    setup table's cell, dropping the momentum beside it from the HTML report too."""
    import json

    db = tmp_path / "r.db"
    reg = Registry(db)
    rid = new_run(reg, name="base")
    reg.record_epoch(rid, 1, map50=0.5, map50_95=0.3, precision=0.6, recall=0.5)
    reg.set_status(rid, "finished")
    con = sqlite3.connect(db)
    recipe = json.loads(con.execute("SELECT recipe_json FROM runs WHERE id = ?", (rid,)).fetchone()[0])
    con.execute("UPDATE runs SET recipe_json = ? WHERE id = ?",
                (json.dumps({**recipe, "optimizer": "<img src=x onerror=alert(1)>|SGD", "momentum": 0.937}), rid))
    con.commit()
    con.close()
    word = {"en": "momentum", "ko": "모멘텀"}[lang]
    html = render_run(Registry(db, readonly=True), rid, tmp_path / "html", lang=lang, fmt="html").read_text(encoding="utf-8")
    assert "<img src=x" not in html
    assert f"<td>&lt;img src=x onerror=alert(1)&gt;|SGD, {word} 0.937</td>" in html
    md = render_run(Registry(db, readonly=True), rid, tmp_path / "md", lang=lang).read_text(encoding="utf-8")
    assert "<img" not in md
    assert f"| &lt;img src=x onerror=alert(1)&gt;\\|SGD, {word} 0.937 |" in md


def test_series_report_refuses_an_unknown_target_before_writing(tmp_path):
    """`series report --target` took any text: a typo (or markup) wrote a report that called the members unchecked on
    a target that does not exist, with the name raw in the .md (its | splitting the table's header)."""
    db = tmp_path / "r.db"
    reg = Registry(db)
    reg.upsert_series("s", {"variants": ["L4-relu"], "name": "s"})
    rid = new_run(reg, name="m", series="s")
    reg.set_series_member("s", "L4-relu", rid)
    reg.record_epoch(rid, 1, map50=0.2, map50_95=0.1, precision=0.3, recall=0.2, box_loss=1.0, cls_loss=1.0, dfl_loss=1.0)
    reg.set_status(rid, "finished")
    for target in ("rknn-rk3589", "<img src=x onerror=alert(1)>|y"):
        out = one_line_error(cli("series", "report", "s", "--target", target, "--out", tmp_path / "out", registry=db))
        assert "unknown --target" in out and "rknn-rk3588" in out
    assert not (tmp_path / "out").exists()
    assert cli("series", "report", "s", "--target", "rknn-rk3588", "--out", tmp_path / "out", registry=db).exit_code == 0


def test_a_zero_width_int8_drop_interval_is_within_noise_as_deploy_eval_says(tmp_path):
    """Every resample alike (a tiny val set) gives a zero-width interval, which stats.compare.verdict_of calls no
    evidence ('tied'; `deploy eval` prints 'within noise'): the report called a 1.5-point drop with the interval
    +1.50 to +1.50 a real loss and listed it among the weaknesses."""
    reg, rid = _run_with_int8_drop(tmp_path, {"map50": {"metric": "map50", "pp": {"value": 1.5, "low": 1.5, "high": 1.5},
                                                        "verdict": "tied",
                                                        "text": "+1.50 pp (95% +1.50 to +1.50): within noise"}})
    facts = run_facts(reg, rid)
    (j,) = [j for j in facts.judgements if j.key == "int8_drop"]
    assert j.kind == "strength" and j.values["ci"]["tied"]
    text = render_run(reg, rid, tmp_path / "en").read_text(encoding="utf-8")
    assert "| 1.50 points (95% +1.50 to +1.50, within noise) |" in text
