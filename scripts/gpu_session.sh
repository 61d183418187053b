#!/usr/bin/env bash
# One GPU session, as run on a lent GPU machine (see docs/training.md, "GPU runs"):
#
#   bash scripts/gpu_session.sh OUT_DIR SECONDS
#
# 1. generate the CT and mammography training sets (the seeds of
#    scripts/train_bundled_models.sh; 400 CT and 2000 mammography studies);
# 2. train, at the same time on the one GPU:
#    - the CT segmenter twice, Dice + focal and Dice + cross-entropy, both at
#      learning rate 1e-2; the number of epochs is chosen from a two-epoch probe so
#      that both end inside SECONDS (the chosen commands are written to
#      OUT_DIR/commands.txt, so the runs can be repeated exactly);
#    - the mammography model at its native 512 x 384 input with lesion-mask
#      supervision (12 epochs);
# 3. measure inference speed on the GPU (benchmarks/inference_speed.py) for the
#    bundled models and the ones just trained;
# 4. pack the trained models and every log into OUT_DIR/results.tgz.
#
# Runs end by themselves: each training is bounded by `timeout`, and what a
# stopped run wrote (metrics log; weights and entry are written before
# calibration, which `medvision calibrate` can complete anywhere) is kept.
# Environment: SMOKE=1 makes every number tiny, to check the script on a CPU;
# SKIP_MAMMO=1 trains and benchmarks the CT segmenter alone; CT_SYNTH_WORKERS
# (default 6) generates the CT set with more processes; BENCH_RESERVE (default 150)
# is the seconds kept for the speed benchmark, BENCH_STUDIES its studies per model.
# The second call of 2026-11-26 was
#   SKIP_MAMMO=1 CT_SYNTH_WORKERS=14 BENCH_RESERVE=45 BENCH_STUDIES=4 \
#       bash scripts/gpu_session.sh OUT 315
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_session.sh OUT_DIR SECONDS}
budget=${2:?usage: gpu_session.sh OUT_DIR SECONDS}
start=$(date +%s)
work=build/gpu
models=$work/models
logs=$work/logs
rm -rf "$work"
mkdir -p "$out" "$models" "$logs"
log() { echo "[$(($(date +%s) - start)) s] $*"; }
left() { echo $((budget - ($(date +%s) - start))); }
mv=(python3 -c 'import sys; from medvision.cli import main; sys.exit(main())')
pack() { tar czf "$out/results.tgz" -C "$work" models logs; }

if [ "${SMOKE:-0}" = 1 ]; then
    ct_studies=40 mammo_studies=150 probe_studies=10 mammo_epochs=1 bench_studies=2 workers=1
    mammo_size=(128 96)
else
    ct_studies=400 mammo_studies=2000 probe_studies=40 mammo_epochs=12 bench_studies=16 workers=6
    mammo_size=(512 384)
fi
sites=("Northfield University Hospital" "Riverside Community Clinic" "St Brendan's General")
export OMP_NUM_THREADS=2 PYTHONWARNINGS=ignore

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python3 -c 'import sys, torch, monai, numpy; print(sys.version.split()[0], "torch", torch.__version__, "monai", monai.__version__, "numpy", numpy.__version__, "cuda", torch.cuda.is_available())'
    echo "processors: $(nproc)"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

log "1. phantoms"
"${mv[@]}" synth --modality ct --studies "$ct_studies" --seed 104 --prevalence 0.3 \
    --sites "${sites[@]}" --out "$work/ct" --workers "${CT_SYNTH_WORKERS:-6}" --no-progress \
    >"$logs/synth_ct.log" 2>&1 &
[ "${SKIP_MAMMO:-0}" = 1 ] || "${mv[@]}" synth --modality mammo --studies "$mammo_studies" --seed 103 --prevalence 0.3 \
    --sites "${sites[@]}" --out "$work/mammo" --workers 10 --no-progress \
    >"$logs/synth_mammo.log" 2>&1 &
wait
tail -n 8 "$logs"/synth_*.log
log "phantoms written"

log "2. training"
mammo_command=(train --modality mammo --manifest "$work/mammo/manifest.csv" --out "$models"
    --seed 0 --epochs "$mammo_epochs" --learning-rate 1e-3 --loss bce --lesion-masks
    --batch-size 32 --input-size "${mammo_size[@]}" --workers "$workers" --no-progress)
echo "medvision ${mammo_command[*]}" >>"$out/commands.txt"
# Until 150 s before the end: the speed benchmark needs them.
[ "${SKIP_MAMMO:-0}" = 1 ] ||
    timeout $(($(left) - 150)) "${mv[@]}" "${mammo_command[@]}" >"$logs/train_mammo.log" 2>&1 &

# CT probe: two epochs on the first studies of each split, to time an epoch; it is
# stopped once the second epoch is logged (its calibration is not needed).
ct_common=(--modality ct --manifest "$work/ct/manifest.csv" --seed 0 --batch-size 4
    --learning-rate 1e-2 --workers "$workers" --no-progress)
probe_log=$work/probe/ct-probe.metrics.jsonl
"${mv[@]}" train "${ct_common[@]}" --out "$work/probe" --epochs 2 \
    --max-studies "$probe_studies" --name ct-probe >"$logs/probe_ct.log" 2>&1 &
probe_pid=$!
for _ in $(seq 1 400); do
    [ "$(grep -c '"seconds"' "$probe_log" 2>/dev/null)" = 2 ] && break
    kill -0 "$probe_pid" 2>/dev/null || break
    sleep 1
done
kill "$probe_pid" 2>/dev/null
cp "$probe_log" "$logs/" 2>/dev/null
cat "$probe_log"
# Epoch 2 (epoch 1 holds the warm-up): the tune Dice costs the same as in the probe
# (the same tune studies); training scales with the train studies.
epoch_seconds=$(python3 - "$probe_log" "$work/ct/manifest.csv" "$probe_studies" <<'PYTHON'
import csv, json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
last = [record for record in records if "seconds" in record][-1]
train = sum(1 for row in csv.DictReader(open(sys.argv[2])) if row["split"] == "train")
scale = max(1.0, train / int(sys.argv[3]))
print(f"{last['tune_seconds'] + (last['seconds'] - last['tune_seconds']) * scale:.3f}")
PYTHON
)
# Two runs share the GPU and the processors: assume each epoch takes 1.5 times the
# estimate; keep 150 s for the benchmark, 60 s for caching the studies and 30 s for
# writing the weights. Calibration may then be cut short (see above).
reserve=${BENCH_RESERVE:-150}
ct_epochs=$(python3 -c "print(max(2, int(($(left) - $reserve - 90) / (1.5 * $epoch_seconds))))") ||
    ct_epochs=30
log "probe: an epoch of the whole train split takes about ${epoch_seconds} s; CT epochs: ${ct_epochs}"
for loss in focal bce; do
    ct_command=(train "${ct_common[@]}" --out "$models" --loss "$loss" --epochs "$ct_epochs"
        --name "ct-unet-$loss")
    echo "medvision ${ct_command[*]}" >>"$out/commands.txt"
    timeout $(($(left) - reserve)) "${mv[@]}" "${ct_command[@]}" >"$logs/train_ct_$loss.log" 2>&1 &
done
wait
log "training ended"
tail -n 25 "$logs"/train_*.log
pack

log "3. inference speed"
bench=$work/bench
mkdir -p "$bench"
[ "${SKIP_MAMMO:-0}" = 1 ] || cp medvision/models/weights/*.json medvision/models/weights/*.pt "$bench"/
for name in mammo-densenet ct-unet-focal; do
    if [ -f "$models/$name.json" ]; then cp "$models/$name".{json,pt} "$bench"/; fi
done
timeout $(($(left) - 15)) python3 benchmarks/inference_speed.py --models "$bench" \
    --studies "${BENCH_STUDIES:-$bench_studies}" --batch-size 16 >"$out/inference_speed.txt" 2>&1
cat "$out/inference_speed.txt"

log "4. packing"
pack
ls -la "$out"
log "done"
