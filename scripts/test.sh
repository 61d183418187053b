#!/usr/bin/env bash
# The test command: set up, lint (ruff), type-check (mypy), then run every test,
# slow and integration ones included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check .
ruff format --check .
mypy
python -m pytest -n 2 --durations=15 "$@"
