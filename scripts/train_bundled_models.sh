#!/usr/bin/env bash
# Train the bundled models on phantoms, reproducibly: one command for all of them.
#
#   bash scripts/train_bundled_models.sh [MODALITY...]      (default: cxr fundus mammo ct)
#
# For each modality: generate its training set (fixed seed, three of the four phantom
# sites — the fourth, Harbourview Medical Centre, is kept out for the domain-shift
# figures of benchmarks/model_acceptance.py), then `medvision train` into
# medvision/models/weights (fp16 weights, registry entry, metrics log and
# reports/<name>/calibration_report.json). Phantom sets go to build/bundled/.
# Same seeds, same code and the same CPU give the same weights; a GPU run differs
# in the last bits (cuDNN, bf16 autocast).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate

weights=medvision/models/weights
work=build/bundled
sites=("Northfield University Hospital" "Riverside Community Clinic" "St Brendan's General")

# bundle MODALITY STUDIES SEED TRAIN-OPTIONS...
bundle() {
    local modality=$1 studies=$2 seed=$3
    shift 3
    local data="$work/$modality"
    if [ ! -f "$data/manifest.csv" ]; then
        medvision synth --modality "$modality" --studies "$studies" --seed "$seed" \
            --prevalence 0.3 --sites "${sites[@]}" --out "$data"
    fi
    medvision train --modality "$modality" --manifest "$data/manifest.csv" \
        --out "$weights" --seed 0 "$@"
}

modalities=("$@")
if [ ${#modalities[@]} -eq 0 ]; then
    modalities=(cxr fundus mammo ct)
fi
for modality in "${modalities[@]}"; do
    case "$modality" in
        cxr) bundle cxr 2000 101 --epochs 40 --learning-rate 1e-3 --loss bce --lesion-masks ;;
        fundus) bundle fundus 2000 102 --epochs 14 --learning-rate 1e-3 --loss bce --lesion-masks ;;
        mammo)
            bundle mammo 1000 103 --epochs 30 --learning-rate 2e-3 --loss bce --lesion-masks \
                --input-size 512 384 --patch-size 128 128 --patches-per-view 4 --batch-size 8 \
                --balanced-sampler
            ;;
        ct) bundle ct 300 104 --epochs 60 --learning-rate 1e-2 --batch-size 4 --workers 1 ;;
        *)
            echo "unknown modality '$modality': expected cxr, fundus, mammo or ct" >&2
            exit 2
            ;;
    esac
done
