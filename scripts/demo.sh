#!/usr/bin/env bash
# The main job end to end: extract -> info -> compare (+ HTML report) -> fit -> predict (with
# the fitted model, then with the detector bundled with fakeprobe).
#   bash scripts/demo.sh                 # on the offline sample fakeprobe makes (no data needed)
#   bash scripts/demo.sh DATA [OUT]      # on a labelled folder, e.g. ../shared/data/ffpp
# With no DATA, `fakeprobe sample` films face photos shipped inside installed packages and
# self-blends them: a pipeline check with labels, not a deepfake data set (see the README).
# With DATA, the unpaired 24 fps FF++ actor originals are left out of training (data README).
set -euo pipefail
cd "$(dirname "$0")/.."
fp=".venv/bin/fakeprobe"
features=(-b forensic -b mobilenet-v2 -b face-context)
if [ $# -eq 0 ]; then
  out="runs/demo-sample"
  mkdir -p "$out"
  "$fp" sample --out "$out/sample"
  data="$out/sample/labels.csv"
  # the sample's only fakes are self-blends: score them (true fakes are not at hand)
  options=(--score-self-blend -f forensic -f mobilenet-v2 -f face-context)
  fit_options=(--score-self-blend -f forensic)
  holdout="$out/sample/holdout/labels.csv"
else
  data="$1"
  out="${2:-runs/demo}"
  mkdir -p "$out"
  options=(--exclude-method original_actors -f forensic -f mobilenet-v2 -f face-context)
  fit_options=(--exclude-method original_actors -f forensic)
  holdout=""
fi
"$fp" extract "$data" --out "$out/cache.h5" --keep-crops 128 "${features[@]}"
"$fp" info "$out/cache.h5"
"$fp" compare "$out/cache.h5" "${options[@]}" --save-run "$out/run.json" \
  --report "$out/report.html"
"$fp" fit-logreg "$out/cache.h5" "${fit_options[@]}" --out "$out/logreg.fpm"
if [ -n "$holdout" ]; then
  # clips filmed along other camera paths, never seen in training, with known labels
  mapfile -t inputs < <(find "$(dirname "$holdout")" -name '*.mp4' | sort)
else
  # a few items of the folder itself (they were in training: a smoke test of `predict`)
  mapfile -t inputs < <(find "$data" -type f \( -name '*.mp4' -o -name '*.jpg' -o -name '*.png' \) | sort | head -n 3)
fi
"$fp" predict --model "$out/logreg.fpm" "${inputs[@]}" --csv "$out/predictions.csv"
# the detector that ships with fakeprobe (no training at all): what a new user runs first
"$fp" predict "${inputs[@]}" --csv "$out/predictions-bundled.csv"
echo "done: cache, report ($out/report.html), model and predictions in $out/"
