"""The one door to Ultralytics: guards installed once (offline, safe loading), then the names npuyolo uses."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from npuyolo import offline  # noqa: F401  (environment switches before the first Ultralytics import)

from npuyolo.errors import NpuyoloError  # noqa: E402

SUPPORTED = ((8, 4, 100), (8, 5, 0))  # [from, to): the Ultralytics versions npuyolo is built and tested against


class MissingUltralyticsError(NpuyoloError, ImportError):
    """Ultralytics is absent or outside the supported versions."""


try:
    import ultralytics  # noqa: E402  (imported here so every name below comes after the switches)
except ImportError as e:
    raise MissingUltralyticsError(
        "Ultralytics is not installed: pip install 'npuyolo[ultralytics]' (desktop) or 'npuyolo[headless]' (servers);"
        " an existing Ultralytics install (either distribution) is used as it is") from e
_version = tuple(int(x) for x in ultralytics.__version__.split(".")[:3] if x.isdigit())
if not SUPPORTED[0] <= _version < SUPPORTED[1]:
    raise MissingUltralyticsError(f"Ultralytics {ultralytics.__version__} is installed; npuyolo needs >= 8.4.100, < 8.5")
from ultralytics.data.utils import IMG_FORMATS, check_det_dataset, img2label_paths  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator  # noqa: E402
from ultralytics.nn.modules import SPPF, Conv, Detect  # noqa: E402
from ultralytics.nn.modules.block import C2f  # noqa: E402
from ultralytics.nn.distill_model import DistillationModel  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, load_checkpoint, torch_safe_load, yaml_model_load  # noqa: E402
from ultralytics.utils.torch_utils import get_flops, intersect_dicts, is_qat, strip_qat, unwrap_model  # noqa: E402

__all__ = ["IMG_FORMATS", "img2label_paths", "is_qat", "strip_qat", "stdout_to_stderr", "C2f", "SPPF", "Conv", "Detect", "DetectionModel", "DistillationModel", "DetectionTrainer", "DetectionValidator", "check_det_dataset",
           "get_flops", "intersect_dicts", "load_checkpoint", "torch_safe_load", "unwrap_model", "yaml_model_load"]


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """stdout (prints and Ultralytics' logger, whose handler holds its own stream) goes to stderr meanwhile.

    `--json` commands print their JSON alone on stdout; `redirect_stdout` by itself misses the logger.
    """
    from ultralytics.utils import LOGGER

    swapped = []
    for h in LOGGER.handlers:
        stream = getattr(h, "stream", None)
        # nested: sys.stdout is already stderr, and setStream(same) returns None, which would be restored
        if isinstance(h, logging.StreamHandler) and stream in (sys.stdout, sys.__stdout__) and stream is not sys.stderr:
            swapped.append((h, h.setStream(sys.stderr)))
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        for h, stream in swapped:
            h.setStream(stream)


def _install() -> None:
    offline.install_guards()


_install()
