"""Speed and memory of ``fakeprobe extract`` on real videos: each stage alone, the naive
one-frame-at-a-time loop, and the threaded pipeline end to end.

Modes, each run in its own subprocess (``--mode``) so that its peak RSS is its own:

* ``decode``   ``read_media`` of the sampled frames (one sequential grab/retrieve pass); the floor;
* ``detect``   ``detect_rows`` on frames decoded beforehand (by ``decode``, kept in a temp folder);
* ``align``    ``align_rows`` on those frames and the rows ``detect`` found;
* ``embed``    one backbone on the aligned crops, in batches of 32 (one mode per backbone);
* ``baseline`` per frame: decode it, detect, align, embed that one crop; one thread, no batching;
* ``e2e``      ``Extractor(config, workers=W, batch_size=32).run(items, cache)`` into a temp cache,
  once on all videos and once on ``--memory-limit`` of them (peak RSS must not grow).

Model loading and the first (tracing) call are left out of every timing. Seconds are wall
seconds; ``cpu_s`` is the CPU time of the whole process over the same spans. The targets
(e2e >= 2x faster than ``baseline``; e2e <= 1.3x the slowest stage alone) are reported, not
asserted. Prints one JSON document on stdout and a markdown table on stderr.

    python benchmarks/extract.py                       # both sets, default config
    python benchmarks/extract.py --set ffpp --limit 10 --backbone efficientnet-lite0 \\
        --json-out benchmarks/results/x.json --markdown benchmarks/results/x.md

The data (research use only) is read in place from ``<repo>/../shared/data`` (``--data``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np

from fakeprobe.datasets import Discovery, MediaItem, discover
from fakeprobe.extractor.base import CropSpec
from fakeprobe.extractor.config import ExtractorConfig
from fakeprobe.extractor.frames import Frame, read_media, sample_indices

REPO = Path(__file__).resolve().parents[1]
SETS = ("ffpp", "dfdc")
FFPP_PATTERNS = tuple(f"{root}/{c}/videos/*.mp4" for c in ("c23", "c40")
                      for root in ("original_sequences/youtube", "manipulated_sequences/*"))
BATCH = 32
STAGES = ("decode", "detect", "align", "embed")
SPEEDUP_TARGET = 2.0  # e2e at least this many times faster than the baseline
FLOOR_TARGET = 1.3  # e2e per video at most this many times the slowest stage alone


# --- the items and the config ------------------------------------------------------------------

def select_items(data: Path, which: str, limit: int | None) -> list[MediaItem]:
    """The videos of one set, sorted by id: FF++ YouTube reals and fakes (c23, c40; not the
    actors) or the DFDC videos present on disk."""
    found = discover([data / which]).items
    if which == "ffpp":
        items = [i for i in found if any(i.path.match(p) for p in FFPP_PATTERNS)]
    else:
        items = [i for i in found if i.exists]
    return items[:limit] if limit else items


def make_config(args: argparse.Namespace) -> ExtractorConfig:
    options: dict = {"frames": args.frames}
    if args.detector:
        options["detector"] = args.detector
    if args.backbone:
        options["backbones"] = tuple(args.backbone)
    return ExtractorConfig(**options)


# --- one mode (the child process) ----------------------------------------------------------------

@contextlib.contextmanager
def timed(clock: dict[str, float]):
    """Adds the wall and process CPU seconds of the block to ``clock``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    clock["seconds"] += time.perf_counter() - wall
    clock["cpu_s"] += time.process_time() - cpu


def one_frame_at_a_time(item: MediaItem, config: ExtractorConfig):
    """The sampled frames of a video from one sequential grab/retrieve pass, as read_media does,
    but each frame is handed over before the next one is read."""
    capture = cv2.VideoCapture(str(item.path), cv2.CAP_ANY)
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        keep = set(sample_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), count=config.frames,
                                  fps=config.fps, video_fps=fps, max_frames=config.max_frames
                                  ).tolist())
        for index in range(max(keep, default=-1) + 1):
            if not capture.grab():
                return
            if index in keep:
                ok, image = capture.retrieve()
                if ok:
                    yield Frame(index, index / fps if fps > 0 else float("nan"), image)
    finally:
        capture.release()


def save_frames(path: Path, frames: list[Frame]) -> None:
    np.savez(path, images=np.stack([f.image for f in frames]),
             index=[f.index for f in frames], timestamp=[f.timestamp for f in frames])


def load_frames(path: Path) -> list[Frame]:
    with np.load(path) as saved:
        return [Frame(int(i), float(t), image) for i, t, image
                in zip(saved["index"], saved["timestamp"], saved["images"])]


def load_rows(path: Path):
    from fakeprobe.features.cache import FrameRows

    with np.load(path) as saved:
        fields = {f.name: saved[f.name] for f in dataclasses.fields(FrameRows)}
        return FrameRows(**fields), saved["origin"].tolist()


def warm_backbones(names, device: str = "auto") -> dict:
    """Backbones loaded and traced once (a first call traces the TensorFlow graph)."""
    from fakeprobe.extractor.components import BACKBONES

    backbones = {n: BACKBONES.create(n, device=device, batch_size=BATCH) for n in names}
    for backbone in backbones.values():
        backbone.embed(np.zeros((1, backbone.crop.size, backbone.crop.size, 3), np.uint8))
    return backbones


def run_mode(args: argparse.Namespace) -> dict:
    """Measure one mode on one set; the work folder carries frames and rows between modes."""
    from fakeprobe.extractor.pipeline import align_rows, detect_rows, make_detector

    config, work = make_config(args), Path(args.work) if args.work else None
    items = select_items(args.data, args.set, args.limit)
    mode, clock = args.mode, defaultdict(float)
    counts = {"videos": len(items), "frames": 0, "crops": 0}
    extra: dict = {}
    if mode in ("detect", "baseline"):
        detector = make_detector(config)
        detector.detect(np.zeros((240, 320, 3), np.uint8))  # creates its model
    if mode in ("embed", "baseline"):
        backbones = warm_backbones(config.backbones)
        specs = {b.crop for b in backbones.values()}
    if mode == "align":
        specs = {CropSpec(int(s), float(m)) for s, m in (c.split(":") for c in args.crop)}
    if mode == "embed":
        (name, backbone), = backbones.items()
        extra["crop"] = f"{backbone.crop.size}:{backbone.crop.margin}"
        pending = []
    for k, item in enumerate(items):
        frames_file, rows_file = (work / f"{k}.frames.npz", work / f"{k}.rows.npz") if work \
            else (None, None)
        if mode == "decode":
            with timed(clock):
                _, frames = read_media(item.path, item.kind, count=config.frames, fps=config.fps,
                                       max_frames=config.max_frames, max_pixels=config.max_pixels)
            counts["frames"] += len(frames)
            if work:
                save_frames(frames_file, frames)
        elif mode == "detect":
            frames = load_frames(frames_file)
            with timed(clock):
                rows, origin = detect_rows(frames, detector, config, defaultdict(float))
            counts["frames"] += len(frames)
            np.savez(rows_file, origin=origin, **dataclasses.asdict(rows))
        elif mode in ("align", "embed"):
            frames, (rows, origin) = load_frames(frames_file), load_rows(rows_file)
            counts["frames"] += len(frames)
            if mode == "align":
                with timed(clock):
                    align_rows(frames, rows, origin, specs)
                counts["crops"] += int(rows.has_face.sum())
            else:
                pending.append(align_rows(frames, rows, origin, specs)[backbone.crop])
        elif mode == "baseline":
            with timed(clock):
                for frame in one_frame_at_a_time(item, config):
                    rows, origin = detect_rows([frame], detector, config, defaultdict(float))
                    crops = align_rows([frame], rows, origin, specs)
                    for each in backbones.values():
                        for crop in crops[each.crop]:
                            each.embed(crop[None])
                    counts["frames"] += 1
                    counts["crops"] += len(crops[next(iter(specs))])
    if mode == "embed":
        crops = np.concatenate(pending)
        with timed(clock):
            for start in range(0, len(crops), BATCH):
                backbone.embed(crops[start:start + BATCH])
        counts["crops"] = len(crops)
    if mode == "e2e":
        extra = run_pipeline(config, items, args.workers, clock)
        counts["frames"], counts["crops"] = extra.pop("rows"), extra.pop("faces")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"mode": mode, **counts, "seconds": clock["seconds"], "cpu_s": clock["cpu_s"],
            "peak_rss_mib": round(peak, 1), **extra}


def run_pipeline(config: ExtractorConfig, items: list[MediaItem], workers: int,
                 clock: dict[str, float]) -> dict:
    """The threaded pipeline into a temporary cache, models loaded beforehand."""
    from fakeprobe.extractor.pipeline import Extractor

    extractor = Extractor(config, workers=workers, batch_size=BATCH)
    extractor.backbones.update(warm_backbones(config.backbones))
    with tempfile.TemporaryDirectory(prefix="fakeprobe-bench-") as folder:
        with timed(clock):
            summary = extractor.run(Discovery(items=list(items)), Path(folder) / "cache.h5")
    return {"rows": summary.rows, "faces": summary.faces, "workers": workers,
            "failed": summary.failed, "summary_seconds": round(summary.seconds, 2),
            "stage_seconds": {k: round(v, 2) for k, v in summary.stage_seconds.items()}}


# --- the parent: run every mode, compare, report ------------------------------------------------

def child(args: argparse.Namespace, which: str, mode: str, **options) -> dict:
    """Run one mode in a fresh interpreter and read back its JSON (the last line of stdout)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--set", which,
               "--data", str(args.data), "--frames", str(args.frames),
               "--workers", str(options.get("workers", args.workers))]
    limit = options.get("limit", args.limit)
    command += ["--limit", str(limit)] if limit else []
    command += ["--detector", args.detector] if args.detector else []
    for name in options.get("backbones", args.backbone or []):
        command += ["--backbone", name]
    command += ["--work", options["work"]] if "work" in options else []
    for crop in options.get("crops", []):
        command += ["--crop", crop]
    print(f"[{which}] {mode} {'(limit %d)' % limit if limit else ''}...", file=sys.stderr,
          flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"mode": mode, "error": f"exit code {done.returncode}"}
    result = json.loads(lines[-1])
    if result["seconds"] > 0:
        result["s_per_video"] = result["seconds"] / max(result["videos"], 1)
        result["frames_per_s"] = result["frames"] / result["seconds"]
    print(f"[{which}] {mode}: {result['seconds']:.1f} s, {result['peak_rss_mib']:.0f} MiB",
          file=sys.stderr, flush=True)
    return result


def measure_set(args: argparse.Namespace, which: str, config: ExtractorConfig) -> dict:
    n = len(select_items(args.data, which, args.limit))
    load = os.getloadavg()
    modes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fakeprobe-bench-") as work:
        modes["decode"] = child(args, which, "decode", work=work)
        modes["detect"] = child(args, which, "detect", work=work)
        embeds = {f"embed:{name}": child(args, which, "embed", work=work, backbones=[name])
                  for name in config.backbones}
        crops = sorted({r["crop"] for r in embeds.values() if "crop" in r})
        modes["align"] = child(args, which, "align", work=work, crops=crops)
        modes.update(embeds)
    modes["baseline"] = child(args, which, "baseline")
    modes["e2e"] = child(args, which, "e2e")
    if n > args.memory_limit:
        modes[f"e2e-{args.memory_limit}"] = child(args, which, "e2e", limit=args.memory_limit)
    return {"videos": n, "load_average_before": [round(x, 2) for x in load],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "modes": modes, "checks": checks(modes, config, f"e2e-{args.memory_limit}")}


def checks(modes: dict[str, dict], config: ExtractorConfig, small: str) -> dict:
    """The targets: e2e vs the baseline and vs the slowest stage alone (all backbones' embed
    summed: the pipeline runs them one after another); peak RSS of e2e, few videos vs all."""
    spv = {m: r.get("s_per_video") for m, r in modes.items()}
    if any(spv.get(m) is None for m in ("decode", "detect", "align", "baseline", "e2e")):
        return {"error": "a mode failed"}
    stages = {s: spv[s] for s in ("decode", "detect", "align")}
    stages["embed"] = sum(spv.get(f"embed:{n}") or 0.0 for n in config.backbones)
    slowest = max(stages, key=stages.get)
    out = {"slowest_stage": slowest, "slowest_stage_s_per_video": stages[slowest],
           "sum_of_stages_s_per_video": sum(stages.values()),
           "speedup_vs_baseline": spv["baseline"] / spv["e2e"],
           "e2e_over_slowest_stage": spv["e2e"] / stages[slowest]}
    out["speedup_pass"] = out["speedup_vs_baseline"] >= SPEEDUP_TARGET
    out["floor_pass"] = out["e2e_over_slowest_stage"] <= FLOOR_TARGET
    if small in modes and "peak_rss_mib" in modes[small]:
        out["e2e_rss_growth_mib"] = modes["e2e"]["peak_rss_mib"] - modes[small]["peak_rss_mib"]
    return out


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                   .splitlines() if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kib / 2**20, 1),
            "os": platform.platform(), "python": platform.python_version()}


def versions() -> dict:
    def version(*dists: str) -> str | None:
        for dist in dists:
            with contextlib.suppress(metadata.PackageNotFoundError):
                return metadata.version(dist)
        return None

    return {"numpy": np.__version__, "opencv": cv2.__version__,
            "tensorflow": version("tensorflow", "tensorflow-cpu", "tensorflow_cpu"),
            "keras": version("keras"), "h5py": version("h5py"), "fakeprobe": version("fakeprobe")}


def markdown(report: dict) -> str:
    lines = ["| set | mode | videos | s/video | frames/s | CPU s/video | peak RSS MiB "
             f"| e2e vs baseline (>= {SPEEDUP_TARGET:g}x) "
             f"| e2e / slowest stage (<= {FLOOR_TARGET:g}x) |", "|---" * 9 + "|"]
    for which, result in report["sets"].items():
        check = result["checks"]
        for mode, r in result["modes"].items():
            if "error" in r:
                lines.append(f"| {which} | {mode} | | {r['error']} | | | | | |")
                continue
            speed = floor = ""
            if mode == "e2e" and "speedup_vs_baseline" in check:
                speed = (f"{check['speedup_vs_baseline']:.2f}x "
                         f"{'pass' if check['speedup_pass'] else 'FAIL'}")
                floor = (f"{check['e2e_over_slowest_stage']:.2f}x of {check['slowest_stage']} "
                         f"{'pass' if check['floor_pass'] else 'FAIL'}")
            lines.append(f"| {which} | {mode} | {r['videos']} | {r['s_per_video']:.3f} "
                         f"| {r['frames_per_s']:.1f} | {r['cpu_s'] / r['videos']:.3f} "
                         f"| {r['peak_rss_mib']:.0f} | {speed} | {floor} |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (default: <repo>/../shared/data)")
    parser.add_argument("--set", choices=(*SETS, "both"), default="both")
    parser.add_argument("--limit", type=int, default=None, help="first N videos of each set")
    parser.add_argument("--frames", type=int, default=ExtractorConfig().frames)
    parser.add_argument("--detector", default=None, help="default: the config's (yunet)")
    parser.add_argument("--backbone", action="append", default=None,
                        help="repeatable; default: the config's (efficientnet-lite0)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads of e2e")
    parser.add_argument("--memory-limit", type=int, default=10,
                        help="e2e is run again on this many videos to compare peak RSS")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table here")
    parser.add_argument("--mode", choices=("decode", "detect", "align", "embed", "baseline",
                                           "e2e"), help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--crop", action="append", default=[], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    config = make_config(args)
    report = {"benchmark": "extract", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "machine": machine(), "versions": versions(), "config": config.to_dict(),
              "workers": args.workers, "batch_size": BATCH, "limit": args.limit, "sets": {}}
    for which in SETS if args.set == "both" else (args.set,):
        report["sets"][which] = measure_set(args, which, config)
    text = json.dumps(report, indent=2)
    print(text)
    table = markdown(report)
    print(table, file=sys.stderr)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
