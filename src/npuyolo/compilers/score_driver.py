"""Runs INSIDE a compiler's isolated venv (python score_driver.py KIND ARGS); it must import nothing from npuyolo.

Loads a model as the vendor's own toolchain quantized it and answers inference requests, so that npuyolo (in its own
environment) scores it with the same letterbox, host decode, NMS and metrics as its ONNX files:

- `rknn`: RKNN-Toolkit2's simulator. A .rknn file cannot be simulated (`load_rknn` models "can not be used for
  simulator or accuracy analysis", API reference p.15), so the build is repeated from the same ONNX file, config and
  calibration list the compile used, then `init_runtime()` with no target runs the quantized graph on this CPU.
- `onnx`: an ONNX file a vendor tool wrote (MCT's quantized model for IMX500, with `--mct`), in ONNX Runtime.
- `tflite`: the full-integer TFLite file that Vela compiles, on TensorFlow Lite's reference kernels (BUILTIN_REF:
  Vela is tested bit-exact against them); the int8 input is quantized here with explicit rounding and every output
  dequantized with its own scale and zero point.

Protocol on the ORIGINAL stdout / stdin (fd 1 is pointed at stderr first, so the toolkits' own printing never mixes
in): every frame is an 8-byte little-endian length and a payload. The driver first sends one JSON frame
({"ok": true, ...} or {"ok": false, "error": ...}); then each request frame is one .npy array (the prepared input)
and is answered by a JSON frame {"outputs": n} followed by n .npy frames (float32), or {"error": "..."}. An empty
frame ends the session. A JSON request {"analyze": IMAGE, "dir": DIR} (rknn only) runs the toolkit's
accuracy_analysis on one image and answers with its per-layer table.
"""

import argparse
import io
import json
import os
import struct
import sys
import traceback


def _frame_out(stream, payload: bytes) -> None:
    stream.write(struct.pack("<Q", len(payload)))
    stream.write(payload)
    stream.flush()


def _frame_in(stream) -> bytes | None:
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = struct.unpack("<Q", head)[0]
    data = stream.read(size) if size else b""
    return data if size else None


class RknnModel:
    def __init__(self, a):
        from rknn.api import RKNN

        self.rknn = RKNN(verbose=False)
        config = dict(target_platform=a.target, mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]])
        if a.disable_rule:
            config["disable_rules"] = a.disable_rule
        self.rknn.config(**config)
        for name, step in (("load_onnx", lambda: self.rknn.load_onnx(model=a.onnx)),
                           ("build", lambda: self.rknn.build(do_quantization=True, dataset=a.dataset)),
                           ("init_runtime", lambda: self.rknn.init_runtime())):  # no target: the simulator
            if step() != 0:
                raise RuntimeError(f"rknn {name} failed")

    def info(self) -> dict:
        return {"runtime": "rknn-toolkit2 simulator"}

    def __call__(self, x):
        import numpy as np

        outs = self.rknn.inference(inputs=[x], data_format=["nhwc"])
        if outs is None:
            raise RuntimeError("rknn inference returned nothing")
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def analyze(self, image: str, folder: str) -> dict:
        """The toolkit's per-layer error table (error_analysis.txt: cosine and Euclidean, entire and single)."""
        if self.rknn.accuracy_analysis(inputs=[image], output_dir=folder) != 0:
            raise RuntimeError("rknn accuracy_analysis failed")
        path = os.path.join(folder, "error_analysis.txt")
        with open(path, encoding="utf-8", errors="replace") as f:
            return {"error_analysis": f.read()}


class TfliteModel:
    def __init__(self, a):
        import tensorflow as tf

        self.it = tf.lite.Interpreter(model_path=a.model,
                                      experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.outs = self.it.get_output_details()

    def info(self) -> dict:
        import numpy as np

        int8 = sum(1 for t in self.it.get_tensor_details() if t["dtype"] in (np.int8, np.uint8))
        return {"runtime": "tflite BUILTIN_REF", "input_shape": [int(d) for d in self.inp["shape"]],
                "input_dtype": str(self.inp["dtype"].__name__), "int8_tensors": int8}

    def __call__(self, x):
        import numpy as np

        dtype = self.inp["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self.inp["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.it.set_tensor(self.inp["index"], x.astype(dtype, copy=False))
        self.it.invoke()
        result = []
        for o in self.outs:
            y = self.it.get_tensor(o["index"])
            scale, zero = o["quantization"]
            result.append((y.astype(np.float32) - zero) * scale if scale else y.astype(np.float32))
        return result


class OnnxModel:
    """An ONNX file a vendor tool wrote (MCT's quantized model for IMX500: `--mct` registers its custom quantizer
    ops, as Ultralytics' own IMX backend does), in ONNX Runtime inside that tool's environment."""

    def __init__(self, a):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if a.mct:
            from mct_quantizers import get_ort_session_options

            options = get_ort_session_options()
            options.enable_mem_reuse = False  # as Ultralytics' IMX backend: NaNs otherwise (mct-model-optimization#1342)
        self.sess = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        self.mct, self.boxes_scores = a.mct, a.boxes_scores

    def info(self) -> dict:
        shape = self.sess.get_inputs()[0].shape
        return {"runtime": "onnxruntime with MCT's quantizer ops" if self.mct else "onnxruntime",
                **({"input_shape": [int(d) for d in shape]} if all(isinstance(d, int) for d in shape) else {})}

    def __call__(self, x):
        import numpy as np

        outs = [np.asarray(o, dtype=np.float32) for o in self.sess.run(None, {self.name: x})]
        if self.boxes_scores:  # IMX head: xyxy boxes [B, N, 4] and scores [B, N, nc] -> [B, 4 + nc, N] xywh (Detect's)
            boxes, scores = outs
            xywh = np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)
            outs = [np.concatenate([xywh, scores], axis=-1).transpose(0, 2, 1)]
        return outs


KINDS = {"rknn": RknnModel, "tflite": TfliteModel, "onnx": OnnxModel}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("--onnx")
    ap.add_argument("--target")
    ap.add_argument("--dataset")
    ap.add_argument("--disable-rule", action="append", default=[])
    ap.add_argument("--model")
    ap.add_argument("--mct", action="store_true")
    ap.add_argument("--boxes-scores", action="store_true")
    a = ap.parse_args()
    # this file's folder also holds npuyolo's own rknn.py: as the script's folder it would shadow the toolkit's `rknn`
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the toolkits print to stdout: send that to stderr, keep the protocol clean
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    try:
        model = KINDS[a.kind](a)
    except BaseException as e:  # noqa: BLE001 - reported to the caller as one line
        traceback.print_exc()
        _frame_out(out, json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:500]}).encode())
        return 3
    import numpy as np

    _frame_out(out, json.dumps({"ok": True, **model.info()}).encode())
    while True:
        data = _frame_in(inp)
        if data is None:
            return 0
        try:
            if data[:1] == b"{":
                req = json.loads(data)
                _frame_out(out, json.dumps(model.analyze(req["analyze"], req["dir"])).encode())
                continue
            x = np.load(io.BytesIO(data), allow_pickle=False)
            ys = model(x)
        except Exception as e:  # noqa: BLE001
            traceback.print_exc()
            _frame_out(out, json.dumps({"error": f"{type(e).__name__}: {e}"[:500]}).encode())
            continue
        _frame_out(out, json.dumps({"outputs": len(ys)}).encode())
        for y in ys:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(y), allow_pickle=False)
            _frame_out(out, buf.getvalue())


if __name__ == "__main__":
    sys.exit(main())
