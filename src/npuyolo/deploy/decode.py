"""Host-side decode for the NPU head: DFL, anchor decode and NMS in NumPy/PyTorch on the CPU.

`decode_npu_outputs` reproduces Ultralytics' Detect inference output ([B, 4 + nc, anchors], xywh
in input pixels, class probabilities), so everything downstream (NMS, metrics) is shared.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def make_anchors(shapes: Sequence[tuple[int, int]], strides: Sequence[int], offset: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres [A, 2] (x, y in grid cells) and their strides [A, 1], scale by scale, row-major."""
    points, stride_col = [], []
    for (h, w), s in zip(shapes, strides):
        sy, sx = np.meshgrid(np.arange(h, dtype=np.float32) + offset, np.arange(w, dtype=np.float32) + offset, indexing="ij")
        points.append(np.stack((sx, sy), -1).reshape(-1, 2))
        stride_col.append(np.full((h * w, 1), s, dtype=np.float32))
    return np.concatenate(points), np.concatenate(stride_col)


def dfl(box_logits: np.ndarray, reg_max: int) -> np.ndarray:
    """[B, 4*reg_max, A] logits -> [B, 4, A] expected distances (softmax over bins, then the bin mean)."""
    b, _, a = box_logits.shape
    x = box_logits.reshape(b, 4, reg_max, a)
    x = np.exp(x - x.max(axis=2, keepdims=True))
    x /= x.sum(axis=2, keepdims=True)
    return (x * np.arange(reg_max, dtype=np.float32)[None, None, :, None]).sum(axis=2)


def decode_npu_outputs(outputs: Sequence[np.ndarray], strides: Sequence[int], reg_max: int = 16,
                       class_sigmoid_in_graph: bool = True) -> np.ndarray:
    """[box_s8, cls_s8, box_s16, cls_s16, ...] -> [B, 4 + nc, A] like Ultralytics' Detect (xywh pixels, probs).

    `class_sigmoid_in_graph=False` for exports whose class outputs are logits (targets without an NPU sigmoid).
    """
    boxes, scores = outputs[0::2], outputs[1::2]
    if len(boxes) != len(strides) or len(scores) != len(strides):
        raise ValueError(f"expected {2 * len(strides)} NPU-head outputs (boxes and scores per stride), got {len(outputs)}")
    b = boxes[0].shape[0]
    shapes = [tuple(x.shape[2:]) for x in boxes]
    box_flat = np.concatenate([x.reshape(b, 4 * reg_max, -1) for x in boxes], axis=2).astype(np.float32)
    cls_flat = np.concatenate([x.reshape(b, x.shape[1], -1) for x in scores], axis=2).astype(np.float32)
    if not class_sigmoid_in_graph:
        cls_flat = 1.0 / (1.0 + np.exp(-cls_flat))
    anchors, stride_col = make_anchors(shapes, strides)
    dist = dfl(box_flat, reg_max)  # [B, 4, A]: left, top, right, bottom in grid cells
    anchors_t = anchors.T[None]  # [1, 2, A]
    x1y1, x2y2 = anchors_t - dist[:, :2], anchors_t + dist[:, 2:]
    xywh = np.concatenate(((x1y1 + x2y2) / 2, x2y2 - x1y1), axis=1) * stride_col.T[None]
    return np.concatenate((xywh, cls_flat), axis=1)


def nms(prediction: np.ndarray, conf: float = 0.25, iou: float = 0.7, max_det: int = 300) -> list[np.ndarray]:
    """Ultralytics' NMS over decoded predictions; per image an [N, 6] array (x1, y1, x2, y2, score, class)."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    dets = non_max_suppression(torch.from_numpy(np.ascontiguousarray(prediction)), conf_thres=conf, iou_thres=iou, max_det=max_det)
    return [d.numpy() for d in dets]
