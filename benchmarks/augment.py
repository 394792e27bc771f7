"""Does augmentation at extraction (``extract --augment``) help? Grouped AUC and robustness to
recompression, with and without the augmented rows.

One cache of the FF++ YouTube originals and their fakes, at both compressions, extracted with
``--augment``; the original rows are exactly those of a run without it, so every comparison
below differs only in whether the training part also holds the augmented rows of its training
items (they are never scored). With the default backbone and the ``logreg`` head:

* ``c40 CV``: grouped cross-validation on the c40 items (a fake and both its source videos in
  one group), repeated over ``--seeds`` shuffles of the folds; the mean video ROC-AUC;
* ``c40 -> c23``: trained on every c40 item, scored on the c23 items, and ``c23 -> c40`` the
  reverse (the two compressions hold no common group: see ``../shared/data/README.md``).

The DFD actor originals (``original_sequences/actors``) are left out: 24 fps originals with no
fakes, which a head can tell by their frame rate alone.

    .venv/bin/fakeprobe extract ../shared/data/ffpp/original_sequences/youtube \\
        ../shared/data/ffpp/manipulated_sequences --out runs/augment/ffpp.h5 --frames 8 \\
        --augment flip,jpeg:60,blur,noise,scale
    .venv/bin/python benchmarks/augment.py runs/augment/ffpp.h5 \\
        --json-out benchmarks/results/augment-2026-12-01.json \\
        --markdown benchmarks/results/augment-2026-12-01.md

Prints one JSON document on stdout and a markdown table on stderr. c40 has 50 items in 5
groups and c23 7 items in 4 groups: an AUC moves in large steps here (see the data README on
label-shuffle noise), so read a difference below about 0.1 as none.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from _output import emit
from fakeprobe.classifiers.data import FrameData, Selection, load_frames
from fakeprobe.classifiers.metrics import fmt
from fakeprobe.core.augment import row_names
from fakeprobe.core.provenance import environment
from fakeprobe.core.resources import measure
from fakeprobe.features.cache import CacheReader
from fakeprobe.training.cv import cross_validate, grouped_folds, train_test

C40, C23 = "FaceForensics++ c40", "FaceForensics++ c23"
#: Items of this method are left out (unpaired 24 fps originals: see the data README).
LEFT_OUT_METHODS = ("original_actors",)


def _data(cache: Path, features: list[str], dataset: str, augmented: bool) -> FrameData:
    return load_frames(cache, features, Selection(datasets=(dataset,),
                                                  exclude_methods=LEFT_OUT_METHODS),
                       augmented=augmented)


def _only(data: FrameData, names: tuple[str, ...] | None) -> FrameData:
    """``data`` with the augmented rows of ``names`` only (every one for ``None``)."""
    if names is None or data.augment is None:
        return data
    keep = data.original | np.isin(data.augment, names)
    return replace(data, X=data.X[keep], y=data.y[keep], video=data.video[keep],
                   frame_index=data.frame_index[keep], timestamp=data.timestamp[keep],
                   track=data.track[keep], augment=data.augment[keep])


def _scores(report) -> dict:
    return {"video_roc_auc": report.video["roc_auc"], "frame_roc_auc": report.frame["roc_auc"],
            "video_log_loss": report.video.get("log_loss"),
            "scored_items": len(report.video_scores), "scored_frames": report.n_frames}


def run(cache: Path, features: list[str], head: str, folds: int, seeds: list[int]) -> dict:
    rows = []
    with CacheReader(cache) as reader:
        transforms = row_names(reader.config.augment)
    # no augmented row, all of them, then each transform alone
    conditions = [("original", ()), ("all augmented", None)] + [
        (f"+ {t} only", (t,)) for t in transforms]
    full = {d: _data(cache, features, d, True) for d in (C40, C23)}
    for name, names in conditions:
        c40, c23 = (_only(full[d], names) if names != () else _data(cache, features, d, False)
                    for d in (C40, C23))
        train_rows = {"c40": int(len(c40.y)), "c23": int(len(c23.y))}
        cv_runs = []
        for seed in seeds:
            # the folds depend on the items only: the same with and without augmentation
            split = grouped_folds(c40, folds, seed)
            with measure() as usage:
                report = cross_validate(c40, head, folds=split, random_state=seed)
            cv_runs.append({"seed": seed, **_scores(report), "seconds": usage.seconds})
        rows.append({"training": name, "protocol": "c40 CV", "train_rows": train_rows["c40"],
                     "runs": cv_runs,
                     "video_roc_auc": float(np.mean([r["video_roc_auc"] for r in cv_runs])),
                     "video_roc_auc_sd": float(np.std([r["video_roc_auc"] for r in cv_runs])),
                     "frame_roc_auc": float(np.mean([r["frame_roc_auc"] for r in cv_runs])),
                     "scored_frames": cv_runs[0]["scored_frames"]})
        for source, target, label in ((c40, C23, "c40 -> c23"), (c23, C40, "c23 -> c40")):
            test = _data(cache, features, target, False)
            with measure() as usage:
                report = train_test(source, test, head)
            rows.append({"training": name, "protocol": label, "train_rows": int(len(source.y)),
                         **_scores(report), "seconds": usage.seconds})
    with CacheReader(cache) as reader:
        config = reader.config.to_dict()
        counts = {}
        marks = reader.frames(("augment", "has_face"))
        for mark in np.unique(marks["augment"][marks["has_face"]]):
            counts[str(mark) or "original"] = int(
                ((marks["augment"] == mark) & marks["has_face"]).sum())
    return {"benchmark": "augment", "cache": str(cache), "extractor_config": config,
            "face_rows": counts, "features": features, "head": head, "folds": folds,
            "seeds": seeds, "environment": environment(), "results": rows}


def markdown(result: dict) -> str:
    config = result["extractor_config"]
    lines = [
        f"Video ROC-AUC of `{result['head']}` on `{'+'.join(result['features'])}`, FF++ "
        f"YouTube items ({config['frames']} frames per video), without and with the rows of "
        f"`--augment {config['augment']}` in training (scored rows: original only). c40 CV: "
        f"grouped {result['folds']}-fold CV (mean (sd) over fold seeds "
        f"{', '.join(map(str, result['seeds']))}).",
        "",
        "| protocol | training | training rows | video AUC | frame AUC | scored items | "
        "scored frames |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["results"]:
        auc = fmt(row["video_roc_auc"])
        if "video_roc_auc_sd" in row and len(result["seeds"]) > 1:
            auc += f" ({row['video_roc_auc_sd']:.3f})"
        items = row.get("scored_items", row.get("runs", [{}])[0].get("scored_items"))
        lines.append(f"| {row['protocol']} | {row['training']} | {row['train_rows']} | {auc} | "
                     f"{fmt(row['frame_roc_auc'])} | {items} | {row['scored_frames']} |")
    env = result["environment"]
    lines += ["", "Face rows in the cache: " + ", ".join(
        f"{k} {v}" for k, v in result["face_rows"].items()),
        "", f"{env['cpu']}, {env['cores']} cores, {env['memory_gb']} GB; fakeprobe "
        f"{env['versions'].get('fakeprobe')}, scikit-learn {env['versions'].get('scikit-learn')}"
        f", numpy {env['versions'].get('numpy')}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache", type=Path, help="an FF++ cache made with extract --augment")
    parser.add_argument("--features", nargs="+", default=None,
                        help="feature sets (default: the cache's first backbone)")
    parser.add_argument("--head", default="logreg")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="shuffles of the CV folds (with as many groups as folds, every "
                        "seed gives the same leave-one-group-out split)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    with CacheReader(args.cache) as reader:
        if not reader.config.augment:
            parser.error(f"{args.cache} was extracted without --augment")
        features = args.features or [reader.config.backbones[0]]
    result = run(args.cache, features, args.head, args.folds, args.seeds)
    emit(result, markdown(result), args.json_out, args.markdown)


if __name__ == "__main__":
    main()
