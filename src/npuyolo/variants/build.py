"""Turn a variant into an Ultralytics DetectionModel: YAML edits first, then module transforms.

Everything the transforms need is stored in the model YAML under the `npuyolo` key, so a model
rebuilt from a checkpoint's `yaml` (resume, export) gets exactly the same modules again.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from npuyolo.ultra import SPPF, Conv, DetectionModel, get_flops, yaml_model_load
from npuyolo.variants.spec import VariantSpec, activations, parse_variant

ATTENTION_FREE_BLOCK = ["C3k2", [1024, True]]  # replaces [-1, 2, C2PSA, [1024]]; +0.3% GFLOPs at scale n


def model_yaml(variant: VariantSpec | str, nc: int = 80, names: list[str] | None = None) -> dict:
    """The Ultralytics model YAML of a variant, with the `npuyolo` block its transforms read."""
    spec = parse_variant(variant) if isinstance(variant, str) else variant
    lv = spec.settings
    base = yaml_model_load(f"yolo11{spec.scale}.yaml")
    d = {
        "nc": nc,
        "scales": copy.deepcopy(base["scales"]),
        "scale": spec.scale,
        "backbone": copy.deepcopy(base["backbone"]),
        "head": copy.deepcopy(base["head"]),
    }
    if lv.attention == "none":
        for row in d["backbone"]:
            if row[2] == "C2PSA":
                row[2], row[3] = ATTENTION_FREE_BLOCK[0], list(ATTENTION_FREE_BLOCK[1])
    if lv.activation_scope == "all" and spec.activation not in ("silu", "hybrid"):
        d["activation"] = activation_expr(spec)  # lets plain Ultralytics build the same graph from this YAML
    d["npuyolo"] = {
        "variant": spec.name,
        "level": lv.name,
        "activation": spec.activation,
        "slope": spec.slope,
        "activation_scope": lv.activation_scope,
        "sppf_pool": lv.sppf_pool,
        "head": lv.head,
    }
    if spec.stage_activations is not None:
        d["npuyolo"]["activation_map"] = {stage: list(v) for stage, v in spec.stage_activations.items()}
    if names:
        d["names"] = {i: n for i, n in enumerate(names)}
    return d


def format_model_yaml(d: dict) -> str:
    """Model YAML the way Ultralytics writes it: one flow-style row per layer."""
    import yaml

    def flow(x) -> str:
        return yaml.safe_dump(x, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()

    lines = []
    for key, value in d.items():
        if key in ("backbone", "head"):
            lines += [f"{key}:"] + [f"  - {flow(row)}  # {i}" for i, row in enumerate(value, start=0 if key == "backbone" else len(d["backbone"]))]
        elif isinstance(value, dict):
            lines += [f"{key}:"] + [f"  {k}: {flow(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {flow(value)}")
    return "\n".join(lines) + "\n"


def activation_expr(spec: VariantSpec) -> str:
    torch_name = activations()[spec.activation]["torch"]
    return f"nn.{torch_name}({spec.slope:g})" if spec.slope is not None else f"nn.{torch_name}()"


def make_activation(activation: str, slope: float | None) -> nn.Module:
    cls = getattr(nn, activations()[activation]["torch"])
    return cls(slope) if slope is not None else cls()


@dataclass(frozen=True)
class Stages:
    """Layer index ranges of a YOLO11 model: backbone, neck, detection head."""

    backbone: range
    neck: range
    head: range

    @classmethod
    def of(cls, yaml_dict: dict) -> Stages:
        nb, nh = len(yaml_dict["backbone"]), len(yaml_dict["head"])
        return cls(range(0, nb), range(nb, nb + nh - 1), range(nb + nh - 1, nb + nh))


def set_activation(model: DetectionModel, layers: range | list[int], activation: str, slope: float | None) -> int:
    """Replace the activation of every Conv (not the act=False ones) in `layers`; returns how many."""
    count = 0
    for i in layers:
        for m in model.model[i].modules():
            if isinstance(m, Conv) and not isinstance(m.act, nn.Identity):
                m.act = make_activation(activation, slope)
                count += 1
    return count


def cascade_sppf_pools(model: DetectionModel) -> int:
    """SPPF's k x k stride-1 max-pool as (k-1)/2 cascaded 3x3 pools: identical output, NPU-sized kernels."""
    count = 0
    for m in model.modules():
        if isinstance(m, SPPF) and isinstance(m.m, nn.MaxPool2d) and m.m.kernel_size > 3:
            k = m.m.kernel_size
            m.m = nn.Sequential(*(nn.MaxPool2d(3, 1, 1) for _ in range((k - 1) // 2)))
            count += 1
    return count


def apply_transforms(model: DetectionModel) -> DetectionModel:
    """Apply the `npuyolo` block of the model's YAML; a stock YAML (no block) is left as it is."""
    cfg = model.yaml.get("npuyolo")
    if not cfg:
        return model
    stages = Stages.of(model.yaml)
    if cfg.get("activation_map"):  # hybrid: the map, not the level, says where each activation goes
        for stage, (activation, slope) in cfg["activation_map"].items():
            set_activation(model, getattr(stages, stage), activation, slope)
    else:
        scope = list(stages.backbone) if cfg["activation_scope"] == "backbone" else [*stages.backbone, *stages.neck, *stages.head]
        set_activation(model, scope, cfg["activation"], cfg["slope"])
    if cfg["sppf_pool"] == "3x3x2":
        cascade_sppf_pools(model)
    return model


def build_model(variant: VariantSpec | str | dict, nc: int = 80, names: list[str] | None = None, verbose: bool = False) -> DetectionModel:
    """A fresh (untrained) model of a variant, or of a model YAML dict that carries an `npuyolo` block."""
    if not isinstance(nc, int) or nc < 1:
        from npuyolo.variants.spec import VariantError

        raise VariantError(f"nc must be at least 1 class, got {nc}", param="nc")
    yaml_dict = copy.deepcopy(variant) if isinstance(variant, dict) else model_yaml(variant, nc, names)
    model = DetectionModel(yaml_dict, nc=nc, verbose=verbose)
    if names:
        model.names = {i: n for i, n in enumerate(names)}
    return apply_transforms(model)


def model_summary(model: DetectionModel, imgsz: int = 640) -> dict:
    return {
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "gflops": round(float(get_flops(model, imgsz)), 3),
        "layers": len(list(model.modules())),
    }


def activation_census(model: nn.Module) -> dict[str, int]:
    """How many activation modules of each type the model holds (for `variants show` and tests)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, Conv) and not isinstance(m.act, nn.Identity):
            counts[type(m.act).__name__] = counts.get(type(m.act).__name__, 0) + 1
    return counts


def forward_check(model: DetectionModel, imgsz: int = 64) -> torch.Size:
    model.eval()
    with torch.no_grad():
        y = model(torch.zeros(1, 3, imgsz, imgsz))
    return (y[0] if isinstance(y, (tuple, list)) else y).shape
