"""Extraction and head speed before and after sparse decoding, cheaper detection and cheaper
SVM calibration, with the quality figures that must not move, from one run.

Extraction, on the FF++ c40 videos (YouTube reals and their fakes, no actors) and the DFDC
videos present, each measurement in its own process:

* ``yardstick``  a plain full decode of every frame: ``ffmpeg -threads 1 -f null -`` when
  ffmpeg is on PATH, else PyAV decoding every frame on one thread (no colour conversion), as
  ffmpeg would; the JSON says which;
* ``before``     ``fakeprobe extract`` as it was: OpenCV's sequential reader (every frame
  decoded; the fallback PyAV is bypassed), YuNet at 640 px, no tracking;
* ``after``      ``fakeprobe extract`` with the default settings;
* ``detect-sizes`` YuNet at 640, 480 and 320 px on the same sampled frames: the share of frames
  with a face and ms/frame.

For ``before`` and ``after``: s/video (wall, models loaded and warmed outside the timing), the
detection rate (sampled frames with a face), and the video ROC-AUC of a logistic head under
grouped cross-validation, as ``fakeprobe compare`` runs it (FF++ only: six DFDC videos are too
few to split); then how many sampled frames are the same frame in both caches and the median
cosine similarity of their features. Ratios come from the same run, so they hold on a busy
machine where the absolute times do not.

Face crops: ``extract --face-crops`` on ``dfdc_faces`` (``--faces`` images, both classes) with
the default feature set, in crops per second end to end.

Heads: ``compare`` of logreg, svm and xgb on 100,000 x 128-d synthetic frames (as
``benchmarks/heads.py`` makes them) with the SVM calibrated as before (``calibration="cv"``) and
as now (the default), and the SVM's log loss and expected calibration error (15 bins) on
held-out groups of the same frames.

    python benchmarks/speed.py --json-out benchmarks/results/speed.json \\
        --markdown benchmarks/results/speed.md
    python benchmarks/speed.py --limit 10 --faces 300 --compare-frames 20000   # a quick look

Prints one JSON document on stdout and a markdown table on stderr. The data (research use only)
is read in place from ``<repo>/../shared/data`` (``--data``), never copied.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _output import emit  # noqa: E402

FFPP_C40 = ("original_sequences/youtube/c40/videos/*.mp4",
            "manipulated_sequences/*/c40/videos/*.mp4")
TARGETS = {"ffpp": 0.4, "dfdc": 1.0}  # s/video of extract with default settings
FACES_TARGET = 100.0  # crops/s
COMPARE_TARGET = 60.0  # s
ECE_BINS = 15
DETECT_SIZES = (640, 480, 320)


def select_items(data: Path, which: str, limit: int | None):
    from fakeprobe.datasets import discover

    if which == "ffpp":
        items = [i for i in discover([data / "ffpp"]).items
                 if any(i.path.match(p) for p in FFPP_C40)]
    elif which == "dfdc":
        items = [i for i in discover([data / "dfdc"]).items if i.exists]
    else:  # dfdc_faces: both classes, evenly spread over the sorted ids
        items = discover([data / "dfdc_faces"]).items
        if limit and len(items) > limit:
            pick = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
            return [items[k] for k in pick]
        return items
    return items[:limit] if limit else items


# --- the child: one measurement in its own process --------------------------------------------

def yardstick(items) -> dict:
    ffmpeg = shutil.which("ffmpeg")
    start = time.perf_counter()
    frames = 0
    for item in items:
        if ffmpeg:
            subprocess.run([ffmpeg, "-v", "error", "-threads", "1", "-i", str(item.path),
                            "-f", "null", "-"], check=True)
        else:
            import av

            with av.open(str(item.path)) as container:
                stream = container.streams.video[0]
                stream.thread_count = 1
                frames += sum(1 for _ in container.decode(stream))
    return {"seconds": time.perf_counter() - start, "tool": (
        "ffmpeg -threads 1 -f null -" if ffmpeg else "PyAV full decode, one thread"),
        "frames": frames}


def detect_sizes(items, sizes=DETECT_SIZES) -> dict:
    """YuNet at each size on the same sampled frames (decoded once): the share of frames with
    a face and the milliseconds per frame (shrinking included)."""
    from fakeprobe.extractor.components import DETECTORS
    from fakeprobe.extractor.frames import read_media

    frames = [f.image for item in items for f in read_media(item.path, item.kind)[1]]
    out = {}
    for size in sizes:
        detector = DETECTORS.create("yunet", detect_size=size)
        detector.detect(frames[0])  # creates the model: outside the timing
        start = time.perf_counter()
        found = [len(detector.detect(frame)) > 0 for frame in frames]
        out[str(size)] = {"frames": len(frames), "detection_rate": float(np.mean(found)),
                          "ms_per_frame": 1000 * (time.perf_counter() - start) / len(frames)}
    return {"sizes": out}


def extract_run(items, mode: str, cache: Path, workers: int) -> dict:
    from fakeprobe.core.config import ExtractorConfig
    from fakeprobe.datasets import Discovery
    from fakeprobe.extractor.backbones.load import load_backbone
    from fakeprobe.pipeline.run import Extractor

    if mode == "before":
        from fakeprobe.extractor import video_av

        video_av.read_video_av = lambda *args, **kwargs: None  # OpenCV reads every frame
        config = ExtractorConfig(detect_size=640, **_no_tracking())
    elif mode == "faces":
        config = ExtractorConfig(face_crops=True)
    else:
        config = ExtractorConfig()
    extractor = Extractor(config, workers=workers, batch_size=32)
    backbones = {n: load_backbone(n, batch_size=32) for n in config.backbones}
    for backbone in backbones.values():  # first calls (tracing) outside the timing
        for n in (1, 32):
            backbone.embed(np.zeros((n, backbone.crop.size, backbone.crop.size, 3), np.uint8))
    extractor.backbones.update(backbones)
    start, cpu = time.perf_counter(), time.process_time()
    summary = extractor.run(Discovery(items=list(items)), cache)
    return {"seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
            "rows": summary.rows, "faces": summary.faces, "failed": summary.failed,
            "stage_seconds": {k: round(v, 2) for k, v in summary.stage_seconds.items()},
            "config": config.to_dict()}


def _no_tracking() -> dict:
    """The config field that turns face tracking off, where this version has one."""
    from dataclasses import fields

    from fakeprobe.core.config import ExtractorConfig

    return {"track_faces": False} if any(f.name == "track_faces"
                                         for f in fields(ExtractorConfig)) else {}


def heads_run(n_frames: int, calibration: str) -> dict:
    from heads import synthetic_frames
    from sklearn.metrics import log_loss

    from fakeprobe.classifiers import heads
    from fakeprobe.classifiers.aggregate import Aggregation
    from fakeprobe.training.cv import cross_validate, grouped_folds

    defaults = list(heads.AutoSVC.__init__.__defaults__)  # the calibration of every new SVM
    names = heads.AutoSVC.__init__.__code__.co_varnames[1:len(defaults) + 1]
    defaults[names.index("calibration")] = calibration
    heads.AutoSVC.__init__.__defaults__ = tuple(defaults)

    data = synthetic_frames(n_frames, 128)
    test = np.isin(data.video, np.unique(data.video)[::5])  # every fifth video held out
    svm = heads.new_head("svm")
    start = time.perf_counter()
    heads.fit_head(svm, data.X[~test], data.y[~test], data.video[~test], data.groups[~test])
    fit_s = time.perf_counter() - start
    p = svm.predict_proba(data.X[test])[:, 1]
    y = data.y[test]
    out = {"svm_fit_seconds": fit_s, "svm_log_loss": float(log_loss(y, p)),
           "svm_ece": expected_calibration_error(y, p), "calibration": calibration}
    splits = grouped_folds(data, 5)
    per_head = {}
    start = time.perf_counter()
    for head in ("logreg", "svm", "xgb"):
        t0 = time.perf_counter()
        report = cross_validate(data, head, folds=splits, aggregation=Aggregation())
        per_head[head] = {"seconds": time.perf_counter() - t0,
                          "video_auc": report.video["roc_auc"],
                          "frame_log_loss": report.frame.get("log_loss")}
    out.update(compare_seconds=time.perf_counter() - start, per_head=per_head)
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Frame-weighted mean |observed rate - mean probability| over equal-width bins."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(total)


def run_child(args: argparse.Namespace) -> dict:
    if args.mode.startswith("heads-"):
        return heads_run(args.compare_frames, args.mode.split("-", 1)[1])
    items = select_items(args.data, args.set, args.faces if args.set == "dfdc_faces"
                         else args.limit)
    if args.mode == "yardstick":
        result = yardstick(items)
    elif args.mode == "detect-sizes":
        result = detect_sizes(items)
    else:
        result = extract_run(items, args.mode, Path(args.cache), args.workers)
    return {"videos": len(items), **result}


# --- the parent ---------------------------------------------------------------------------------

def child(args: argparse.Namespace, mode: str, which: str = "", cache: Path | None = None
          ) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--data",
               str(args.data), "--workers", str(args.workers), "--compare-frames",
               str(args.compare_frames), "--faces", str(args.faces),
               *(["--set", which] if which else []),
               *(["--limit", str(args.limit)] if args.limit else []),
               *(["--cache", str(cache)] if cache else [])]
    print(f"[{which or 'heads'}] {mode}...", file=sys.stderr, flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"exit code {done.returncode}"}
    result = json.loads(lines[-1])
    print(f"[{which or 'heads'}] {mode}: {json.dumps(result)[:200]}", file=sys.stderr,
          flush=True)
    return result


def cache_quality(cache: Path, backbone: str, with_auc: bool) -> dict:
    """Detection rate; video ROC-AUC of logreg under grouped 5-fold CV (``compare``'s)."""
    from fakeprobe.classifiers.data import load_frames
    from fakeprobe.features.cache import CacheReader
    from fakeprobe.training.cv import cross_validate

    with CacheReader(cache) as reader:
        has_face = np.asarray(reader.frames()["has_face"])
    out = {"sampled_frames": int(len(has_face)), "detection_rate": float(has_face.mean())}
    if with_auc:
        from fakeprobe.errors import FakeprobeError

        data = load_frames(cache, [backbone])
        try:
            out["video_auc_logreg"] = cross_validate(data, "logreg", n_splits=5).video[
                "roc_auc"]
        except FakeprobeError as error:  # e.g. a --limit that keeps one class
            out["video_auc_logreg"] = None
            out["auc_error"] = str(error)
    return out


def same_frames(before: Path, after: Path, backbone: str) -> dict:
    """Rows of both caches at the same (video, frame): the share of sampled frames kept
    exactly, within one frame, and the median cosine similarity of their features."""
    from fakeprobe.classifiers.data import load_frames

    a, b = load_frames(before, [backbone]), load_frames(after, [backbone])
    key_a = {(a.videos["id"][v], int(f)): k for k, (v, f) in
             enumerate(zip(a.video, a.frame_index))}
    frames_b = {(b.videos["id"][v], int(f)) for v, f in zip(b.video, b.frame_index)}
    exact = sum(1 for key in key_a if key in frames_b)
    near = sum(1 for (v, f) in key_a if any((v, f + d) in frames_b for d in (-1, 0, 1)))
    cosines = []
    for k, (v, f) in enumerate(zip(b.video, b.frame_index)):
        j = key_a.get((b.videos["id"][v], int(f)))
        if j is not None:
            x, y = a.X[j], b.X[k]
            cosines.append(float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)))
    return {"frames_before": len(key_a), "same_frame": exact / max(len(key_a), 1),
            "within_one_frame": near / max(len(key_a), 1),
            "median_feature_cosine": float(np.median(cosines)) if cosines else None}


def machine() -> dict:
    from fakeprobe.core.provenance import installed

    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), "")
    versions = {d: v for d in ("fakeprobe", "numpy", "opencv-python-headless", "av",
                               "onnxruntime", "tensorflow-cpu", "scikit-learn", "xgboost-cpu",
                               "h5py") if (v := installed(d))}
    return {"cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "versions": versions,
            "load_average_at_start": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def markdown(result: dict) -> str:
    lines = ["| set | videos | yardstick s/video | before s/video | after s/video | target | "
             "before / after | after / yardstick | detection before | after | AUC before | "
             "after | same frame | median cosine |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(value, form="{:.3f}"):
        return "" if value is None else form.format(value)

    for which, row in result["extract"].items():
        lines.append(
            f"| {which} | {row.get('videos', '')} | {f(row.get('yardstick_s_per_video'))} | "
            f"{f(row.get('before_s_per_video'))} | {f(row.get('after_s_per_video'))} | "
            f"<= {TARGETS[which]} | {f(row.get('speedup'), '{:.2f}x')} | "
            f"{f(row.get('after_over_yardstick'), '{:.2f}x')} | "
            f"{f(row.get('before', {}).get('detection_rate'), '{:.4f}')} | "
            f"{f(row.get('after', {}).get('detection_rate'), '{:.4f}')} | "
            f"{f(row.get('before', {}).get('video_auc_logreg'))} | "
            f"{f(row.get('after', {}).get('video_auc_logreg'))} | "
            f"{f(row.get('frames', {}).get('same_frame'), '{:.3f}')} | "
            f"{f(row.get('frames', {}).get('median_feature_cosine'), '{:.4f}')} |")
    sizes = [(which, size, r) for which, row in result["extract"].items()
             for size, r in row.get("detect_sizes", {}).items() if isinstance(r, dict)]
    if sizes:
        lines += ["", "| set | detect size | frames | detection rate | ms/frame |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {which} | {size} | {r['frames']} | {r['detection_rate']:.4f} | "
                  f"{r['ms_per_frame']:.1f} |" for which, size, r in sizes]
    faces = result.get("faces")
    if faces and "crops_per_s" in faces:
        lines += ["", f"dfdc_faces end to end (`--face-crops`, default feature set): "
                  f"{faces['images']} images, **{faces['crops_per_s']:.0f} crops/s** "
                  f"(target >= {FACES_TARGET:.0f})."]
    heads = result.get("heads")
    if heads and all("error" not in h for h in heads.values()):
        b, a = heads["before"], heads["after"]
        lines += ["", "| SVM calibration | compare s (logreg, svm, xgb) | svm s | SVM fit s | "
                  "log loss | ECE |", "|---|---:|---:|---:|---:|---:|"]
        for name, h in (("before (cv)", b), ("after (default)", a)):
            lines.append(f"| {name} | {h['compare_seconds']:.1f} | "
                         f"{h['per_head']['svm']['seconds']:.1f} | {h['svm_fit_seconds']:.1f} | "
                         f"{h['svm_log_loss']:.4f} | {h['svm_ece']:.4f} |")
        lines.append(f"\ncompare after / before: {a['compare_seconds'] / b['compare_seconds']:.2f}"
                     f" (target {COMPARE_TARGET:.0f} s on an idle 2-core machine).")
    m = result["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, "
              + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
              + f"; load average at start {m['load_average_at_start'][0]:.1f}; {m['date']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, help="first N videos of each set")
    parser.add_argument("--faces", type=int, default=2000, help="dfdc_faces images")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compare-frames", type=int, default=100_000)
    parser.add_argument("--skip", nargs="*", default=[], choices=["extract", "faces", "heads"])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--set", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_child(args), default=str))
        return 0

    from fakeprobe.core.config import DEFAULT_BACKBONE

    result: dict = {"machine": machine(), "extract": {}, "faces": None, "heads": None}
    with tempfile.TemporaryDirectory(prefix="fakeprobe-speed-") as work:
        folder = Path(work)
        if "extract" not in args.skip:
            for which in ("ffpp", "dfdc"):
                row: dict = {}
                stick = child(args, "yardstick", which)
                runs = {mode: child(args, mode, which, folder / f"{which}-{mode}.h5")
                        for mode in ("before", "after")}
                row["videos"] = stick.get("videos")
                row["yardstick_tool"] = stick.get("tool")
                for mode, run in (("yardstick", stick), *runs.items()):
                    if "error" not in run:
                        row[f"{mode}_s_per_video"] = run["seconds"] / max(run["videos"], 1)
                for mode, run in runs.items():
                    if "error" not in run:
                        row[mode] = {**run, **cache_quality(folder / f"{which}-{mode}.h5",
                                                            DEFAULT_BACKBONE, which == "ffpp")}
                if "before" in row and "after" in row:
                    row["speedup"] = row["before_s_per_video"] / row["after_s_per_video"]
                    row["frames"] = same_frames(folder / f"{which}-before.h5",
                                                folder / f"{which}-after.h5", DEFAULT_BACKBONE)
                if "yardstick_s_per_video" in row and "after_s_per_video" in row:
                    row["after_over_yardstick"] = (row["after_s_per_video"]
                                                   / row["yardstick_s_per_video"])
                row["target_s_per_video"] = TARGETS[which]
                sizes = child(args, "detect-sizes", which)
                row["detect_sizes"] = sizes.get("sizes", sizes)
                result["extract"][which] = row
        if "faces" not in args.skip:
            run = child(args, "faces", "dfdc_faces", folder / "faces.h5")
            if "error" not in run:
                run["images"] = run.pop("videos")
                run["crops_per_s"] = run["faces"] / run["seconds"]
                run["target_crops_per_s"] = FACES_TARGET
            result["faces"] = run
    if "heads" not in args.skip:
        result["heads"] = {"before": child(args, "heads-cv"), "after": child(args, "heads-auto")}
    emit(result, markdown(result), args.json_out, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
