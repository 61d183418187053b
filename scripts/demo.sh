#!/usr/bin/env bash
# The main job on the embedded default: generate a multi-site phantom set for all
# four modalities and print its summary. Output goes to out/phantoms (or $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
out="${1:-out/phantoms}"
medvision synth --modality all --studies 20 --seed 0 --out "$out"
