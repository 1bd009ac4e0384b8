"""The operations both front doors expose: the CLI's commands (`npuyolo.cli`) and the `Workspace` methods
(`npuyolo.api`) are thin translations of these (parse, call one service, print or return), so a command and its API
method cannot drift apart: which model a reference names, the default size, where outputs go, what is checked before
anything is written and what is recorded in the registry ("check, then record") are decided here, once.

One module per room: `models` (variants, export, NPU check and compile, rewrite), `data`, `training` (train, resume,
series, distill, prune, hybrid search, the ReLU-gap study), `deploy` (INT8, evaluation, plans, bundles, latency,
prediction), `comparison`, `reports`, `runs`; `options` holds one options object per operation, each default stated
once. A service imports the stages it drives inside its own body, and a CLI command imports its service inside its own
(the options, which give the flags their defaults, at the top), so `npuyolo --help` loads no PyTorch, ONNX Runtime or
Ultralytics and compiles no service it does not run.
"""

from __future__ import annotations

_NAMES = {"compare": "comparison", "check_plot_path": "comparison", "export_model": "models", "ExportRecord": "models",
          "HEADS": "models"}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    if name in _NAMES:  # `from npuyolo.services import compare`: the room's function, loaded when asked for
        import importlib

        return getattr(importlib.import_module(f"npuyolo.services.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'npuyolo.services' has no attribute {name!r}")
