"""Rebuild src/npuyolo/report/fonts/NpuyoloKR-Regular.ttf from Debian's fonts-nanum (NanumGothic, SIL OFL 1.1).

    apt-get download fonts-nanum && dpkg-deb -x fonts-nanum_*_all.deb nanum
    python scripts/make_ko_font.py nanum/usr/share/fonts/truetype/nanum/NanumGothic.ttf

The result is a Modified Version under the OFL: cut to Hangul (syllables and Jamo), ASCII, Latin-1 and common
punctuation, hinting and the VTT source tables dropped, the embedding bits cleared (Debian's README notes they are
set by mistake), and renamed, because OFL condition 3 keeps the Reserved Font Names "Nanum"/"NanumGothic" off
modified fonts. The report embeds a further subset of it, per page (npuyolo.report.webfont).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

FAMILY = "NpuyoloKR"
DST = Path(__file__).resolve().parents[1] / "src" / "npuyolo" / "report" / "fonts" / f"{FAMILY}-Regular.ttf"
RANGES = [(0x20, 0x7E), (0xA0, 0xFF), (0x1100, 0x11FF), (0x2010, 0x205E), (0x2190, 0x21FF), (0x3000, 0x303F),
          (0x3130, 0x318F), (0xAC00, 0xD7A3), (0xFF01, 0xFF5E)]
NOTICE = ("Copyright (c) 2010, NAVER Corporation (http://www.nhncorp.com), with Reserved Font Name Nanum, NanumGothic. "
          "Modified for npuyolo from NanumGothic: subset, unhinted, renamed.")
LICENSE = "This Font Software is licensed under the SIL Open Font License, Version 1.1."


def main(src: str) -> None:
    font = TTFont(src)
    opts = subset.Options()
    opts.hinting = False
    opts.drop_tables += ["TSI0", "TSI1", "TSI2", "TSI3", "TSI5"]
    opts.name_IDs, opts.name_languages, opts.notdef_outline, opts.glyph_names = ["*"], ["*"], True, False
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=[u for a, b in RANGES for u in range(a, b + 1)])
    sub.subset(font)
    name = font["name"]
    version, original = name.getDebugName(5) or "", name.getDebugName(0) or ""
    name.names = []
    for name_id, value in {0: f"{original} {NOTICE}".strip(), 1: FAMILY, 2: "Regular", 3: f"{FAMILY}-Regular;{version}", 4: f"{FAMILY} Regular",
                           5: version, 6: f"{FAMILY}-Regular", 13: LICENSE, 14: "https://openfontlicense.org"}.items():
        name.setName(value, name_id, 3, 1, 0x409)
        name.setName(value, name_id, 1, 0, 0)
    font["OS/2"].fsType = 0
    DST.parent.mkdir(parents=True, exist_ok=True)
    font.save(DST)
    print(f"{DST}: {DST.stat().st_size} bytes, {len(font.getBestCmap())} characters")


if __name__ == "__main__":
    main(sys.argv[1])
