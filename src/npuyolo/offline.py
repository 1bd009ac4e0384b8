"""Keep Ultralytics from touching the network and from running code it should not.

The environment switches must be set before `ultralytics` is first imported, which is why the
package imports this module first. `install_guards()` (called once, by `npuyolo.ultra`, the one
module through which npuyolo imports Ultralytics) then:

- swaps the helpers that would still reach out (font downloads, pi-heif auto-install) for local ones;
- never acts on a data set's `download:` value (a URL it would fetch, a shell or Python script it would run);
- turns on Ultralytics' safe-load mode for this process: checkpoints load with `torch.load(weights_only=True)`
  against an allow-list of known model classes, and model YAML activations are parsed, never `eval`-ed.
  npuyolo's own module classes join the allow-list through `trust_npuyolo_classes()`, before any load.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

# `import ultralytics` sets OMP_NUM_THREADS=1 where it is unset: what the user's environment held before that import
# (None: unset, or unknown where Ultralytics was imported before npuyolo) is kept here for `train.trainer`
OMP_NUM_THREADS_BEFORE_ULTRALYTICS = None if "ultralytics" in sys.modules else os.environ.get("OMP_NUM_THREADS")
ULTRALYTICS_OMP_DEFAULT = "1"

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
    """Local-only fonts, no pip, and safe checkpoint loading for every Ultralytics load in this process."""
    global _GUARDED
    if _GUARDED:
        return
    _GUARDED = True
    import ultralytics.data.utils as data_utils
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.checks as checks
    import ultralytics.utils.patches as patches
    import ultralytics.utils.plotting as plotting

    for module in (checks, data_utils, plotting):
        module.check_font = local_font
    patches._pil_plugins_registered = True
    tasks.SAFE_LOAD = True  # torch_safe_load(), parse_model() read this module global at call time
    import ultralytics.utils.torch_utils as torch_utils

    unsafe = patches.torch_load

    def safe_torch_load(f, *args, **kwargs):
        """Ultralytics' torch_load with weights_only=True by default (strip_optimizer and friends load files too)."""
        kwargs.setdefault("weights_only", True)
        if kwargs["weights_only"] and isinstance(f, (str, os.PathLike)):
            from npuyolo.offline import trust_npuyolo_classes

            trust_npuyolo_classes()
            with tasks._SafeLoad.loading(f):
                return unsafe(f, *args, **kwargs)
        return unsafe(f, *args, **kwargs)

    patches.torch_load = safe_torch_load  # imports inside functions
    torch_utils.torch_load = safe_torch_load  # strip_optimizer's module-level name
    import ultralytics.engine.trainer as engine_trainer

    checks.check_amp = engine_trainer.check_amp = offline_check_amp  # the trainer calls its module-level name
    no_dataset_downloads(data_utils.check_det_dataset)


def no_dataset_downloads(check_det_dataset) -> None:
    """Make `autodownload=False` the default of Ultralytics' check_det_dataset, for every caller at once.

    When a split is missing, that function fetches the yaml's `download:` URL, runs it with `bash`, or `exec`s
    it as Python: a shared data set would run its author's code. Its trainer, validator and exporter import
    the function by name and call it without `autodownload`, so changing the default on the one function
    object reaches them all (rebinding the module attribute would not). A missing split then raises instead.
    """
    import inspect

    params = list(inspect.signature(check_det_dataset).parameters.values())
    if [p.name for p in params[1:3]] != ["autodownload", "split"]:  # a new signature must fail loudly, not run code
        raise RuntimeError(f"unexpected signature of Ultralytics' check_det_dataset: {inspect.signature(check_det_dataset)}")
    check_det_dataset.__defaults__ = (False, params[2].default)


# GPUs Ultralytics' own check_amp() knows to give NaN losses or zero mAP under AMP (same pattern, same verdict)
_AMP_BAD_GPUS = r"(nvidia|geforce|quadro|tesla).*?(1660|1650|1630|t400|t550|t600|t1000|t1200|t2000|k40m)"


def offline_check_amp(model) -> bool:
    """Ultralytics' AMP self-check without its download of yolo26n.pt: AMP on CUDA unless the GPU is a known bad one.

    Ultralytics' check returns False on CPU/MPS and on those GPUs before it downloads anything; what it adds on
    other CUDA GPUs is a comparison of FP32 vs AMP boxes of a downloaded model on a bundled image, which is skipped.
    `ultralytics: {amp: false}` in the recipe still turns AMP off (the trainer never calls the check then).
    """
    import re

    import torch
    from ultralytics.utils import LOGGER

    device = next(model.parameters()).device
    if device.type != "cuda":
        return False
    gpu = torch.cuda.get_device_name(device)
    if re.search(_AMP_BAD_GPUS, gpu, re.IGNORECASE):
        LOGGER.warning(f"AMP: off on {gpu} (known NaN losses / zero mAP with mixed precision)")
        return False
    LOGGER.info(f"AMP: on ({gpu}; npuyolo's offline check, no weights downloaded)")
    return True


# npuyolo's own nn.Module classes that its checkpoints may hold: code we ship, not code a file brings
TRUSTED_CLASSES = ("npuyolo.prune.modules.C2fSplit", "npuyolo.train.kd.KDDistillationModel")
# where those classes lived before (checkpoints name a class by its module path at saving time): the same class object
MOVED_CLASSES = {"npuyolo.distill.model.KDDistillationModel": "npuyolo.train.kd.KDDistillationModel"}


@cache
def trust_npuyolo_classes() -> None:
    """Add TRUSTED_CLASSES to torch's weights_only allow-list, before any checkpoint load.

    Not done at import: those modules themselves import Ultralytics through `npuyolo.ultra`.
    """
    import importlib

    import torch

    def load(dotted: str):
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)

    classes = [load(dotted) for dotted in TRUSTED_CLASSES]
    classes += [(load(new), old) for old, new in MOVED_CLASSES.items()]
    torch.serialization.add_safe_globals(classes)
