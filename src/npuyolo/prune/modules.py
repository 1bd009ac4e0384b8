"""Pruning-friendly, numerically identical re-parametrisation of Ultralytics' C2f family.

C2f/C3k2 split one conv's output with `chunk`, which dependency-graph pruners cannot follow channel by
channel; two convs on the same input (the halves of the original) compute exactly the same thing.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from npuyolo.ultra import C2f, Conv

LAYER_ATTRS = ("i", "f", "type", "np")  # what Ultralytics' parse_model sets on each top-level layer


def _conv_slice(conv: Conv, rows: slice) -> Conv:
    """A Conv computing output channels `rows` of `conv` (weights and BN statistics copied)."""
    new = copy.deepcopy(conv)
    out = rows.stop - rows.start
    c = new.conv
    new.conv = nn.Conv2d(c.in_channels, out, c.kernel_size, c.stride, c.padding, c.dilation, c.groups, bias=c.bias is not None)
    with torch.no_grad():
        new.conv.weight.copy_(c.weight[rows])
        if c.bias is not None:
            new.conv.bias.copy_(c.bias[rows])
    if hasattr(conv, "bn"):
        bn = conv.bn
        new.bn = nn.BatchNorm2d(out, eps=bn.eps, momentum=bn.momentum)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(new.bn, name).copy_(getattr(bn, name)[rows])
        new.bn.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


class C2fSplit(nn.Module):
    """C2f / C3k2 with `cv1` as two convs (`cv0`, `cv1`) instead of one conv and a chunk."""

    def __init__(self, block: C2f):
        super().__init__()
        c = block.c
        self.c = c
        self.cv0 = _conv_slice(block.cv1, slice(0, c))
        self.cv1 = _conv_slice(block.cv1, slice(c, 2 * c))
        self.cv2 = block.cv2
        self.m = block.m
        for attr in LAYER_ATTRS:
            if hasattr(block, attr):
                setattr(self, attr, getattr(block, attr))
        self.train(block.training)  # new BatchNorms start in training mode; keep the block's mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def split_c2f(model: nn.Module) -> int:
    """Replace every C2f-family block (C3k2 included) in `model.model` by its C2fSplit twin; returns how many."""
    count = 0
    for parent in [model, *model.modules()]:
        for name, child in list(parent.named_children()):
            if isinstance(child, C2f):
                setattr(parent, name, C2fSplit(child))
                count += 1
    return count
