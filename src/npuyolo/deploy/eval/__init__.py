"""Scoring: an ONNX file in ONNX Runtime under Ultralytics' validator (`evaluate`), the vendor's own INT8 in its
simulator (`vendor`, with its input `contract` and per-layer comparison `layers`), and models compared on the same
images with paired intervals (`compare`)."""
