"""Speed and memory of ``fakeprobe extract`` on real videos: each stage alone, the naive
one-frame-at-a-time loop, and the threaded pipeline end to end.

Modes, each run in its own subprocess (``--mode``, JSON on stdout) so that its peak RSS is its own:

* ``decode``   ``read_media`` of the sampled frames (one sequential grab/retrieve pass);
* ``detect``   ``detect_rows`` on frames decoded beforehand (kept by ``decode`` in a temp folder);
* ``align``    ``align_rows`` of those frames with the rows ``detect`` found;
* ``embed``    one backbone on crops aligned beforehand, in batches of 32 (a mode per backbone);
* ``baseline`` per frame: decode it, detect, align, embed that one crop; one thread, no batching;
* ``e2e``      ``Extractor(config, workers=W, batch_size=32).run(items, cache)`` into a temp cache,
  on all videos and again on ``--memory-limit`` of them (peak RSS should not grow).

Loading models and their first (tracing) call are outside every timing. ``s/video`` is wall
time; ``CPU s/video`` is the CPU time of the whole process (all threads) over the same spans.
The targets (e2e >= 2x faster than ``baseline``; e2e <= 1.3x the slowest stage alone, all
backbones' embedding counted as one stage) are reported, not asserted.

    python benchmarks/extract.py --set ffpp --limit 10 --json-out x.json --markdown x.md

Prints one JSON document on stdout and a markdown table on stderr. The data (research use only)
is read in place from ``<repo>/../shared/data`` (``--data``), never copied.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

import fakeprobe
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.core.geometry import CropSpec
from fakeprobe.core.provenance import installed
from fakeprobe.datasets import Discovery, MediaItem, discover
from fakeprobe.extractor.frames import Frame, read_media, sample_indices

REPO = Path(__file__).resolve().parents[1]
SETS = ("ffpp", "dfdc")
FFPP_PATTERNS = tuple(f"{root}/{c}/videos/*.mp4" for c in ("c23", "c40")
                      for root in ("original_sequences/youtube", "manipulated_sequences/*"))
BATCH = 32
SPEEDUP_TARGET = 2.0  # e2e at least this many times faster than the baseline
FLOOR_TARGET = 1.3  # e2e per video at most this many times the slowest stage alone


def select_items(data: Path, which: str, limit: int | None) -> list[MediaItem]:
    """The videos of one set, sorted by id: FF++ YouTube reals and their fakes (c23, c40; not
    the actors) or the DFDC videos present on disk."""
    found = discover([data / which]).items
    if which == "ffpp":
        items = [i for i in found if any(i.path.match(p) for p in FFPP_PATTERNS)]
    else:
        items = [i for i in found if i.exists]
    return items[:limit] if limit else items


def make_config(args: argparse.Namespace) -> ExtractorConfig:
    """The config of the run; a mode gets the parent's in full (``--config``), so that every mode
    measures the same settings even if the package's defaults change meanwhile."""
    if args.config:
        return ExtractorConfig.from_dict(json.loads(args.config))
    options = {"frames": args.frames, "detector": args.detector,
               "backbones": tuple(args.backbone or ())}
    return ExtractorConfig(**{k: v for k, v in options.items() if v})


def source_digest() -> str:
    """SHA-256 of fakeprobe's source files: a mode run on other code is flagged."""
    digest = hashlib.sha256()
    for path in sorted(Path(fakeprobe.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# --- one mode (the child process) ----------------------------------------------------------------

@contextlib.contextmanager
def timed(clock: dict[str, float]):
    """Adds the wall and process CPU seconds of the block to ``clock``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    clock["seconds"] += time.perf_counter() - wall
    clock["cpu_s"] += time.process_time() - cpu


def one_frame_at_a_time(item: MediaItem, config: ExtractorConfig):
    """The sampled frames of a video from one sequential grab/retrieve pass, as ``read_media``
    decodes them, each handed over before the next one is read."""
    capture = cv2.VideoCapture(str(item.path), cv2.CAP_ANY)
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    try:
        fps, n_frames = capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        keep = set(sample_indices(n_frames, count=config.frames, fps=config.fps, video_fps=fps,
                                  max_frames=config.max_frames).tolist())
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
    """One file per video; images stored one by one (stacking them would copy every frame)."""
    np.savez(path, index=[f.index for f in frames], timestamp=[f.timestamp for f in frames],
             **{f"image{k}": f.image for k, f in enumerate(frames)})


def load_frames(work: Path, k: int) -> list[Frame]:
    with np.load(work / f"{k}.frames.npz") as saved:
        return [Frame(int(i), float(t), saved[f"image{n}"])
                for n, (i, t) in enumerate(zip(saved["index"], saved["timestamp"]))]


def load_rows(work: Path, k: int):
    from fakeprobe.features.cache import FrameRows

    with np.load(work / f"{k}.rows.npz") as saved:
        fields = {f.name: saved[f.name] for f in dataclasses.fields(FrameRows)}
        return FrameRows(**fields), saved["origin"].tolist()


def warm_backbones(names, sizes=(1, BATCH)) -> dict:
    """Backbones loaded and run once per batch size: the first call traces the graph, the first
    call of a size sets up its kernels (one second more for mobilenet-v2 at 32)."""
    from fakeprobe.extractor.backbones.load import load_backbone

    backbones = {n: load_backbone(n, batch_size=BATCH) for n in names}
    for backbone, n in ((b, n) for b in backbones.values() for n in sizes):
        backbone.embed(np.zeros((n, backbone.crop.size, backbone.crop.size, 3), np.uint8))
    return backbones


def warm_detector(config: ExtractorConfig):
    from fakeprobe.pipeline.steps import make_detector

    detector = make_detector(config)
    detector.detect(np.zeros((240, 320, 3), np.uint8))  # creates its model: outside the timing
    return detector


def decode(items, config, work, clock, counts, args) -> dict:
    for k, item in enumerate(items):
        with timed(clock):
            _, frames = read_media(item.path, item.kind, count=config.frames, fps=config.fps,
                                   max_frames=config.max_frames, max_pixels=config.max_pixels)
        counts["frames"] += len(frames)
        if work:  # for the next modes, outside the timing
            save_frames(work / f"{k}.frames.npz", frames)
    return {}


def detect(items, config, work, clock, counts, args) -> dict:
    from fakeprobe.pipeline.steps import detect_rows

    detector = warm_detector(config)
    for k in range(len(items)):
        frames = load_frames(work, k)
        with timed(clock):
            rows, origin = detect_rows(frames, detector, config, defaultdict(float))
        counts["frames"] += len(frames)
        np.savez(work / f"{k}.rows.npz", origin=origin, **dataclasses.asdict(rows))
    return {}


def align(items, config, work, clock, counts, args) -> dict:
    """Aligns to the ``--crop SIZE:MARGIN`` geometries (those of the backbones' ``embed`` runs)."""
    from fakeprobe.pipeline.steps import align_rows

    specs = {CropSpec(int(s), float(m)) for s, m in (c.split(":") for c in args.crop)}
    for k in range(len(items)):
        frames, (rows, origin) = load_frames(work, k), load_rows(work, k)
        with timed(clock):
            align_rows(frames, rows, origin, specs)
        counts["frames"] += len(frames)
        counts["crops"] += int(rows.has_face.sum())
    return {}


def embed(items, config, work, clock, counts, args) -> dict:
    from fakeprobe.pipeline.steps import align_rows

    (backbone,) = warm_backbones(config.backbones).values()
    crops = []
    for k in range(len(items)):
        frames, (rows, origin) = load_frames(work, k), load_rows(work, k)
        crops.append(align_rows(frames, rows, origin, {backbone.crop})[backbone.crop])
        counts["frames"] += len(frames)
    crops = np.concatenate(crops)
    counts["crops"] = len(crops)
    with timed(clock):
        for start in range(0, len(crops), BATCH):
            backbone.embed(crops[start:start + BATCH])
    return {"crop": f"{backbone.crop.size}:{backbone.crop.margin}"}


def baseline(items, config, work, clock, counts, args) -> dict:
    from fakeprobe.pipeline.steps import align_rows, detect_rows

    detector, backbones = warm_detector(config), warm_backbones(config.backbones, sizes=(1,))
    specs = {b.crop for b in backbones.values()}
    for item in items:
        with timed(clock):
            for frame in one_frame_at_a_time(item, config):
                rows, origin = detect_rows([frame], detector, config, defaultdict(float))
                crops = align_rows([frame], rows, origin, specs)
                for backbone in backbones.values():
                    for crop in crops[backbone.crop]:
                        backbone.embed(crop[None])
                counts["frames"] += 1
                counts["crops"] += int(rows.has_face.sum())
    return {}


def e2e(items, config, work, clock, counts, args) -> dict:
    """The threaded pipeline into a temporary cache, its models loaded beforehand."""
    from fakeprobe.pipeline.run import Extractor

    extractor = Extractor(config, workers=args.workers, batch_size=BATCH)
    extractor.backbones.update(warm_backbones(config.backbones))
    with tempfile.TemporaryDirectory(prefix="fakeprobe-bench-") as folder:
        with timed(clock):
            summary = extractor.run(Discovery(items=list(items)), Path(folder) / "cache.h5")
    counts["frames"], counts["crops"] = summary.rows, summary.faces  # one row per frame
    return {"workers": args.workers, "failed": summary.failed,
            "stage_seconds": {k: round(v, 2) for k, v in summary.stage_seconds.items()}}


MODES = {f.__name__: f for f in (decode, detect, align, embed, baseline, e2e)}


def run_mode(args: argparse.Namespace) -> dict:
    """Measure one mode on one set (``--work``: the folder that carries frames and rows)."""
    if args.mode in ("detect", "align", "embed") and not args.work:
        raise SystemExit(f"--mode {args.mode} needs --work, the folder of a --mode decode run")
    source, clock = source_digest(), defaultdict(float)
    items = select_items(args.data, args.set, args.limit)
    counts = {"videos": len(items), "frames": 0, "crops": 0}
    work = Path(args.work) if args.work else None
    extra = MODES[args.mode](items, make_config(args), work, clock, counts, args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"mode": args.mode, **counts, "seconds": clock["seconds"], "cpu_s": clock["cpu_s"],
            "peak_rss_mib": round(peak, 1), "source_sha256": source, **extra}


# --- the parent: every mode in its own process, then the comparison ----------------------------

def cpu_seconds() -> tuple[float, float, float]:
    """CPU seconds since boot: busy (all processes), stolen by the hypervisor, and used by this
    process's finished children. Their changes over a mode say how much of the machine others
    took: on a shared machine the figures mean little when they took a lot."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    hz, own = os.sysconf("SC_CLK_TCK"), resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]  # user nice system irq softirq
    return busy / hz, ticks[7] / hz, own.ru_utime + own.ru_stime


def child(args: argparse.Namespace, which: str, mode: str, config: ExtractorConfig, *,
          limit: int | None = None, work: str | None = None, crops=()) -> dict:
    """Run one mode in a fresh interpreter and read back its JSON (the last line of stdout)."""
    limit = limit or args.limit
    command = [sys.executable, str(Path(__file__).resolve()), "--mode", mode, "--set", which,
               "--data", str(args.data), "--config", json.dumps(config.to_dict()),
               "--workers", str(args.workers), *(["--limit", str(limit)] if limit else []),
               *(["--work", work] if work else []), *(f"--crop={c}" for c in crops)]
    print(f"[{which}] {mode} on {limit or 'all'} videos...", file=sys.stderr, flush=True)
    before, started = cpu_seconds(), time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    (busy, steal, own) = (b - a for a, b in zip(before, cpu_seconds()))
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"mode": mode, "error": f"exit code {done.returncode}"}
    result = json.loads(lines[-1])
    seconds = max(result["seconds"], 1e-9)
    result["s_per_video"] = result["seconds"] / max(result["videos"], 1)
    result["frames_per_s"] = result["frames"] / seconds
    result["others_cores"] = round(max(busy - own, 0.0) / wall, 2)  # over the whole child
    result["steal_cores"] = round(steal / wall, 2)
    result["source_changed"] = result.pop("source_sha256") != args.source
    print(f"[{which}] {mode}: {result['seconds']:.1f} s, {result['peak_rss_mib']:.0f} MiB",
          file=sys.stderr, flush=True)
    return result


def measure_set(args: argparse.Namespace, which: str, config: ExtractorConfig) -> dict:
    n_videos = len(select_items(args.data, which, args.limit))
    modes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fakeprobe-bench-") as work:
        modes["decode"] = child(args, which, "decode", config, work=work)
        modes["detect"] = child(args, which, "detect", config, work=work)
        embeds = {f"embed:{name}": child(args, which, "embed", work=work,
                                         config=dataclasses.replace(config, backbones=(name,)))
                  for name in config.backbones}
        crops = sorted({r["crop"] for r in embeds.values() if "crop" in r})
        modes["align"] = child(args, which, "align", config, work=work, crops=crops)
        modes.update(embeds)
    modes["baseline"] = child(args, which, "baseline", config)
    modes["e2e"] = child(args, which, "e2e", config)
    small = f"e2e-{args.memory_limit}"
    if n_videos > args.memory_limit:
        modes[small] = child(args, which, "e2e", config, limit=args.memory_limit)
    return {"videos": n_videos, "modes": modes, "checks": checks(modes, config, small)}


def checks(modes: dict[str, dict], config: ExtractorConfig, small: str) -> dict:
    """e2e against the baseline and the slowest stage alone; e2e's RSS, few videos vs all."""
    if any("error" in r for r in modes.values()):
        return {"error": "a mode failed"}
    spv = {m: r["s_per_video"] for m, r in modes.items()}
    stages = {s: spv[s] for s in ("decode", "detect", "align")}
    stages["embed"] = sum(spv[f"embed:{name}"] for name in config.backbones)
    slowest = max(stages, key=stages.get)
    out = {"slowest_stage": slowest, "slowest_stage_s_per_video": stages[slowest],
           "sum_of_stages_s_per_video": sum(stages.values()),
           "speedup_vs_baseline": spv["baseline"] / spv["e2e"],
           "e2e_over_slowest_stage": spv["e2e"] / stages[slowest]}
    out["speedup_pass"] = out["speedup_vs_baseline"] >= SPEEDUP_TARGET
    out["floor_pass"] = out["e2e_over_slowest_stage"] <= FLOOR_TARGET
    if "peak_rss_mib" in modes.get(small, {}):
        out["e2e_rss_growth_mib"] = modes["e2e"]["peak_rss_mib"] - modes[small]["peak_rss_mib"]
    return out


def machine_and_versions() -> dict:
    def first(path: str, key: str) -> str:
        lines = Path(path).read_text().splitlines()
        return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")

    def version(dist: str) -> str | None:
        return installed(dist) or None

    return {"machine": {"cpu": first("/proc/cpuinfo", "model name") or platform.processor(),
                        "cores": os.cpu_count(), "os": platform.platform(),
                        "ram_gib": round(int(first("/proc/meminfo", "MemTotal").split()[0])
                                         / 2**20, 1)},
            "versions": {"python": platform.python_version(), "numpy": np.__version__,
                         "opencv": cv2.__version__,
                         "tensorflow": version("tensorflow") or version("tensorflow-cpu"),
                         **{d: version(d) for d in ("keras", "h5py", "fakeprobe")}}}


def markdown(report: dict) -> str:
    lines = ["| set | mode | videos | s/video | frames/s | CPU s/video | peak RSS MiB | others' "
             f"cores | e2e vs baseline (>= {SPEEDUP_TARGET:g}x) | e2e / slowest stage "
             f"(<= {FLOOR_TARGET:g}x) |", "|---" * 10 + "|"]
    for which, result in report["sets"].items():
        check = result["checks"]
        for mode, r in result["modes"].items():
            if "error" in r:
                lines.append(f"| {which} | {mode} | | {r['error']} | | | | | | |")
                continue
            speed = floor = ""
            if mode == "e2e" and "speedup_pass" in check:
                verdict = {True: "pass", False: "FAIL"}
                speed = f"{check['speedup_vs_baseline']:.2f}x {verdict[check['speedup_pass']]}"
                floor = (f"{check['e2e_over_slowest_stage']:.2f}x of {check['slowest_stage']} "
                         f"{verdict[check['floor_pass']]}")
            lines.append(f"| {which} | {mode} | {r['videos']} | {r['s_per_video']:.3f} "
                         f"| {r['frames_per_s']:.1f} | {r['cpu_s'] / max(r['videos'], 1):.3f} "
                         f"| {r['peak_rss_mib']:.0f} | {r['others_cores']:.2f} | {speed} "
                         f"| {floor} |")
    if any(r.get("source_changed") for s in report["sets"].values() for r in s["modes"].values()):
        lines.append("\nWARNING: fakeprobe's code changed during the run; rerun it.")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (default: <repo>/../shared/data)")
    parser.add_argument("--set", choices=(*SETS, "both"), default="both")
    parser.add_argument("--limit", type=int, help="the first N videos of each set (by id)")
    parser.add_argument("--frames", type=int, default=ExtractorConfig().frames)
    parser.add_argument("--detector", help="default: the config's (yunet)")
    parser.add_argument("--backbone", action="append",
                        help="repeatable; default: the config's")
    parser.add_argument("--workers", type=int, default=2, help="worker threads of e2e")
    parser.add_argument("--memory-limit", type=int, default=10,
                        help="e2e runs again on this many videos to compare peak RSS")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    parser.add_argument("--markdown", type=Path, help="also write the markdown table here")
    parser.add_argument("--mode", choices=tuple(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--crop", action="append", default=[], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    config, args.source = make_config(args), source_digest()
    report = {"benchmark": "extract", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "command": " ".join(["python", "benchmarks/extract.py", *sys.argv[1:]]),
              **machine_and_versions(), "config": config.to_dict(),
              "fakeprobe_source_sha256": args.source, "workers": args.workers,
              "batch_size": BATCH, "limit": args.limit, "sets": {}}
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
