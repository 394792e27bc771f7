"""Training on real footage alone: self-blended pseudo-fakes against true fakes.

On a cache made with ``fakeprobe extract ... --self-blend`` from the FF++ and DFDC videos of
``../shared/data``, every feature set x head is trained three ways on the same grouped folds:

* ``true``: reals + the true fakes (the usual supervised setting);
* ``self-blend``: reals + their self-blended pseudo-fakes only (no true fake seen);
* ``both``: reals + true fakes + pseudo-fakes;

and scored on reals + true fakes only (pseudo-fakes are never scored), two ways:

* ``FF++ CV``: grouped 5-fold cross-validation over the FF++ videos (c23 and c40; the unpaired
  24 fps actor originals and their pseudo-fakes are left out, see the data README);
* ``DFDC``: trained on every FF++ item, tested on the DFDC videos (other people, capture and
  generators).

    .venv/bin/fakeprobe extract ../shared/data/ffpp ../shared/data/dfdc --out runs/sbi/videos.h5 \\
        --self-blend --keep-crops 224 -b mobilenet-v2 -b efficientnet-lite0 -b cnn-stats \\
        -b srm -b face-context
    .venv/bin/python benchmarks/self_blend.py runs/sbi/videos.h5 --json-out r.json --markdown r.md

Prints one JSON document on stdout and a markdown table on stderr. With 9 FF++ groups, a label
shuffle within groups reaches a video AUC of 0.63 at its 95th percentile; DFDC has 6 videos
(1 real): its AUC moves in steps of 0.2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from fakeprobe.app import Protocol
from fakeprobe.classifiers.data import FrameData, load_frames
from fakeprobe.training.cv import cross_validate, grouped_folds, train_test
from _output import emit
from fakeprobe.classifiers.metrics import fmt
from fakeprobe.core.provenance import environment
from fakeprobe.features.cache import CacheReader

CONDITIONS = ("true", "self-blend", "both")
_TRAIN_FAKES = {"true": "real", "self-blend": "self-blend", "both": "all"}
#: Items read from these paths are left out (unpaired 24 fps originals: see the data README).
LEFT_OUT = "original_sequences/actors/"


def _split(data: FrameData) -> tuple[FrameData, FrameData]:
    """(FF++ items without the actors, DFDC items)."""
    paths = np.array([str(p) for p in data.videos["path"]]) if "path" in data.videos else None
    datasets = data.videos["dataset"]
    keep_ff = np.array([d.startswith("FaceForensics++") for d in datasets])
    if paths is not None:
        keep_ff &= np.array([LEFT_OUT not in p for p in paths])
    keep_dfdc = datasets == "DFDC"
    return (data.subset_videos(np.flatnonzero(keep_ff)),
            data.subset_videos(np.flatnonzero(keep_dfdc)))


def run(cache: Path, features: list[str], heads: list[str], folds: int, seed: int) -> dict:
    rows = []
    for feature in features:
        data = load_frames(cache, [feature])
        ff, dfdc = _split(data)
        splits = grouped_folds(ff, folds, seed)
        for head in heads:
            for condition in CONDITIONS:
                protocol = Protocol(train_fakes=_TRAIN_FAKES[condition], random_state=seed)
                t0 = time.perf_counter()
                cv = cross_validate(ff, head, folds=splits, random_state=seed,
                                    roles=protocol.roles(ff))
                cross = train_test(ff, dfdc, head, random_state=seed,
                                   roles=protocol.roles(ff, dfdc))
                rows.append({
                    "features": feature, "head": head, "train": condition,
                    "ffpp_cv": {k: cv.video[k] for k in ("roc_auc", "log_loss", "n")},
                    "ffpp_cv_frame_auc": cv.frame["roc_auc"],
                    "dfdc": {k: cross.video[k] for k in ("roc_auc", "log_loss", "n")},
                    "seconds": time.perf_counter() - t0,
                })
                print(f"{feature} {head} {condition}: FF++ {fmt(cv.video['roc_auc'])} "
                      f"DFDC {fmt(cross.video['roc_auc'])}", file=sys.stderr)
    with CacheReader(cache) as reader:
        config = reader.config.to_dict()
        blend = reader.attrs.get("self_blend")
    return {"benchmark": "self_blend", "cache": str(cache), "extractor_config": config,
            "self_blend": json.loads(blend) if blend else None, "folds": folds, "seed": seed,
            "environment": environment(), "results": rows}


def markdown(result: dict) -> str:
    lines = [
        f"Video ROC-AUC (scored on reals + true fakes only), seed {result['seed']}, "
        f"{result['folds']}-fold grouped CV on FF++; DFDC = trained on all FF++.",
        "",
        "| features | head | FF++ CV: true | self-blend | both | DFDC: true | self-blend | "
        "both |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table: dict[tuple[str, str], dict[str, dict]] = {}
    for row in result["results"]:
        table.setdefault((row["features"], row["head"]), {})[row["train"]] = row
    for (feature, head), cells in table.items():
        ff = [fmt(cells[c]["ffpp_cv"]["roc_auc"]) if c in cells else "-" for c in CONDITIONS]
        df = [fmt(cells[c]["dfdc"]["roc_auc"]) if c in cells else "-" for c in CONDITIONS]
        lines.append(f"| {feature} | {head} | " + " | ".join(ff + df) + " |")
    env = result["environment"]
    lines += ["", f"{env['cpu']}, {env['cores']} cores; fakeprobe "
              f"{env['versions'].get('fakeprobe')}, scikit-learn "
              f"{env['versions'].get('scikit-learn')}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="a cache made with extract --self-blend")
    parser.add_argument("--features", nargs="+", default=None,
                        help="feature sets (default: every one in the cache)")
    parser.add_argument("--heads", nargs="+", default=["logreg", "xgb", "svm"])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    with CacheReader(args.cache) as reader:
        features = args.features or list(reader.feature_sets)
    result = run(args.cache, features, args.heads, args.folds, args.seed)
    emit(result, markdown(result), args.json_out, args.markdown)


if __name__ == "__main__":
    main()
