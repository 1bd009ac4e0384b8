"""The C post-processor's records (templates/postprocess.h) as ctypes structures: one definition for everything that
calls the compiled library from Python (the bundle's tests and bench/bundle.py), kept beside the header it mirrors."""

from __future__ import annotations

import ctypes

__all__ = ["Config", "Detection", "Tensor"]


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int), ("layout", ctypes.c_int), ("scale", ctypes.c_float),
                ("zero_point", ctypes.c_int32)]


class Config(ctypes.Structure):
    _fields_ = [("imgsz", ctypes.c_int), ("num_strides", ctypes.c_int), ("strides", ctypes.c_int * 8), ("reg_max", ctypes.c_int),
                ("num_classes", ctypes.c_int), ("class_sigmoid", ctypes.c_int), ("conf", ctypes.c_float), ("iou", ctypes.c_float),
                ("max_det", ctypes.c_int)]


class Detection(ctypes.Structure):
    _fields_ = [("x1", ctypes.c_float), ("y1", ctypes.c_float), ("x2", ctypes.c_float), ("y2", ctypes.c_float),
                ("score", ctypes.c_float), ("cls", ctypes.c_int32)]
