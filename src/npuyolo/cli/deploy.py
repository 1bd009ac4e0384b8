"""Deployment: `npuyolo deploy quantize|qat|eval|plan|bundle|bench`, `npuyolo predict`: thin translations of
`npuyolo.services.deploy` (parse, call one service, print)."""


import contextlib
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text

from npuyolo.cli.common import (
    JsonOpt,
    RegistryOpt,
    Table,
    app,
    console,
    deploy_app,
    err,
    option,
    print_json,
    quiet_stdout,
    user_errors,
    with_options,
)
from npuyolo.cli.tables import print_layers, print_plan, print_quantized
from npuyolo.deploy.int8.options import QuantizeOptions
from npuyolo.services.options import BenchOptions, BundleOptions, EvalOptions, PlanOptions, PredictOptions, QatOptions


@deploy_app.command("quantize")
@user_errors
def deploy_quantize(run: Annotated[str, typer.Argument(help="Run id or name.")],
                    data: Annotated[Path, typer.Option(help="data.yaml; calibration images come from its train split only.")],
                    calib: Annotated[int, option(QuantizeOptions, "calib", help="Calibration images.")] = QuantizeOptions.calib,
                    method: Annotated[str, option(QuantizeOptions, "method", help="minmax, entropy (KL, 512 bins) or percentile.")] = QuantizeOptions.method,
                    percentile: Annotated[Optional[float], option(QuantizeOptions, "percentile", help="With --method percentile: share of values kept [default: 99.999].")] = QuantizeOptions.percentile,
                    sweep: Annotated[bool, option(QuantizeOptions, "sweep", "--sweep", help="Try minmax, percentile 99.99/99.999 and entropy; keep the most faithful to FP32 on held-back train images.")] = QuantizeOptions.sweep,
                    holdout: Annotated[int, option(QuantizeOptions, "holdout", help="With --sweep: held-back train images (never val, never calibration).")] = QuantizeOptions.holdout,
                    per_channel: Annotated[bool, option(QuantizeOptions, "per_channel", "--per-channel", help="Per-channel weight scales.")] = QuantizeOptions.per_channel,
                    bias_correct: Annotated[bool, option(QuantizeOptions, "bias_correct", "--bias-correct", help="Remove the mean shift weight rounding adds to each Conv (Nagel et al. 2019).")] = QuantizeOptions.bias_correct,
                    ends: Annotated[Optional[str], option(QuantizeOptions, "ends", help="First Conv and output Convs at higher precision: int16 (still integer) or float.")] = QuantizeOptions.ends,
                    target: Annotated[Optional[str], typer.Option(help="With --ends: refuse what this NPU target's profile cannot run.")] = None,
                    keep_float: Annotated[Optional[list[str]], option(QuantizeOptions, "keep_float", "--keep-float", help="Node name to keep float (repeatable).")] = QuantizeOptions.keep_float,
                    auto_float: Annotated[int, option(QuantizeOptions, "auto_float", help="Also keep the N most sensitive Conv nodes float (by SQNR).")] = QuantizeOptions.auto_float,
                    imgsz: Annotated[Optional[int], typer.Option(help="Export size [default: the run's].")] = None,
                    cle: Annotated[bool, option(QuantizeOptions, "cle", "--cle", help="Cross-layer equalization before quantizing (exact in FP32; ReLU/LeakyReLU chains).")] = QuantizeOptions.cle,
                    as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Export a run to ONNX (L4: NPU head cut) and quantize it to INT8 (ONNX Runtime, QDQ over the whole graph)."""
    from npuyolo.services import deploy

    options = QuantizeOptions.of(**{k: v for k, v in locals().items() if k in QuantizeOptions.names()})
    with err.status("calibrating and quantizing..."), quiet_stdout():
        info = deploy.quantize(registry, run, data, options, imgsz=imgsz, target=target)
    print_quantized(info.as_dict(), as_json)


@deploy_app.command("qat")
@user_errors
def deploy_qat(run: Annotated[str, typer.Argument(help="Trained run id or name (the parent).")],
               data: Annotated[Optional[Path], typer.Option(help="data.yaml [default: the parent run's].")] = None,
               epochs: Annotated[int, option(QatOptions, "epochs")] = QatOptions.epochs,
               lr0: Annotated[Optional[float], option(QatOptions, "lr0")] = QatOptions.lr0,
               calib: Annotated[int, option(QatOptions, "calib")] = QatOptions.calib,
               per_channel: Annotated[bool, option(QatOptions, "per_channel")] = QatOptions.per_channel,
               bias_correct: Annotated[bool, option(QatOptions, "bias_correct")] = QatOptions.bias_correct,
               ends: Annotated[Optional[str], option(QatOptions, "ends")] = QatOptions.ends,
               as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Quantization-aware fine-tuning (NVIDIA ModelOpt through Ultralytics) as a new run, then its INT8 QDQ export."""
    from npuyolo.services import deploy

    with quiet_stdout(as_json):
        info = deploy.qat(registry, run, data, QatOptions.pick(locals()), verbose=not as_json)
    if not as_json:
        console.print(f"QAT run {info.qat_run} ({info.qat_name}) from run {info.parent_run}", highlight=False, markup=False)
    print_quantized(info.as_dict(), as_json)


@deploy_app.command("eval")
@user_errors
def deploy_eval(artefact: Annotated[Path, typer.Argument(help="ONNX file written by npuyolo, or a model `npu compile` built: "
                                                           ".rknn, the int8 .tflite behind a Vela build, or an IMX500 build's model_imx_dense.onnx (MCT's quantized model).")],
                data: Annotated[Path, typer.Option(help="data.yaml; its val split is scored.")],
                layers: Annotated[bool, option(EvalOptions, "layers")] = EvalOptions.layers,
                qdq: Annotated[Optional[Path], option(EvalOptions, "qdq")] = EvalOptions.qdq,
                top: Annotated[int, typer.Option(help="With --layers: the worst layers shown.")] = 15,
                as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Score the deployed model (ONNX Runtime + host decode + NMS) with Ultralytics' metrics.

    A compiled model is scored as the vendor quantized it (RKNN-Toolkit2's simulator; TFLite's reference kernels for
    Vela's input; MCT's model for IMX500 in ONNX Runtime), in the compiler's environment, beside its FP32 ONNX file;
    its input contract is checked first."""
    from npuyolo.errors import NpuyoloError
    from npuyolo.services import deploy

    if top < 1:
        raise NpuyoloError(f"top must be at least 1 (the worst layers shown), got {top}", param="top")
    with err.status("evaluating..."), quiet_stdout():  # Ultralytics' progress stays off stdout
        r = deploy.evaluate(registry, artefact, data, EvalOptions.pick(locals()))
    if as_json:
        return print_json(r.as_dict())
    kind = "IMX500 (MCT)" if r.compiled and r.kind == "onnx" else r.kind.upper()  # MCT's model is an .onnx
    console.print(f"{kind} {artefact}: P {r.precision:.3f}  R {r.recall:.3f}  mAP50 {r.map50:.3f}  "
                  f"mAP50-95 {r.map50_95:.3f}  ({r.images} val images at {r.imgsz} px)", highlight=False)
    if r.compiled:
        console.print(f"scored by {r.runtime}; input contract {r.contract} checked on a training photo (cosine per "
                      f"output {', '.join('-' if c is None else f'{c:.3f}' for c in r.cosine)}; '-': no signal to judge); "
                      f"FP32: {r.onnx}", highlight=False)
    per_class_drop = r.drop_pp_per_class
    table = Table(title="per class" + (" (drop vs FP32 in mAP50 points)" if per_class_drop is not None else ""))
    for col in ("class", "P", "R", "mAP50", "mAP50-95", *(["mAP50 drop"] if per_class_drop is not None else [])):
        table.add_column(col)
    for c, v in r.per_class.items():
        drop = [f"{per_class_drop[c]:+.2f}"] if per_class_drop is not None else []
        table.add_row(c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['map50']:.3f}", f"{v['map50_95']:.3f}", *drop)
    console.print(table)
    if r.drop_pp is not None:
        what = f"{kind} INT8" if r.compiled else "INT8"
        if r.drop_interval is not None:  # the paired interval over the same images: is the loss real?
            console.print(f"{what} drop vs FP32 (paired 95% interval over the val images): mAP50 "
                          f"{r.drop_interval['map50']['text']}; mAP50-95 {r.drop_interval['map50_95']['text']}",
                          highlight=False, markup=False)
        else:
            console.print(f"{what} drop vs FP32: mAP50 {r.drop_pp['map50']:.2f} points, mAP50-95 {r.drop_pp['map50_95']:.2f} points (one model, no interval)")
    if r.layers is not None:
        print_layers(r.layers, r.qdq, top)


@deploy_app.command("plan")
@user_errors
@with_options(PlanOptions, workers=dict(min=1))
def deploy_plan(model: Annotated[str, typer.Argument(help="Run id/name or .pt checkpoint.")],
                target: Annotated[list[str], typer.Option("--target", "-t", help="Target profile (repeatable).")],
                data: Annotated[Path, typer.Option(help="data.yaml: train images calibrate, val images score.")],
                options: PlanOptions, as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Build every artefact that could serve each target, verify each (placement, FP32/INT8 accuracy), choose."""
    from npuyolo.services import deploy

    with err.status("building and verifying candidates..."), quiet_stdout():
        plan = deploy.plan(registry, model, target, data, options)
    if as_json:
        return print_json(plan.as_dict())
    print_plan(plan)


@deploy_app.command("bundle")
@user_errors
def deploy_bundle(run: Annotated[Optional[str], typer.Argument(help="Run id or name (its recorded plan picks the artefact); optional with --artefact.")] = None,
                  target: Annotated[Optional[str], typer.Option("--target", "-t", help="Target profile the bundle is for (required with a run).")] = None,
                  artefact: Annotated[Optional[Path], typer.Option(help="Ship this file instead of the plan's choice: an npuyolo .onnx, or a .rknn / int8 .tflite `npu compile` built.")] = None,
                  out: Annotated[Optional[Path], typer.Option(help="Folder for <name>/ and <name>.tar.gz [default: the run's bundle/, else ./bundle].")] = None,
                  conf: Annotated[Optional[float], option(BundleOptions, "conf")] = BundleOptions.conf,
                  iou: Annotated[Optional[float], option(BundleOptions, "iou")] = BundleOptions.iou,
                  as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """A torch-free package for the board: the model, npuyolo_infer.py (NumPy, Pillow, the runtime), postprocess.c/.h, manifest.json, README.md; and a .tar.gz of it."""
    from npuyolo.services import deploy

    b = deploy.bundle(registry, run, target, artefact=artefact, out=out, options=BundleOptions.pick(locals()))
    if as_json:
        return print_json(b.as_dict())
    m = b.manifest
    console.print(f"{m.artefact['file']} ({m.runtime}) for {m.target}: {b.folder}\n{b.archive}", highlight=False)
    if m.plan is not None:
        console.print(f"plan: {m.plan.candidate}, INT8 mAP50 {m.plan.int8_map50:.3f} ({m.plan.int8_scored_by}),"
                      f" {100 * m.plan.share_nodes:.1f}% of nodes on the NPU"
                      f"{f', {m.plan.npu_ms:.2f} ms NPU' if m.plan.npu_ms is not None else ''}", highlight=False)
    if m.runtime == "picamera2":  # IMX500: the package becomes the sensor's firmware file on the Pi; the camera runs it
        console.print(f"on the Pi: imx500-package -i {m.artefact['file']} -o . && python3 npuyolo_infer.py --camera FRAMES "
                      f"--out results.json (see {b.folder / 'README.md'})", highlight=False)
        return
    console.print(f"on the board: python npuyolo_infer.py IMAGE|FOLDER --out results.json (see {b.folder / 'README.md'})", highlight=False)

@deploy_app.command("bench")
@user_errors
def deploy_bench(artefact: Annotated[Path, typer.Argument(help="ONNX file.")],
                 runs: Annotated[int, option(BenchOptions, "runs")] = BenchOptions.runs,
                 threads: Annotated[Optional[int], option(BenchOptions, "threads")] = BenchOptions.threads,
                 as_json: JsonOpt = False) -> None:
    """ONNX Runtime CPU latency: model alone and the whole pipeline (pre-process, model, decode, NMS)."""
    from npuyolo.services import deploy

    r = deploy.bench(artefact, BenchOptions.pick(locals()))
    if as_json:
        return print_json(r)
    table = Table(title=f"{artefact} at {r['imgsz']} px, {r['threads']} threads, {r['macs'] / 1e9:.2f} GMACs")
    for col in ("part", "p50 ms", "p90 ms", "p99 ms", "throughput /s"):
        table.add_column(col, justify="right")
    for part in ("model", "pipeline"):
        s = r[part]
        table.add_row(part, f"{s['p50_ms']:.2f}", f"{s['p90_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['throughput_fps']:.1f}")
    console.print(table)


@app.command()
@user_errors
def predict(model: Annotated[str, typer.Argument(help="Run id/name, .pt checkpoint, or npuyolo ONNX file (either head, INT8, rewritten).")],
            source: Annotated[str, typer.Argument(help="Image, folder, glob pattern (quote it: 'imgs/*.jpg') or video (.mp4/.avi/.mov/.mkv).")],
            conf: Annotated[float, option(PredictOptions, "conf")] = PredictOptions.conf,
            iou: Annotated[float, option(PredictOptions, "iou")] = PredictOptions.iou,
            imgsz: Annotated[Optional[int], option(PredictOptions, "imgsz")] = PredictOptions.imgsz,
            out: Annotated[Optional[Path], typer.Option(help="Output folder [default: the run's predict/, else ./predict/<model>].")] = None,
            max_det: Annotated[int, option(PredictOptions, "max_det")] = PredictOptions.max_det,
            as_json: JsonOpt = False, registry: RegistryOpt = None) -> None:
    """Detect objects: annotated images/videos, predictions.json and predictions.csv (ONNX decoded on the host like the .pt)."""
    from npuyolo.services import deploy
    from rich.progress import Progress

    from npuyolo.ultra import stdout_to_stderr

    options = PredictOptions.pick(locals())
    with contextlib.ExitStack() as stack, stdout_to_stderr():
        bars: list = []

        def start(total: int) -> None:  # a bar on stderr for many images or video frames, on a terminal only
            if total > 1:
                progress = stack.enter_context(Progress(console=err, transient=True, disable=not err.is_terminal))
                bars.append((progress, progress.add_task("predicting", total=total)))

        r = deploy.predict(registry, model, source, options, out=out, on_start=start,
                           on_frame=lambda: [p.advance(t) for p, t in bars])
    if as_json:
        return print_json(r.as_dict())
    frames = sum(d.frame is not None for d in r.detections)
    total = sum(len(d.boxes) for d in r.detections)
    console.print(f"{r.model} ({r.kind}, {r.imgsz} px, conf {r.conf:g}, iou {r.iou:g}): {len(r.detections) - frames} image(s)"
                  f"{f' + {frames} video frame(s)' if frames else ''}, {total} detection(s)", highlight=False)
    if r.per_class:
        table = Table(title="detections per class")
        table.add_column("class")
        table.add_column("boxes", justify="right")
        for name, count in r.per_class.items():
            table.add_row(Text(name), str(count))  # a class named '[b]' stays text
        console.print(table)
    console.print(f"wrote {len(r.annotated)} annotated file(s), {r.json_path.name} and {r.csv_path.name} to {r.out}", highlight=False, markup=False)
