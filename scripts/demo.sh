#!/usr/bin/env bash
# The main job on the embedded default: generate a multi-site phantom set for all
# four modalities, print its summary, then analyse every study of a modality the
# bundled models serve and write out/phantoms/predictions.csv (or $1/...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
out="${1:-out/phantoms}"
medvision synth --modality all --studies 20 --seed 0 --out "$out"
mapfile -t served < <(python -c "
from medvision.models.registry import load_registry
for modality in sorted({entry.modality.value for entry in load_registry().values()}):
    print(modality)
")
if [ ${#served[@]} -eq 0 ]; then
    echo "no bundled model is installed; see docs/training.md to train one" >&2
    exit 0
fi
paths=()
for modality in "${served[@]}"; do
    paths+=("$out/$modality")
done
medvision predict "${paths[@]}" --out "$out/predictions.csv"
python scripts/summarise_predictions.py "$out/predictions.csv" "$out/manifest.csv"
