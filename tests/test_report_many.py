"""Issue 34: `npuyolo report` and `npuyolo series report` write several languages and formats in one call, from one
reading of the run or series (the demo rendered its eight ko/en, md/html reports in eight CLI starts, each reading the
run, its comparison's bootstrap and the plots again). One language and one format is one path, as before."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

import npuyolo.report.render as render
from npuyolo import Workspace
from npuyolo.cli import app
from npuyolo.report.render import render_run, render_series
from tests.test_report import recorded  # noqa: F401  (the fixture: a recorded series, LeakyReLU run and its twin)

EVERY = [("ko", "md"), ("ko", "html"), ("en", "md"), ("en", "html")]  # languages in the order given, each in every format
FLAGS = ["--lang", "ko", "--lang", "en", "--format", "md", "--format", "html"]


def counting(monkeypatch, name: str) -> list:
    """Stand a counting wrapper in for render's `name`: how often a call read the registry for it."""
    calls, real = [], getattr(render, name)
    monkeypatch.setattr(render, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def cli(*args) -> dict:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def same_text(path: Path, alone: Path) -> bool:
    """A report written among others reads as the same report written alone (each in its own folder)."""
    return path.read_text(encoding="utf-8").replace(str(path.parent), "<out>") == \
        alone.read_text(encoding="utf-8").replace(str(alone.parent), "<out>")


def test_a_run_report_in_every_language_and_format_from_one_reading_through_either_door(recorded, tmp_path, monkeypatch):
    reg, leaky, relu, _ = recorded
    facts = counting(monkeypatch, "run_facts")
    got = {"cli": [Path(p) for p in cli("report", leaky, "--compare", relu, *FLAGS, "--out", tmp_path / "cli",
                                        "--registry", reg.path, "--json")["reports"]]}
    assert len(facts) == 1  # the run, its twin and their paired bootstrap read once for four reports
    got["api"] = Workspace(reg.path).report(leaky, compare=relu, lang=["ko", "en"], fmt=["md", "html"], out=tmp_path / "api")
    assert len(facts) == 2
    for door, paths in got.items():
        assert [p.name for p in paths] == [f"report_{leaky}_{lang}.{fmt}" for lang, fmt in EVERY], door
        for (lang, fmt), path in zip(EVERY, paths):
            alone = render_run(reg, leaky, tmp_path / f"alone-{lang}-{fmt}", lang=lang, fmt=fmt, compare=relu)
            assert same_text(path, alone), (door, lang, fmt)
    assert "학습 보고서" in got["api"][1].read_text(encoding="utf-8") and got["api"][1].read_text().startswith("<!doctype html>")


def test_one_language_and_format_is_still_one_path(recorded, tmp_path):
    reg, leaky, relu, _ = recorded
    ws = Workspace(reg.path)
    one = ws.report(leaky, lang="ko", fmt="html", out=tmp_path / "api")
    assert isinstance(one, Path) and one.name == f"report_{leaky}_ko.html"
    assert isinstance(ws.report(leaky, lang=["en"], out=tmp_path / "api"), Path)  # a list of one: one report, one path
    said = cli("report", leaky, "--lang", "ko", "--out", tmp_path / "cli", "--registry", reg.path, "--json")
    assert Path(said["report"]).name == f"report_{leaky}_ko.md" and said["reports"] == [said["report"]]
    assert said["folder"] == str((tmp_path / "cli").resolve())
    # a language or format asked twice is written once
    assert len(ws.report(leaky, lang=["ko", "ko"], fmt=["md", "html", "md"], out=tmp_path / "twice")) == 2


def test_a_series_report_in_every_language_and_format_from_one_reading_through_either_door(recorded, tmp_path, monkeypatch):
    reg, *_ = recorded
    ranked, rewritten = counting(monkeypatch, "rank_series"), counting(monkeypatch, "rewrite_point")
    got = {"cli": [Path(p) for p in cli("series", "report", "v3", *FLAGS, "-t", "relu-only", "--out", tmp_path / "cli",
                                        "--registry", reg.path, "--json")["reports"]]}
    assert len(ranked) == 1 and len(rewritten) == 1  # ranked (its bootstraps) and the one checked member rewritten once
    got["api"] = Workspace(reg.path).series_report("v3", lang=["ko", "en"], fmt=["md", "html"], out=tmp_path / "api")
    assert len(ranked) == 2
    for door, paths in got.items():
        assert [p.name for p in paths] == [f"series_v3_{lang}.{fmt}" for lang, fmt in EVERY], door
        for (lang, fmt), path in zip(EVERY, paths):
            alone = render_series(reg, "v3", tmp_path / f"alone-{lang}-{fmt}", lang=lang, fmt=fmt)
            assert same_text(path, alone), (door, lang, fmt)
    assert isinstance(Workspace(reg.path).series_report("v3", lang="ko", out=tmp_path / "one"), Path)


def test_an_unknown_language_or_format_among_several_is_one_line_before_anything_is_written(recorded, tmp_path):
    reg, leaky, *_ = recorded
    for words, said in [(["report", str(leaky), "--lang", "ko", "--lang", "fr"], "lang must be one of en, ko, got 'fr'"),
                        (["report", str(leaky), "--format", "md", "--format", "pdf"], "format must be md or html, got 'pdf'"),
                        (["series", "report", "v3", "--lang", "en", "--lang", "de"], "lang must be one of en, ko, got 'de'")]:
        out = tmp_path / "never"
        result = CliRunner().invoke(app, [*words, "--out", str(out), "--registry", str(reg.path)])
        assert result.exit_code != 0 and said in result.output and "Traceback" not in result.output, (words, result.output)
        assert not out.exists(), words
