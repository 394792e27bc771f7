"""Extraction on a local Dask cluster: items/s with 1 and 2 worker processes beside a plain
run, and the measured terms of the cost model in benchmarks/README.md.

Each run extracts the same FF++ c40 clips of ``../shared/data`` into a fresh cache (fakeprobe's
default detector and backbone, ``--frames`` per clip) and reports:

- wall items/s, and steady items/s (between the first and the last finished item: without the
  cluster's start-up and the networks' loading);
- per-item worker seconds (decode + detect + align + embed + stage, summed over workers: wall
  time inside the tasks) and per-item CPU seconds of the driver and of the cluster's processes;
- the driver's commit seconds per item, and the staged bytes per item (what workers write to
  the shared staging folder and the driver reads back);
- the bytes of one task's argument and one task's result (pickled), what crosses the network;
- with ``--dfdc``, one worker on the DFDC videos (1080p, 300 frames): their per-item cost.

```bash
python benchmarks/distributed.py --dfdc               # all FF++ c40 clips, 8 frames each
python benchmarks/distributed.py --limit 12 --frames 4 --json-out r.json --markdown r.md
```
"""

from __future__ import annotations

import argparse
import csv
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _output import emit  # noqa: E402

# this file is named like Dask's ``distributed`` package: take its folder off the path again
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
WORKER_STAGES = ("decode", "detect", "align", "stage", "blend")


class Clock:
    """A progress reporter that notes when each item finishes and what is staged by then."""

    def __init__(self, cache: Path) -> None:
        self.cache, self.times, self.staged = cache, [], (0, 0)

    def start(self, total: int) -> None:
        pass

    def advance(self, item, status: str, message: str = "") -> None:
        from fakeprobe.features.cache import staged_files

        self.times.append(time.perf_counter())
        files = staged_files(self.cache)
        sizes = [f.stat().st_size for f in files if f.exists()]
        if len(sizes) >= self.staged[0]:
            self.staged = (len(sizes), sum(sizes))


def manifest(data: Path, limit: int | None, folder: Path) -> tuple[Path, int]:
    videos = sorted((data / "ffpp").rglob("c40/videos/*.mp4"))[:limit]
    if not videos:
        raise SystemExit(f"{data}: no FF++ c40 clips")
    path = folder / "ffpp-c40.csv"
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["path", "label", "group"])
        for video in videos:
            label = "fake" if "manipulated_sequences" in video.parts else "real"
            out.writerow([video, label, video.stem.split("_")[0]])
    return path, len(videos)


def one_run(listing: Path | list[Path], folder: Path, name: str, frames: int, engine: str,
            workers: int) -> dict:
    import fakeprobe

    cache = folder / f"{name}.h5"
    clock = Clock(cache)
    cpu0 = _cpu()
    t0 = time.perf_counter()
    result = fakeprobe.extract(listing, cache, frames=frames, engine=engine, workers=workers,
                               reporter=clock, commit_every=1e9)
    wall = time.perf_counter() - t0
    cpu1 = _cpu()
    summary = result.summary
    items = summary.extracted + summary.failed
    spent = summary.stage_seconds
    worker = sum(v for k, v in spent.items() if k in WORKER_STAGES or k.startswith("embed:"))
    steady = ((len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
              if len(clock.times) > 1 else None)
    return {
        "run": name, "engine": engine, "workers": workers, "items": items,
        "failed": summary.failed, "rows": summary.rows, "wall_seconds": wall,
        "items_per_second": items / wall, "steady_items_per_second": steady,
        "first_item_seconds": (clock.times[0] - t0) if clock.times else None,
        "worker_seconds_per_item": worker / max(items, 1),
        # CPU: this process (the driver; all of a plain run), and the cluster's processes
        # (workers and nannies, counted once they have ended with the run's local cluster)
        "driver_cpu_seconds_per_item": (cpu1[0] - cpu0[0]) / max(items, 1),
        "cluster_cpu_seconds_per_item": (cpu1[1] - cpu0[1]) / max(items, 1),
        "commit_seconds_per_item": spent.get("commit", 0.0) / max(summary.committed, 1),
        "staged_bytes_per_item": (clock.staged[1] / clock.staged[0]
                                  if clock.staged[0] else None),
        "stage_seconds": spent,
    }


def _cpu() -> tuple[float, float]:
    """User + system CPU seconds of this process and of its ended child processes."""
    import resource

    me, children = (resource.getrusage(resource.RUSAGE_SELF),
                    resource.getrusage(resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def task_bytes(listing: Path) -> dict:
    """Pickled bytes of one task's argument (a plan entry) and of one result (outcomes)."""
    from fakeprobe.datasets import discover

    item = discover([listing]).items[0]
    outcome = [{"id": item.id, "status": "ok", "kind": "video", "rows": 8, "faces": 8,
                "warning": None, "error": None, "pid": os.getpid(),
                "seconds": {k: 0.1 for k in ("decode", "detect", "align", "stage",
                                             "embed:forensic")}}]
    return {"task_argument_bytes": len(pickle.dumps((item, ("forensic",), None, None))),
            "task_result_bytes": len(pickle.dumps(outcome))}


def versions() -> dict:
    import importlib

    return {"python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            **{name: importlib.import_module(name).__version__
               for name in ("fakeprobe", "dask", "distributed", "numpy", "onnxruntime",
                            "xgboost")}}


def cost_model(runs: list[dict], total_items: int = 120_000) -> dict:
    """Workers needed for ``total_items`` DFDC-like items in a given wall time.

    A worker with a core of its own finishes an item in its CPU seconds ``c`` (measured: the
    cluster's CPU per item, on the DFDC videos with ``--dfdc``), so ``W`` workers take about
    ``start + N c / W``; the driver commits every item (``commit`` s each), which caps the run
    at ``1 / commit`` items/s whatever ``W``. The check: the one-worker run predicts its own
    wall time from ``c`` (the ratio says how much of a core it really got here) and the
    two-worker run's."""
    one = next(r for r in runs if r["run"] == "dask-1")
    dfdc = next((r for r in runs if r["run"] == "dfdc-1"), None)
    two = next((r for r in runs if r["run"] == "dask-2"), None)
    start = one["first_item_seconds"]
    cpu = one["cluster_cpu_seconds_per_item"]
    commit = max(r["commit_seconds_per_item"] for r in runs if r["engine"] == "dask")
    model = {"cpu_seconds_per_item": cpu, "start_seconds": start,
             "driver_commit_seconds_per_item": commit,
             "driver_ceiling_items_per_second": 1.0 / commit if commit else None,
             "one_worker_predicted_wall_seconds": start + one["items"] * cpu,
             "one_worker_measured_wall_seconds": one["wall_seconds"],
             "one_worker_core_share": one["items"] * cpu / max(one["wall_seconds"] - start,
                                                               1e-9)}
    if two is not None:
        model["two_workers_predicted_wall_seconds"] = start + two["items"] * cpu / 2
        model["two_workers_measured_wall_seconds"] = two["wall_seconds"]
        model["two_workers_speedup_steady"] = (two["steady_items_per_second"]
                                               / one["steady_items_per_second"])
    dfdc_cpu = dfdc["cluster_cpu_seconds_per_item"] if dfdc else cpu
    model["dfdc_cpu_seconds_per_item"] = dfdc_cpu
    model["dfdc_measured"] = dfdc is not None
    model["dfdc_core_hours"] = total_items * dfdc_cpu / 3600
    model["dfdc_workers"] = {f"{hours}h": max(1, -(-int(total_items * dfdc_cpu)
                                                 // (hours * 3600 - int(start))))
                             for hours in (1, 6, 24)}
    model["dfdc_driver_floor_hours"] = total_items * commit / 3600
    return model


def table(result: dict) -> str:
    lines = ["| run | workers | items | wall s | items/s | steady items/s | worker s/item | "
             "CPU s/item driver + cluster | commit ms/item | staged KiB/item |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        steady = r["steady_items_per_second"]
        staged = r["staged_bytes_per_item"]
        lines.append(
            f"| {r['run']} | {r['workers']} | {r['items']} | {r['wall_seconds']:.1f} | "
            f"{r['items_per_second']:.2f} | {steady:.2f} | "
            f"{r['worker_seconds_per_item']:.2f} | {r['driver_cpu_seconds_per_item']:.2f} + "
            f"{r['cluster_cpu_seconds_per_item']:.2f} | "
            f"{1000 * r['commit_seconds_per_item']:.1f} | "
            f"{staged / 1024 if staged else float('nan'):.1f} |")
    model = result["cost_model"]
    get = model.get
    workers = model["dfdc_workers"]
    lines += ["", f"CPU {model['cpu_seconds_per_item']:.2f} s/item; one worker: predicted "
              f"{model['one_worker_predicted_wall_seconds']:.1f} s on a core of its own, "
              f"measured {model['one_worker_measured_wall_seconds']:.1f} s (it had "
              f"{model['one_worker_core_share']:.2f} of a core); two workers: predicted "
              f"{get('two_workers_predicted_wall_seconds', 0):.1f} s, measured "
              f"{get('two_workers_measured_wall_seconds', 0):.1f} s (steady speed-up "
              f"{get('two_workers_speedup_steady', 0):.2f}x). DFDC (120,000 items at "
              f"{model['dfdc_cpu_seconds_per_item']:.2f} CPU s each: "
              f"{model['dfdc_core_hours']:.1f} core-hours): workers of one core for 1 h / 6 h "
              f"/ 24 h: {workers['1h']} / {workers['6h']} / {workers['24h']}; the driver's "
              f"commits alone take {model['dfdc_driver_floor_hours']:.2f} h"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--dfdc", action="store_true",
                        help="also time one worker on the DFDC videos of --data (their "
                        "per-item cost feeds the DFDC line of the cost model)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        listing, n = manifest(args.data, args.limit, folder)
        runs = [one_run(listing, folder, "plain", args.frames, "local", 2),
                one_run(listing, folder, "dask-1", args.frames, "dask", 1),
                one_run(listing, folder, "dask-2", args.frames, "dask", 2)]
        if args.dfdc:
            runs.append(one_run([args.data / "dfdc"], folder, "dfdc-1", args.frames, "dask", 1))
        result = {"benchmark": "distributed", "clips": n, "frames": args.frames,
                  "environment": versions(), "runs": runs, **task_bytes(listing),
                  "cost_model": cost_model(runs)}
    emit(result, table(result), args.json_out, args.markdown)


if __name__ == "__main__":
    main()
