"""The ranking: every feature set x head by grouped video AUC and log loss, on every test.

One command makes the caches it needs (skipped when they exist) and ranks:

    .venv/bin/python benchmarks/ranking.py --data ../shared/data --workdir runs/ranking

1. ``videos.h5``: ``fakeprobe extract DATA/ffpp DATA/dfdc --self-blend --keep-crops 224`` with
   every backbone of ``--backbones``; then ``fakeprobe derive`` adds ``landmarks`` and
   ``mobilenet-v2-temporal`` (video-level stability). ``images.h5``: the same for
   ``DATA/images`` (StyleGAN2 vs FFHQ).
2. For each feature set x head, trained without and with self-blended pseudo-fakes (``true``:
   reals + true fakes; ``+sbi``: reals + true fakes + pseudo-fakes; pseudo-fakes are never
   scored):

   * ``FF++``: grouped 5-fold CV over the FF++ videos (c23 and c40; the unpaired 24 fps actor
     originals and their blends left out, see the data README);
   * ``DFDC``: trained on all those FF++ videos, tested on the DFDC videos;
   * ``images``: grouped 5-fold CV over StyleGAN2 vs FFHQ (each image its own group);
   * ``LOMO``: for the ``--lomo-top`` best by FF++ AUC, leave one manipulation method out: train
     on the reals and the fakes of the three other methods, score the reals and the held-out
     method's fakes of each test fold (same folds), the four AUCs and their minimum.

3. Extraction cost per feature set: seconds per video (32 frames) of its embedding stage in
   the extraction run (``embed:<name>`` of the run summary; decoding and detection, shared by
   every set, are in the JSON's ``extraction``); fit cost: seconds of one FF++ CV (5 folds,
   each with its inner threshold CV).

Prints one JSON document on stdout and the markdown ranking on stderr; ``--json-out`` and
``--markdown`` write them to files. With 9 FF++ groups a label shuffle reaches a video AUC of
0.63 at its 95th percentile; DFDC has 6 videos (1 real), so its AUC moves in steps of 0.2.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fakeprobe.app import Protocol
from fakeprobe.classifiers.data import FrameData, Selection, load_frames
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.training.cv import EvalReport, cross_validate, grouped_folds, train_test
from _output import emit
from fakeprobe.classifiers.metrics import binary_metrics, fmt
from fakeprobe.core.provenance import environment
from fakeprobe.features.cache import CacheReader

BACKBONES = ("mobilenet-v2", "efficientnet-lite0", "cnn-stats", "srm", "face-context",
             "spectrum", "sface")
DERIVED = ("landmarks", "mobilenet-v2-temporal")
FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
CONDITIONS = {"true": "real", "+sbi": "all"}
#: Items read from these paths are left out (unpaired 24 fps originals: see the data README).
LEFT_OUT = "original_sequences/actors/"


def _fakeprobe(*args: str) -> dict:
    """Run the CLI (as a user would) and return its --json output."""
    command = [str(Path(sys.executable).with_name("fakeprobe")), *args, "--json"]
    print("$ " + " ".join(command), file=sys.stderr)
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout)


def make_caches(data: Path, workdir: Path, backbones: tuple[str, ...]) -> dict:
    """The two caches (made or extended) and what their extraction cost."""
    workdir.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, inputs in (("videos", [data / "ffpp", data / "dfdc"]),
                         ("images", [data / "images"])):
        cache = workdir / f"{name}.h5"
        flags = [x for b in backbones for x in ("-b", b)]
        summary = _fakeprobe("extract", *map(str, inputs), "--out", str(cache),
                             "--self-blend", "--keep-crops", "224", *flags)
        # the costs are those of the runs that did the work: kept beside the cache
        record = workdir / f"extract-{name}.json"
        done = json.loads(record.read_text(encoding="utf-8")) if record.exists() else []
        if summary["extracted"] or summary["features_added"]:
            done.append(summary)
            record.write_text(json.dumps(done, indent=2), encoding="utf-8")
        runs[name] = done
    runs["derive"] = _fakeprobe("derive", str(workdir / "videos.h5"), "--landmarks",
                                "--temporal", "mobilenet-v2")
    return runs


def _ffpp(data: FrameData) -> FrameData:
    paths = data.videos["path"]
    keep = np.array([d.startswith("FaceForensics++") and LEFT_OUT not in str(p)
                     for d, p in zip(data.videos["dataset"], paths)])
    return data.subset_videos(np.flatnonzero(keep))


def _method_auc(report: EvalReport, method: str) -> float | None:
    """Video AUC of the reals and one method's fakes among the scored items."""
    rows = [v for v in report.video_scores if v["label"] == "real" or v["method"] == method]
    labels = np.array([v["label"] == "fake" for v in rows], dtype=int)
    scores = np.array([v["score"] for v in rows])
    return binary_metrics(labels, scores)["roc_auc"] if len(rows) else None


def _cell(report: EvalReport) -> dict:
    return {"auc": report.video["roc_auc"], "log_loss": report.video["log_loss"],
            "n": report.video["n"], "frame_auc": report.frame["roc_auc"]}


def evaluate(workdir: Path, features: list[str], heads: list[str], seed: int,
             lomo_top: int) -> list[dict]:
    videos, images = workdir / "videos.h5", workdir / "images.h5"
    rows = []
    for feature in features:
        all_videos = load_frames(videos, [feature])
        ff = _ffpp(all_videos)
        dfdc = all_videos.subset_videos(np.flatnonzero(all_videos.videos["dataset"] == "DFDC"))
        folds = grouped_folds(ff, 5, seed)
        pics = None
        if feature not in DERIVED:
            with CacheReader(images) as reader:
                if feature in reader.feature_sets:
                    pics = load_frames(images, [feature], Selection())
        for head in heads:
            for condition, train_fakes in CONDITIONS.items():
                protocol = Protocol(train_fakes=train_fakes, random_state=seed)
                t0 = time.perf_counter()
                cv = cross_validate(ff, head, folds=folds, random_state=seed,
                                    roles=protocol.roles(ff))
                fit_seconds = time.perf_counter() - t0
                row = {"features": feature, "head": head, "train": condition,
                       "ffpp": _cell(cv), "ffpp_cv_seconds": fit_seconds,
                       "ffpp_methods": {m: _method_auc(cv, m) for m in FF_METHODS}}
                cross = train_test(ff, dfdc, head, random_state=seed,
                                   roles=protocol.roles(ff, dfdc))
                row["dfdc"] = _cell(cross)
                if pics is not None:
                    image_folds = grouped_folds(pics, 5, seed)
                    row["images"] = _cell(cross_validate(pics, head, folds=image_folds,
                                                         random_state=seed,
                                                         roles=protocol.roles(pics)))
                rows.append(row)
                print(f"{feature} {head} {condition}: FF++ {fmt(row['ffpp']['auc'])} DFDC "
                      f"{fmt(row['dfdc']['auc'])} images "
                      f"{fmt(row.get('images', {}).get('auc'))} ({fit_seconds:.0f} s)",
                      file=sys.stderr)
    best = sorted((r for r in rows if r["train"] == "true"),
                  key=lambda r: -(r["ffpp"]["auc"] or 0))[:lomo_top]
    for row in best:
        for condition, train_fakes in CONDITIONS.items():
            target = next(r for r in rows if r["features"] == row["features"]
                          and r["head"] == row["head"] and r["train"] == condition)
            target["lomo"] = _leave_one_method_out(videos, row["features"], row["head"],
                                                   train_fakes, seed)
            print(f"LOMO {row['features']} {row['head']} {condition}: "
                  f"{ {m: fmt(v) for m, v in target['lomo'].items()} }", file=sys.stderr)
    return rows


def _leave_one_method_out(videos: Path, feature: str, head: str, train_fakes: str,
                          seed: int) -> dict:
    ff = _ffpp(load_frames(videos, [feature]))
    folds = grouped_folds(ff, 5, seed)
    out = {}
    for method in FF_METHODS:
        others = tuple(m for m in FF_METHODS if m != method) + (SELF_BLEND_METHOD,)
        protocol = Protocol(train_fakes=train_fakes, random_state=seed,
                            train_selection=Selection(methods=others, real_any_method=True))
        report = cross_validate(ff, head, folds=folds, random_state=seed,
                                roles=protocol.roles(ff))
        out[method] = _method_auc(report, method)
    values = [v for v in out.values() if v is not None]
    out["min"] = min(values) if values else None
    return out


def per_feature(result: dict) -> list[dict]:
    """One line per feature set: its FF++ AUC averaged over every head and training condition
    (a default must serve whichever head an analyst fits), and the same mean for the other
    tests. Sorted by that FF++ mean: the first is the default feature set."""
    out = []
    for feature in dict.fromkeys(r["features"] for r in result["results"]):
        rows = [r for r in result["results"] if r["features"] == feature]

        def mean(key: str, rows=rows) -> float | None:
            values = [r[key]["auc"] for r in rows if key in r and r[key]["auc"] is not None]
            return float(np.mean(values)) if values else None

        lomo = [r["lomo"]["min"] for r in rows if r.get("lomo", {}).get("min") is not None]
        out.append({"features": feature, "ffpp_mean": mean("ffpp"),
                    "ffpp_best": max(r["ffpp"]["auc"] or 0 for r in rows),
                    "lomo_min": min(lomo) if lomo else None, "dfdc_mean": mean("dfdc"),
                    "images_mean": mean("images"),
                    "embed_s_per_video": result.get("embed_seconds_per_video", {}).get(feature)})
    return sorted(out, key=lambda r: -(r["ffpp_mean"] or 0))


def markdown(result: dict) -> str:
    summary = per_feature(result)
    lines = [
        "Per feature set: video ROC-AUC on FF++ (grouped 5-fold CV) averaged over the heads and "
        "both training conditions, its best single row, the worst held-out method (LOMO, where "
        "run), and the means on DFDC and on the images. The first line is the default.",
        "",
        "| features | FF++ mean | FF++ best | LOMO min | DFDC mean | images mean | "
        "embed s/video |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(f"| {r['features']} | {fmt(r['ffpp_mean'])} | {fmt(r['ffpp_best'])} | "
                     f"{fmt(r['lomo_min'])} | {fmt(r['dfdc_mean'])} | {fmt(r['images_mean'])} "
                     f"| {fmt(r['embed_s_per_video'], 2)} |")
    lines += [""]
    rows = sorted(result["results"], key=lambda r: (-(r["ffpp"]["auc"] or 0)))
    lines += [
        "Video ROC-AUC (log loss) by grouped 5-fold CV; DFDC: trained on FF++; LOMO: worst "
        "held-out method. Sorted by FF++ AUC.",
        "",
        "| features | head | train | FF++ AUC | FF++ log loss | LOMO min | DFDC AUC | images AUC "
        "| embed s/video | FF++ CV s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    embed = result.get("embed_seconds_per_video", {})
    for r in rows:
        lines.append(
            f"| {r['features']} | {r['head']} | {r['train']} | {fmt(r['ffpp']['auc'])} | "
            f"{fmt(r['ffpp']['log_loss'])} | {fmt(r.get('lomo', {}).get('min'))} | "
            f"{fmt(r['dfdc']['auc'])} | {fmt(r.get('images', {}).get('auc'))} | "
            f"{fmt(embed.get(r['features']), 3)} | {r['ffpp_cv_seconds']:.0f} |")
    env = result["environment"]
    lines += ["", f"{env['cpu']}, {env['cores']} cores; fakeprobe "
              f"{env['versions'].get('fakeprobe')}; seed {result['seed']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--workdir", type=Path, default=Path("runs/ranking"))
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--features", nargs="+", default=None,
                        help="feature sets to rank (default: backbones + derived sets)")
    parser.add_argument("--heads", nargs="+", default=["logreg", "xgb"])
    parser.add_argument("--lomo-top", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--from-json", type=Path,
                        help="only print the tables of an earlier run's JSON")
    args = parser.parse_args()
    if args.from_json:
        table = markdown(json.loads(args.from_json.read_text(encoding="utf-8")))
        print(table)
        if args.markdown:
            args.markdown.write_text(table + "\n", encoding="utf-8")
        return
    runs = make_caches(args.data, args.workdir, tuple(args.backbones))
    features = args.features or list(args.backbones) + list(DERIVED)
    embed: dict[str, dict[str, float]] = {}
    for name in ("videos", "images"):
        for run in runs[name]:  # later runs win
            items = max(1, run["extracted"] + run["features_added"])
            for stage, seconds in run["stage_seconds"].items():
                if stage.startswith("embed:"):
                    embed.setdefault(stage[6:], {})[name] = seconds / items
    result = {
        "benchmark": "ranking", "data": str(args.data), "seed": args.seed,
        "extraction": {k: [{key: run.get(key) for key in ("extracted", "features_added",
                                                           "seconds", "stage_seconds")}
                            for run in v] for k, v in runs.items() if k != "derive"},
        # 32 frames per video; images are one frame each
        "embed_seconds_per_video": {k: v.get("videos") for k, v in embed.items()},
        "embed_seconds_per_image": {k: v.get("images") for k, v in embed.items()},
        "environment": environment(),
        "results": evaluate(args.workdir, features, args.heads, args.seed, args.lomo_top),
    }
    emit(result, markdown(result), args.json_out, args.markdown)


if __name__ == "__main__":
    main()
