#!/usr/bin/env bash
# Issue 20 on a lent GPU machine, in one call: the report's pair (L4-leaky, L4-relu) at 640 px, 100 epochs, side by side
# on the one GPU; then, with what time is left, one member alone for 2 epochs with AMP on and off (the GPU figures).
# Run from the repository root on the device:
#   device run: bash bench/gpu/seed640.sh   (carry: .whl .seeddata; see bench/gpu/README.md)
# Everything comes back as tar files under $OUT; `python bench/seed_experiment.py finish` turns them into best.pt,
# registry JSON and reports here.
set -uo pipefail
T0=$(date +%s)
LIMIT=${LIMIT:-570}          # seconds this call may use in all (the device's per-call limit is 600)
EPOCHS=${EPOCHS:-100}
IMGSZ=${IMGSZ:-640}
WORK=${WORK:-/tmp/npuyolo-seed640}
OUT=${OUT:-/tmp/seed640-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
DEVICE=${DEVICE:-0}
if [ -z "${SKIP_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  export PYTHONPATH=/tmp/site:$PWD/src
fi
python3 -c "import polars" 2>/dev/null || export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/bench/gpu/shim
python3 -c "import torch, ultralytics, npuyolo; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ultralytics', ultralytics.__version__)" || exit 4
nvidia-smi -L 2>/dev/null
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
pack() {  # one tar per run folder (best.pt, plots, results.csv; no last.pt) and one for the registry and logs
  for d in "$WORK"/runs/train/*/; do
    [ -d "$d" ] || continue
    n=$(basename "$d")
    tar -C "$WORK/runs/train" --exclude='last*.pt' --exclude='.*.partial' -cf "$OUT/run-${n//[^A-Za-z0-9._-]/_}.tar" "$n"
  done
  tar -C "$WORK" -czf "$OUT/registry.tar.gz" runs/npuyolo.db machine.json logs 2>/dev/null
  for amp in amp no-amp; do
    [ -d "$WORK-speed-$amp" ] && tar -C "$WORK-speed-$amp" --exclude='*.pt' --exclude='roadsign4' -czf "$OUT/speed-$amp.tar.gz" . 2>/dev/null
  done
  ls -la "$OUT"
}
# 1. the pair, side by side; stopped (and reported unfinished) if it would overrun the call
DEADLINE_MIN=$(python3 -c "print(max(1, ($(left) - 45) / 60))")
python3 bench/seed_experiment.py train --members ${MEMBERS:-L4-leaky L4-relu} --imgsz "$IMGSZ" --epochs "$EPOCHS" \
  --device "$DEVICE" --parallel 2 --workers 7 --cache ram --work "$WORK" --data .seeddata/roadsign4/data.yaml \
  --deadline-min "$DEADLINE_MIN"
echo "pair done after $(( $(date +%s) - T0 )) s"
for f in "$WORK"/logs/*.log; do echo "== $f"; grep -E "^\s+all\s" "$f" | tail -n 2; tail -n 2 "$f"; done
pack
# 2. the GPU figures: one member alone, 2 epochs, AMP on then off (epoch times land in the registry)
for amp in amp no-amp; do
  if [ "$(left)" -gt 75 ]; then
    mkdir -p "$WORK-speed-$amp"
    timeout $(( $(left) - 30 )) python3 bench/seed_experiment.py train --members L4-leaky --imgsz "$IMGSZ" --epochs 2 \
      --device "$DEVICE" --workers 14 --cache ram --work "$WORK-speed-$amp" --data .seeddata/roadsign4/data.yaml --"$amp" \
      > "$WORK-speed-$amp/train.log" 2>&1
    echo "speed $amp done after $(( $(date +%s) - T0 )) s"
  fi
done
pack
echo "all done after $(( $(date +%s) - T0 )) s"
