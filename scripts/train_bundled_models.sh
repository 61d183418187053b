#!/usr/bin/env bash
# Train the bundled models on phantoms, reproducibly: one command for all of them.
#
#   bash scripts/train_bundled_models.sh [MODALITY...]      (default: cxr fundus mammo ct)
#
# For each modality: generate its training set (fixed seed, three of the four phantom
# sites — the fourth, Harbourview Medical Centre, is kept out for the domain-shift
# figures of benchmarks/model_acceptance.py), then `medvision train` into
# medvision/models/weights (fp16 weights, registry entry, metrics log and
# reports/<name>/calibration_report.json); for the bundled classifiers (cxr, fundus),
# then refit calibration and thresholds on fresh calibration and tune sets of 1,000
# studies each (operating_points below). Phantom sets go to build/bundled/.
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

# phantoms FOLDER MODALITY STUDIES SEED [SYNTH-OPTIONS...]: generate a set once.
phantoms() {
    local data=$1 modality=$2 studies=$3 seed=$4
    shift 4
    if [ ! -f "$data/manifest.csv" ]; then
        medvision synth --modality "$modality" --studies "$studies" --seed "$seed" \
            --sites "${sites[@]}" --out "$data" "$@"
    fi
}

# bundle MODALITY STUDIES SEED TRAIN-OPTIONS...
bundle() {
    local modality=$1 studies=$2 seed=$3
    shift 3
    phantoms "$work/$modality" "$modality" "$studies" "$seed" --prevalence 0.3
    medvision train --modality "$modality" --manifest "$work/$modality/manifest.csv" \
        --out "$weights" --seed 0 "$@"
}

# bundle_ct STUDIES SEED EXTRA-STUDIES EXTRA-SEED TRAIN-OPTIONS...: the CT set, plus
# EXTRA-STUDIES training phantoms that all hold nodules (the segmenter learns from
# nodule voxels; at prevalence 0.3 the train split holds about 55 scans with nodules).
bundle_ct() {
    local studies=$1 seed=$2 extra=$3 extra_seed=$4
    shift 4
    phantoms "$work/ct" ct "$studies" "$seed" --prevalence 0.3
    phantoms "$work/ct-nodules" ct "$extra" "$extra_seed" --prevalence 1.0 --split train
    python scripts/merge_manifests.py --out "$work/ct-plus/manifest.csv" \
        "$work/ct/manifest.csv" "$work/ct-nodules/manifest.csv"
    medvision train --modality ct --manifest "$work/ct-plus/manifest.csv" \
        --out "$weights" --seed 0 "$@"
}

# operating_points MODALITY NAME STUDIES CALIBRATION-SEED TUNE-SEED: refit the model's
# calibration and thresholds (`medvision calibrate`, weights unchanged) on fresh
# phantom sets of the training sites, STUDIES each in the calibration and tune
# splits. The training manifest's tune split picked the kept epoch and holds about
# 60 positives per finding; a threshold is an order statistic of the positives, so
# it needs many more to hold its sensitivity on new data (docs/training.md,
# "Operating points").
operating_points() {
    local modality=$1 name=$2 studies=$3 calibration_seed=$4 tune_seed=$5
    local data="$work/$modality-operating-points"
    local split seed
    for split in calibration tune; do
        seed=$calibration_seed
        [ "$split" = tune ] && seed=$tune_seed
        phantoms "$data/$split" "$modality" "$studies" "$seed" --prevalence 0.3 --split "$split"
    done
    python scripts/merge_manifests.py --out "$data/manifest.csv" \
        "$data/calibration/manifest.csv" "$data/tune/manifest.csv"
    medvision calibrate --model "$weights/$name.json" --manifest "$data/manifest.csv"
}

modalities=("$@")
if [ ${#modalities[@]} -eq 0 ]; then
    modalities=(cxr fundus mammo ct)
fi
for modality in "${modalities[@]}"; do
    case "$modality" in
        cxr)
            bundle cxr 2000 101 --epochs 40 --learning-rate 1e-3 --loss bce --lesion-masks
            operating_points cxr cxr-densenet 1000 201 211
            ;;
        fundus)
            # referable DR, then the DR grade's outputs trained on it frozen (--grade-only),
            # so the bundled referable DR is exactly the first run's (docs/training.md)
            bundle fundus 2000 102 --epochs 14 --learning-rate 1e-3 --loss bce --lesion-masks
            rm -rf "$work/fundus-referable"
            mkdir -p "$work/fundus-referable"
            mv "$weights"/fundus-densenet.{pt,json,metrics.jsonl} "$work/fundus-referable/"
            medvision train --modality fundus --manifest "$work/fundus/manifest.csv" \
                --out "$weights" --seed 0 --epochs 14 --learning-rate 1e-3 --loss bce \
                --lesion-masks --grade --grade-only \
                --init-from "$work/fundus-referable/fundus-densenet.json"
            operating_points fundus fundus-densenet 1000 202 212
            ;;
        mammo)
            # mirrored patches, then each view scored as the mean of four mirror images
            # of it (--test-time-looks; docs/training.md). Not good enough to bundle yet.
            bundle mammo 1000 103 --epochs 15 --learning-rate 2e-3 --loss bce --lesion-masks \
                --input-size 512 384 --patch-size 128 128 --patches-per-view 4 --batch-size 32 \
                --balanced-sampler --patch-symmetries --workers 1
            medvision calibrate --model "$weights/mammo-densenet.json" \
                --manifest "$work/mammo/manifest.csv" --test-time-looks 4
            ;;
        ct) bundle_ct 300 104 300 1104 --epochs 62 --learning-rate 1e-2 --batch-size 4 --workers 1 --dot-enhancement ;;
        *)
            echo "unknown modality '$modality': expected cxr, fundus, mammo or ct" >&2
            exit 2
            ;;
    esac
done
