"""The L4 cut: a graph that ends at raw per-scale box distributions and class sigmoids."""

from __future__ import annotations

import torch
from torch import nn


class NPUHeadModel(nn.Module):
    """Runs a DetectionModel up to its Detect layer's last convs; DFL, decode and NMS are left to the host.

    Outputs, per scale (stride 8, 16, 32): box logits [B, 4*reg_max, H, W] and class scores after sigmoid
    [B, nc, H, W]. The class sigmoid stays in: Rockchip and Hailo keep it on-chip for better quantization.
    """

    def __init__(self, model: nn.Module, class_sigmoid: bool = True):
        super().__init__()
        self.model = model
        self.detect = model.model[-1]
        self.class_sigmoid = class_sigmoid  # False: raw class logits, the host applies the sigmoid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        saved: list[torch.Tensor | None] = []
        for m in self.model.model[:-1]:
            if m.f != -1:
                x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j] for j in m.f]
            x = m(x)
            saved.append(x if m.i in self.model.save else None)
        feats = [x if j == -1 else saved[j] for j in self.detect.f]
        outputs: list[torch.Tensor] = []
        for i in range(self.detect.nl):
            scores = self.detect.cv3[i](feats[i])
            outputs += [self.detect.cv2[i](feats[i]), scores.sigmoid() if self.class_sigmoid else scores]
        return tuple(outputs)


def output_names(strides: list[int]) -> list[str]:
    return [name for s in strides for name in (f"boxes_s{s}", f"scores_s{s}")]
