#!/usr/bin/env bash
# The main job on the embedded default data: synthesize signs, train a small series, rank it, export L4.
set -euo pipefail
OUT=${1:-demo_out}
export NPUYOLO_REGISTRY="$OUT/runs/npuyolo.db"
mkdir -p "$OUT"

npuyolo data synth "$OUT/synth" --train 300 --val 60 --imgsz 320 --seed 0
npuyolo data check "$OUT/synth/data.yaml"
cat > "$OUT/series.yaml" <<YAML
name: demo-v3
data: synth/data.yaml
variants: [L0-silu, L4-relu, L4-leaky]
recipe: {epochs: ${DEMO_EPOCHS:-5}, imgsz: 160, batch: 16, warmup_epochs: 1}
YAML
npuyolo series run "$OUT/series.yaml"
npuyolo series rank demo-v3
npuyolo runs
npuyolo export demo-v3-L4-leaky --imgsz 160 --head npu --out "$OUT/L4-leaky-npu-head.onnx"
echo "demo done: registry $NPUYOLO_REGISTRY, ONNX $OUT/L4-leaky-npu-head.onnx"
