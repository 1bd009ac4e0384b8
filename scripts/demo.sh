#!/usr/bin/env bash
# The main job on the embedded default data: synthesize signs, train a small series, rank it, export L4.
set -euo pipefail
OUT=${1:-demo_out}
export NPUYOLO_REGISTRY="$OUT/runs/npuyolo.db"
mkdir -p "$OUT"

npuyolo data synth "$OUT/synth" --train 300 --val 60 --imgsz 320 --seed 0 --force  # a re-run rewrites the same set
npuyolo data check "$OUT/synth/data.yaml"
cat > "$OUT/series.yaml" <<YAML
name: demo-v3
data: synth/data.yaml
variants: [L0-silu, L4-relu, L4-leaky]
# the report's recipe, shortened for 2 CPU cores: 160 px, 12 epochs, lr0 0.01 (from scratch), 1 warm-up epoch
recipe: {epochs: ${DEMO_EPOCHS:-12}, imgsz: 160, batch: 16, lr0: 0.01, warmup_epochs: 1}
YAML
# the three members side by side, one torch thread each (a nano model at 160 px leaves cores idle between its ops:
# 176 s for the three against 217 s one after another with two threads, on 2 cores; bench/RESULTS.md)
npuyolo series run "$OUT/series.yaml" --executor process
npuyolo series rank demo-v3
npuyolo runs
npuyolo export demo-v3-L4-leaky --head npu --out "$OUT/L4-leaky-npu-head.onnx"   # the run's own 160 px

# INT8: quantize the LeakyReLU run (NPU head cut, calibration on train images), score it, time it
int8=$(npuyolo deploy quantize demo-v3-L4-leaky --data "$OUT/synth/data.yaml" --calib 100 --json \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['int8'])")
npuyolo deploy eval "$int8" --data "$OUT/synth/data.yaml"
npuyolo deploy bench "$int8" --runs 30

# NPU compatibility of every member (one call, one start), then the LeakyReLU rewrite for the ReLU-only target
npuyolo npu check demo-v3-L0-silu demo-v3-L4-relu demo-v3-L4-leaky \
  -t relu-only -t rknn-rk3588 -t edgetpu -t ethos-u55 -t nxp-neutron -t amd-dpu
leaky_onnx=$(npuyolo npu check demo-v3-L4-leaky -t relu-only --json | python3 -c "import json,sys; print(json.load(sys.stdin)[0]['onnx'])")
npuyolo npu rewrite "$leaky_onnx" --leaky relu-decomp --out "$OUT/L4-leaky-relu-decomp.onnx"
npuyolo npu check "$OUT/L4-leaky-relu-decomp.onnx" -t relu-only

# which artefact on which NPU: per member and target every candidate (export, exact LeakyReLU rewrites, re-slope,
# ReLU twin, INT8 routes) built and measured, vendor compilers used where installed; the reports below follow it
npuyolo series plan demo-v3 -t relu-only -t amd-dpu -t edgetpu -t ethos-u55 -t rknn-rk3588

# reports: the LeakyReLU run against its ReLU twin, and the series overview, each in Korean and English, Markdown and
# HTML: one call each renders all four from one reading (the comparison's bootstrap and the plots made once)
npuyolo report demo-v3-L4-leaky --compare demo-v3-L4-relu --lang ko --lang en --format md --format html --out "$OUT/reports"
npuyolo series report demo-v3 --lang ko --lang en --format md --format html --out "$OUT/reports/series"
echo "demo done: registry $NPUYOLO_REGISTRY, reports in $OUT/reports, ONNX in $OUT"
