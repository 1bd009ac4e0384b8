"""INT8: quantize an FP32 graph (QDQ, the calibration sweep, CLE, bias correction, 16-bit or float ends) and ORT's
quantizer without its quadratic Python (`ort_fast`). Below the evaluation room: it opens ONNX Runtime sessions
through `deploy.runtime` only."""
