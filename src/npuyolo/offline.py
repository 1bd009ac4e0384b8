"""Keep Ultralytics from touching the network: no downloads, no telemetry, no pip installs.

The environment switches must be set before `ultralytics` is first imported, which is why the
package imports this module first. `install_guards()` then replaces the few helpers that would
still reach out (font downloads) with local-only versions.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "true")  # ultralytics.utils.is_online() -> False: no events, no hub
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # check_requirements() never runs pip
os.environ.setdefault("YOLO_VERBOSE", "true")

_GUARDED = False


@cache
def local_font(font: str = "Arial.ttf") -> Path:
    """A font that exists on disk: the Ultralytics config copy if present, else matplotlib's DejaVu Sans."""
    from matplotlib import font_manager
    from ultralytics.utils import USER_CONFIG_DIR

    cached = USER_CONFIG_DIR / Path(font).name
    if cached.exists():
        return cached
    return Path(font_manager.findfont("DejaVu Sans", fallback_to_default=True))


def install_guards() -> None:
    """Swap Ultralytics' downloading helpers for local-only behaviour.

    - font lookup (`check_font` downloads Arial) -> `local_font`;
    - its PIL.Image.open patch pip-installs pi-heif the first time an image is unreadable -> marked as
      already registered, so an unreadable image raises instead of installing a package.
    """
    global _GUARDED
    if _GUARDED:
        return
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.patches as patches
    import ultralytics.utils.plotting as plotting

    for module in (checks, data_utils, plotting):
        module.check_font = local_font
    patches._pil_plugins_registered = True
    _GUARDED = True
