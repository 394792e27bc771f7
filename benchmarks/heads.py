"""Fit and predict time and peak memory of each head, and the time of `compare`.

Synthetic frames (Gaussian features with a small shift for fakes, 32 frames per video, a real
and two fakes per group) at 1k, 10k and 100k frames of 128-d and 1280-d features. For each size
and head: one fit on every frame (as the final fit of ``fit-*``) and one predict, with wall time
and peak resident memory above the starting point. Then the target of the heads issue: a
``compare`` of the three heads (5-fold grouped CV with inner threshold CV, as the command runs it)
on 100k x 128-d frames.

    python benchmarks/heads.py                 # everything (about 10 minutes on 2 cores)
    python benchmarks/heads.py --sizes 1000 10000 --dims 128 --no-compare

Prints one JSON document on stdout and a markdown table on stderr (``--json-out`` and
``--markdown`` also write them to files). Timings on a shared machine are noisy: compare runs
made on the same machine only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.data import FrameData
from fakeprobe.classifiers.heads import fit_head, new_head
from fakeprobe.core.provenance import installed
from fakeprobe.core.resources import measure
from fakeprobe.training.cv import cross_validate, fake_proba, grouped_folds

FRAMES_PER_VIDEO = 32
TARGET_COMPARE_SECONDS = 60.0


def synthetic_frames(n_frames: int, dim: int, seed: int = 0) -> FrameData:
    """Frames of n_frames / 32 videos; groups of one real and two fakes; fakes shifted by 0.3
    along a random direction so the heads have something (not everything) to find."""
    rng = np.random.default_rng(seed)
    n_videos = max(6, n_frames // FRAMES_PER_VIDEO)
    video_label = np.array([0 if v % 3 == 0 else 1 for v in range(n_videos)])
    direction = rng.normal(size=dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    video = np.repeat(np.arange(n_videos), FRAMES_PER_VIDEO)[:n_frames]
    centers = rng.normal(0, 0.5, (n_videos, dim)).astype(np.float32)
    X = centers[video] + rng.normal(0, 1, (len(video), dim)).astype(np.float32)
    X += 0.3 * video_label[video][:, None] * direction
    ids = np.array([f"v{v}" for v in range(n_videos)], dtype=object)
    return FrameData(
        X=X, y=video_label[video], video=video,
        frame_index=np.tile(np.arange(FRAMES_PER_VIDEO), n_videos)[:n_frames],
        timestamp=np.zeros(len(video)), track=np.zeros(len(video), np.int32),
        videos={"id": ids, "label": np.where(video_label == 1, "fake", "real").astype(object),
                "group": np.array([f"g{v // 3}" for v in range(n_videos)], dtype=object),
                "dataset": np.full(n_videos, "synthetic", dtype=object),
                "method": np.full(n_videos, "synthetic", dtype=object)},
        features=("synthetic",), feature_configs={},
    )


def time_head(data: FrameData, head: str) -> dict:
    model = new_head(head)
    with measure() as fit_usage:
        fit_head(model, data.X, data.y, data.video, data.groups)
    with measure() as predict_usage:
        scores = fake_proba(model, data.X)
    return {"head": head, "frames": len(data.y), "dim": data.X.shape[1],
            "fit_seconds": fit_usage.seconds, "fit_peak_added_mb": fit_usage.added_mb,
            "predict_seconds": predict_usage.seconds,
            "predict_frames_per_second": len(data.y) / max(predict_usage.seconds, 1e-9),
            "predict_peak_added_mb": predict_usage.added_mb,
            "kernel": getattr(model.named_steps["clf"], "kernel_", ""),
            "train_auc_sanity": float(np.mean(scores[data.y == 1]) > np.mean(
                scores[data.y == 0]))}


def time_compare(n_frames: int, dim: int, heads: list[str], folds: int) -> dict:
    data = synthetic_frames(n_frames, dim)
    splits = grouped_folds(data, folds)
    per_head = {}
    start = time.perf_counter()
    for head in heads:
        t0 = time.perf_counter()
        report = cross_validate(data, head, folds=splits, aggregation=Aggregation())
        per_head[head] = {"seconds": time.perf_counter() - t0,
                          "video_auc": report.video["roc_auc"]}
    total = time.perf_counter() - start
    return {"frames": n_frames, "dim": dim, "folds": folds, "seconds": total,
            "per_head": per_head, "target_seconds": TARGET_COMPARE_SECONDS,
            "meets_target": total <= TARGET_COMPARE_SECONDS}


def machine() -> dict:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), "")
    import os

    import psutil

    versions = {dist: version for dist in ("fakeprobe", "numpy", "scikit-learn", "xgboost-cpu",
                                           "xgboost", "scipy") if (version := installed(dist))}
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(
        psutil.virtual_memory().total / 2**30, 1), "os": platform.platform(),
        "python": platform.python_version(), "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def markdown(result: dict) -> str:
    lines = ["| head | frames | dim | fit s | fit +MiB | predict s | predict frames/s | "
             "predict +MiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["heads"]:
        name = row["head"] + (f" ({row['kernel']})" if row["kernel"] else "")
        lines.append(f"| {name} | {row['frames']} | {row['dim']} | {row['fit_seconds']:.2f} | "
                     f"{row['fit_peak_added_mb']:.0f} | {row['predict_seconds']:.3f} | "
                     f"{row['predict_frames_per_second']:.0f} | "
                     f"{row['predict_peak_added_mb']:.0f} |")
    if result.get("compare"):
        c = result["compare"]
        per = ", ".join(f"{h} {v['seconds']:.1f} s" for h, v in c["per_head"].items())
        lines += ["", f"`compare` of {', '.join(c['per_head'])} on {c['frames']} x {c['dim']}-d "
                  f"frames, {c['folds']}-fold grouped CV: **{c['seconds']:.1f} s** ({per}); "
                  f"target {c['target_seconds']:.0f} s: "
                  f"{'met' if c['meets_target'] else 'NOT met'}."]
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, {m['os']}, "
              f"Python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in
                                                   m["versions"].items()) + f"; {m['date']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 1280])
    parser.add_argument("--heads", nargs="+", default=["logreg", "svm", "xgb"])
    parser.add_argument("--compare-frames", type=int, default=100_000)
    parser.add_argument("--compare-dim", type=int, default=128)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)

    result = {"machine": machine(), "heads": [], "compare": None}
    for dim in args.dims:
        for size in args.sizes:
            data = synthetic_frames(size, dim)
            for head in args.heads:
                row = time_head(data, head)
                result["heads"].append(row)
                print(f"{head:7s} {size:>7d} x {dim:<5d} fit {row['fit_seconds']:7.2f} s  "
                      f"predict {row['predict_seconds']:6.3f} s", file=sys.stderr, flush=True)
            del data
    if not args.no_compare:
        result["compare"] = time_compare(args.compare_frames, args.compare_dim, args.heads,
                                         args.folds)
    text = json.dumps(result, indent=2)
    print(text)
    table = markdown(result)
    print(table, file=sys.stderr)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
