#!/usr/bin/env bash
# Validate every DICOM object (*.dcm) under a folder with dciodvfy (dicom3tools).
# Prints the number of objects checked and of objects with errors (listing them);
# exits 1 when any object has an error.
# Usage: bash scripts/dciodvfy_all.sh DIR
set -euo pipefail
folder="${1:?usage: dciodvfy_all.sh DIR}"
command -v dciodvfy >/dev/null || { echo "dciodvfy not found: run scripts/setup.sh" >&2; exit 2; }
report=$(mktemp)
trap 'rm -f "$report"' EXIT
find "$folder" -name '*.dcm' -print0 |
  xargs -0 -r -n 20 -P "$(nproc)" sh -c '
    for f in "$@"; do
      if dciodvfy "$f" 2>&1 | grep -q "^Error"; then echo "ERROR $f"; else echo "OK $f"; fi
    done' sh > "$report"
checked=$(wc -l < "$report")
failed=$(grep -c '^ERROR' "$report" || true)
grep '^ERROR' "$report" | head -20 || true
echo "dciodvfy: $checked objects checked, $failed with errors"
[ "$failed" -eq 0 ]
