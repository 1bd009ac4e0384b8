"""Korean glyphs for the HTML report, whatever fonts the reader's machine has.

The package ships NpuyoloKR-Regular.ttf (fonts/, a renamed subset of NanumGothic under the SIL OFL 1.1, see
fonts/OFL.txt). A report that uses Hangul gets an @font-face with a further subset of it, cut to the characters that
page uses, as a WOFF data URI (zlib only, no extra dependency). Everything DejaVu Sans covers is left to the normal
font stack.
"""

from __future__ import annotations

import base64
import io
from importlib.resources import files

FAMILY = "NpuyoloKR"
FONT_FILE = "NpuyoloKR-Regular.ttf"
# Blocks DejaVu Sans has no glyph in and the shipped font does: Hangul Jamo, CJK symbols and punctuation,
# Hangul compatibility Jamo, Hangul syllables, halfwidth and fullwidth forms.
BLOCKS = ((0x1100, 0x11FF), (0x3000, 0x303F), (0x3130, 0x318F), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF))


def font_bytes() -> bytes:
    return files("npuyolo.report").joinpath("fonts", FONT_FILE).read_bytes()


def needed(text: str) -> list[int]:
    """Code points of `text` that need the embedded font, sorted."""
    return sorted({ord(c) for c in text if any(a <= ord(c) <= b for a, b in BLOCKS)})


def subset_woff(codepoints: list[int]) -> bytes:
    from fontTools import subset
    from fontTools.ttLib import TTFont

    font = TTFont(io.BytesIO(font_bytes()), recalcTimestamp=False)  # the shipped font's date: the same page, the same bytes
    opts = subset.Options()
    opts.flavor = "woff"
    opts.hinting = False
    opts.name_IDs = [0, 1, 2, 3, 4, 5, 6, 13, 14]  # the copyright notice and the licence travel with every copy
    opts.notdef_outline = True
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=codepoints)
    sub.subset(font)
    out = io.BytesIO()
    font.flavor = "woff"
    font.save(out)
    return out.getvalue()


def font_face_css(text: str) -> str:
    """An @font-face rule for FAMILY holding the glyphs `text` needs, or "" when DejaVu Sans covers all of it."""
    codepoints = needed(text)
    if not codepoints:
        return ""
    data = base64.b64encode(subset_woff(codepoints)).decode()
    return f"@font-face{{font-family:'{FAMILY}';src:url(data:font/woff;base64,{data}) format('woff')}}"
