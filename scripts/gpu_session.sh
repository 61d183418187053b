#!/usr/bin/env bash
# One GPU session, as run on a lent GPU machine (see docs/training.md, "GPU session"):
#
#   bash scripts/gpu_session.sh OUT_DIR SECONDS
#
# 1. generate the phantom sets of scripts/train_bundled_models.sh (same seeds, same
#    sites): 1,000 mammography studies (seed 103), and the CT set of 300 studies
#    (seed 104) joined with 300 training phantoms that all hold nodules (seed 1104);
# 2. train, at the same time on the one GPU, the recipes of that script's lines with
#    `--time-limit` instead of a fixed length (`medvision train` shrinks the run to
#    the epochs that fit after the first one, keeps its best epoch, then calibrates
#    and writes the weights, so a run always leaves a model):
#    - mammography: native 512 x 384 views, 128 x 128 patches with lesion-mask
#      supervision and the eight patch symmetries (up to MAMMO_EPOCHS, default 120);
#    - CT: the nodule-rich set, Dice + focal, learning rate 1e-2, the Hessian dot
#      filter as a second input channel (up to CT_EPOCHS, default 200; CT_NETWORK=FILE
#      trains the network of that file instead, e.g.
#      benchmarks/networks/ct-unet-wide.json);
#    the chosen commands are written to OUT_DIR/commands.txt, so the runs can be
#    repeated exactly (same epochs: pass the epochs the metrics log says ran);
# 3. measure inference speed on the GPU (benchmarks/inference_speed.py) for the
#    bundled models and the ones just trained, if time is left;
# 4. pack the trained models and every log into OUT_DIR/results.tgz.
#
# Every step ends by itself: each training is also bounded by `timeout`.
# Environment: MAMMO_INIT=ENTRY.json also trains, beside the runs above, the
# mammography recipe started from that entry's weights (`--init-from`, named
# mammo-densenet-ft, learning rate MAMMO_INIT_LR, default 5e-4); MAMMO_SCRATCH=0
# then leaves out the run from a fresh initialisation. MAMMO_BATCH (default 8) and
# MAMMO_PATCH (default 128: square patches) size the mammography batches;
# MAMMO_ALT_PATCH=N also trains, beside them, the same recipe on N x N patches
# (named mammo-densenet-pN). STOP_MARGIN (default 30) seconds before the end,
# `timeout` stops the runs (calibration too, if still going: the weights are
# written before it, and `medvision calibrate` can finish it elsewhere);
# BENCH_BUNDLED=0 leaves the bundled models out of the speed benchmark. SMOKE=1
# makes every number tiny, to check the script on a CPU; SKIP_MAMMO=1 / SKIP_CT=1
# leave one modality out; SYNTH_WORKERS (default 14) processes generate the
# phantoms; TRAIN_WORKERS (default 6) loader processes per run. AFTER_TRAINING (default 300) seconds are
# kept after the training epochs for calibration, writing and the benchmark, and
# LOADING (default 150) seconds for caching the studies before the first epoch:
# on 2026-11-27 on the H200 machine, two mammography runs at once were still
# scoring their calibration, tune and test splits 120 s after their weights were
# written (`medvision calibrate` of one such model takes 203 s on the 2-core
# development machine), and one run with 12 loader processes took about 130 s
# to cache its studies.
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
    mammo_studies=150 ct_studies=80 ct_extra=4 max_studies=(--max-studies 12)
    mammo_epochs=3 ct_epochs=3 bench_studies=2 workers=${TRAIN_WORKERS:-1}
else
    mammo_studies=1000 ct_studies=300 ct_extra=300 max_studies=()
    mammo_epochs=${MAMMO_EPOCHS:-120} ct_epochs=${CT_EPOCHS:-200} bench_studies=16
    workers=${TRAIN_WORKERS:-6}
fi
synth_workers=${SYNTH_WORKERS:-14}
sites=("Northfield University Hospital" "Riverside Community Clinic" "St Brendan's General")
export OMP_NUM_THREADS=2 PYTHONWARNINGS=ignore

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
    python3 -c 'import sys, torch, monai, numpy; print(sys.version.split()[0], "torch", torch.__version__, "monai", monai.__version__, "numpy", numpy.__version__, "cuda", torch.cuda.is_available())'
    echo "processors: $(OMP_NUM_THREADS='' nproc --all)"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

# synth NAME MODALITY STUDIES SEED PREVALENCE [OPTIONS...]
synth() {
    local name=$1 modality=$2 studies=$3 seed=$4 prevalence=$5
    shift 5
    "${mv[@]}" synth --modality "$modality" --studies "$studies" --seed "$seed" \
        --prevalence "$prevalence" --sites "${sites[@]}" --out "$work/$name" \
        --workers "$synth_workers" --no-progress "$@" >"$logs/synth_$name.log" 2>&1
}

log "1. phantoms"
if [ "${SKIP_MAMMO:-0}" != 1 ]; then synth mammo mammo "$mammo_studies" 103 0.3; fi
if [ "${SKIP_CT:-0}" != 1 ]; then
    synth ct ct "$ct_studies" 104 0.3
    synth ct-nodules ct "$ct_extra" 1104 1.0 --split train
    python3 scripts/merge_manifests.py --out "$work/ct-plus/manifest.csv" \
        "$work/ct/manifest.csv" "$work/ct-nodules/manifest.csv" >"$logs/merge_ct.log" 2>&1
fi
tail -n 4 "$logs"/synth_*.log
log "phantoms written"

log "2. training"
limit=$(($(left) - ${AFTER_TRAINING:-300} - ${LOADING:-150}))
if [ "$limit" -lt 30 ]; then
    log "only ${limit} s would be left for training; stopping"
    exit 1
fi
log "time limit of each run's epochs: ${limit} s"
common=(--seed 0 --out "$models" --workers "$workers" --time-limit "$limit" --no-progress
    "${max_studies[@]}")
# mammo_recipe PATCH: the mammography command with PATCH x PATCH training patches
mammo_recipe() {
    echo train --modality mammo --manifest "$work/mammo/manifest.csv" --epochs "$mammo_epochs" \
        --learning-rate 2e-3 --loss bce --lesion-masks --input-size 512 384 \
        --patch-size "$1" "$1" --patches-per-view 4 --batch-size "${MAMMO_BATCH:-8}" \
        --balanced-sampler --patch-symmetries
}
read -ra mammo_command <<<"$(mammo_recipe "${MAMMO_PATCH:-128}")"
mammo_command+=("${common[@]}")
ct_command=(train --modality ct --manifest "$work/ct-plus/manifest.csv" "${common[@]}"
    --epochs "$ct_epochs" --learning-rate 1e-2 --batch-size 4 --dot-enhancement)
if [ -n "${CT_NETWORK:-}" ]; then ct_command+=(--network "$CT_NETWORK"); fi
# Both end on their own; `timeout` only guards against a run that hangs, and leaves
# the seconds the speed benchmark needs.
stop_after=$(($(left) - ${STOP_MARGIN:-30}))
if [ "${SKIP_MAMMO:-0}" != 1 ] && [ "${MAMMO_SCRATCH:-1}" != 0 ]; then
    echo "medvision ${mammo_command[*]}" >>"$out/commands.txt"
    timeout "$stop_after" "${mv[@]}" "${mammo_command[@]}" >"$logs/train_mammo.log" 2>&1 &
fi
if [ -n "${MAMMO_INIT:-}" ]; then
    ft_command=("${mammo_command[@]}" --init-from "$MAMMO_INIT" --name mammo-densenet-ft)
    ft_command=("${ft_command[@]/#2e-3/${MAMMO_INIT_LR:-5e-4}}")
    echo "medvision ${ft_command[*]}" >>"$out/commands.txt"
    timeout "$stop_after" "${mv[@]}" "${ft_command[@]}" >"$logs/train_mammo_ft.log" 2>&1 &
fi
if [ -n "${MAMMO_ALT_PATCH:-}" ]; then
    alt=$MAMMO_ALT_PATCH
    read -ra alt_command <<<"$(mammo_recipe "$alt")"
    alt_command+=("${common[@]}" --name "mammo-densenet-p$alt")
    echo "medvision ${alt_command[*]}" >>"$out/commands.txt"
    timeout "$stop_after" "${mv[@]}" "${alt_command[@]}" >"$logs/train_mammo_p$alt.log" 2>&1 &
fi
if [ "${SKIP_CT:-0}" != 1 ]; then
    echo "medvision ${ct_command[*]}" >>"$out/commands.txt"
    timeout "$stop_after" "${mv[@]}" "${ct_command[@]}" >"$logs/train_ct.log" 2>&1 &
fi
wait
cp "$models"/*.metrics.jsonl "$logs"/ 2>/dev/null
log "training ended"
tail -n 12 "$logs"/train_*.log
pack

if [ "$(left)" -gt 40 ]; then
    log "3. inference speed"
    bench=$work/bench
    mkdir -p "$bench"
    if [ "${BENCH_BUNDLED:-1}" != 0 ]; then
        cp medvision/models/weights/*.json medvision/models/weights/*.pt "$bench"/
    fi
    cp "$models"/*.json "$models"/*.pt "$bench"/ 2>/dev/null
    timeout $(($(left) - 15)) python3 benchmarks/inference_speed.py --models "$bench" \
        --studies "$bench_studies" --batch-size 16 >"$out/inference_speed.txt" 2>&1
    cat "$out/inference_speed.txt"
fi

log "4. packing"
pack
ls -la "$out"
log "done"
