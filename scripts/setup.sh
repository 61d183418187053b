#!/usr/bin/env bash
# Set up everything medvision needs on a fresh Debian machine with Python 3.11:
# Debian packages (DICOM validators and peers, pdftoppm to look at PDF reports),
# a virtual environment in .venv, PyTorch (the pinned CPU build) and the package
# with its development tools.
# Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(dicom3tools dcmtk poppler-utils)
missing=()
for command in dciodvfy storescu dsrdump pdftoppm; do
  command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages ${DEBIAN_PACKAGES[*]} (missing: ${missing[*]})"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${DEBIAN_PACKAGES[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.medvision-setup
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  python -m pip install -q --upgrade pip
  # The CPU build of torch 2.13.0 first, so that no dependency pulls a CUDA build.
  python -m pip install -q "torch==2.13.0"
  python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
