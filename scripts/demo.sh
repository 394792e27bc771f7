#!/usr/bin/env bash
# The main job end to end on a labelled folder: extract -> info -> compare -> fit -> predict.
#   bash scripts/demo.sh [DATA_FOLDER] [OUT_FOLDER]
# DATA_FOLDER defaults to the FaceForensics++ part of ../shared/data (research data, read in
# place). The unpaired 24 fps actor originals are left out of training (see the data README).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-../shared/data/ffpp}"
out="${2:-runs/demo}"
fp=".venv/bin/fakeprobe"
mkdir -p "$out"
"$fp" extract "$data" --out "$out/cache.h5"
"$fp" info "$out/cache.h5"
"$fp" compare "$out/cache.h5" --exclude-method original_actors
"$fp" fit-logreg "$out/cache.h5" --exclude-method original_actors --out "$out/logreg.fpm"
# score a few items of the folder itself, to show the output (they were in training: this is a
# smoke test of `predict`, not a measurement)
mapfile -t sample < <(find "$data" -type f \( -name '*.mp4' -o -name '*.jpg' -o -name '*.png' \) | sort | head -n 3)
"$fp" predict "$out/logreg.fpm" "${sample[@]}" --csv "$out/predictions.csv"
echo "done: cache, model and predictions in $out/"
