"""npuyolo: build, train, check and report NPU-ready YOLO11 object detectors.

`from npuyolo import Workspace` gives the Python API (see `npuyolo.api`); `NpuyoloError` is the base of every
error a user can fix. Importing npuyolo sets only the environment defaults documented in the README
(YOLO_OFFLINE, YOLO_AUTOINSTALL, YOLO_VERBOSE, each only if unset); Ultralytics' safe-load mode is switched on
when npuyolo first imports Ultralytics (`npuyolo.ultra`), not at `import npuyolo`.
"""

from npuyolo import offline as _offline  # noqa: F401  (must run before anything imports ultralytics)
from npuyolo.errors import NpuyoloError

__version__ = "0.2.0"
__all__ = ["NpuyoloError", "Workspace", "__version__"]


def __getattr__(name: str):
    if name == "Workspace":  # lazy: `import npuyolo` stays light (no torch, no Ultralytics)
        from npuyolo.api import Workspace

        return Workspace
    raise AttributeError(f"module 'npuyolo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
