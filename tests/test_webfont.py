"""The HTML report embeds the Korean font only when it needs it, cut to the characters on the page."""

from __future__ import annotations

import base64
import io
import re

from fontTools.ttLib import TTFont

from npuyolo.report import webfont
from npuyolo.report.render import to_html


def embedded(html: str) -> TTFont | None:
    m = re.search(r"@font-face\{font-family:'NpuyoloKR';src:url\(data:font/woff;base64,([A-Za-z0-9+/=]+)\)", html)
    return TTFont(io.BytesIO(base64.b64decode(m.group(1)))) if m else None


def test_no_font_without_hangul(tmp_path):
    html = to_html("# report\n\nmAP50 0.901 × 2 → ok — ±1 · é\n", tmp_path, "run")
    assert embedded(html) is None and "NpuyoloKR" not in html


def test_subset_holds_exactly_the_hangul_on_the_page(tmp_path):
    html = to_html("# 학습 보고서\n\nmAP50은 0.901입니다. ｜ㄱ\n", tmp_path, "한국어 런")
    font = embedded(html)
    assert font is not None and font.flavor == "woff"
    assert set(font.getBestCmap()) == {ord(c) for c in "학습보고서은입니다한국어런｜ㄱ"}
    assert "Open Font License" in font["name"].getDebugName(13) and "NAVER" in font["name"].getDebugName(0)
    assert "font-family:'NpuyoloKR','DejaVu Sans'" in html
    assert len(html) < 60_000  # a few dozen glyphs, not the 1.3 MB font


def test_shipped_font_is_renamed_and_covers_hangul():
    font = TTFont(io.BytesIO(webfont.font_bytes()))
    assert font["name"].getDebugName(1) == webfont.FAMILY  # OFL: no Reserved Font Name on a modified version
    cmap = font.getBestCmap()
    assert all(cp in cmap for cp in range(0xAC00, 0xD7A4))
