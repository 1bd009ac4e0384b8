"""npuyolo: build, train, check and report NPU-ready YOLO11 object detectors."""

from npuyolo import offline as _offline  # noqa: F401  (must run before anything imports ultralytics)

__version__ = "0.1.0"
