"""What commits cost while ``fakeprobe extract`` fills a cache: their share of the run, and the
commit seconds per 1000 items from the first thousand to the last.

The items are the face crops of ``dfdc_faces`` (``--face-crops``: no detection), read through a
manifest of its rows repeated under ``copy-K/`` folders (hard links to the data set's files, or
copies where links cannot be made) until ``--items`` rows, so every row is a new item. The run is
:func:`fakeprobe.extractor.pipeline.extract` with a cheap feature set (``--backbone``, default
``spectrum``: 64-d, no network) and a commit every ``--commit-every`` seconds; every call of
``fakeprobe.features.cache.commit`` is timed. A commit's seconds are shared among the
thousands its new items fall in.

```bash
python benchmarks/cache_commit.py --items 20000 \\
    --json-out benchmarks/results/cache-commit-2026-12-01.json \\
    --markdown benchmarks/results/cache-commit-2026-12-01.md
# the copy-and-rename commit it replaced, for comparison: the package of commit 7ce5b86
git archive 7ce5b86 fakeprobe | tar -x -C /tmp/fp-old
PYTHONPATH=/tmp/fp-old python benchmarks/cache_commit.py --items 3000 --label copy-and-rename
```
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def manifest(data: Path, folder: Path, n: int) -> Path:
    """A manifest of ``n`` rows of ``dfdc_faces``, the data set repeated under ``copy-K/``."""
    source = data / "dfdc_faces"
    with open(source / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = folder / "faces" / "manifest.csv"
    out.parent.mkdir(parents=True)
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for k in range(n):
            copy = k // len(rows)
            row = dict(rows[k % len(rows)])
            target = out.parent / f"copy-{copy}" / row["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            try:  # a file of its own (a link would resolve to the same item)
                os.link(source / row["path"], target)
            except OSError:
                shutil.copyfile(source / row["path"], target)
            row["path"] = f"copy-{copy}/{row['path']}"
            row["group"] = f"{row['group']}-{copy}"
            writer.writerow(row)
    return out


def per_thousand(commits: list[dict], total: int) -> list[float]:
    """Commit seconds per 1000 items: each commit's seconds shared among its new items."""
    buckets = [0.0] * ((total + 999) // 1000)
    first = 0
    for c in commits:
        if c["items"] == 0:
            if buckets:
                buckets[min(first // 1000, len(buckets) - 1)] += c["seconds"]
            continue
        for k in range(first, first + c["items"]):
            buckets[min(k // 1000, len(buckets) - 1)] += c["seconds"] / c["items"]
        first += c["items"]
    return buckets


def run(args: argparse.Namespace, folder: Path) -> dict:
    from fakeprobe.features import cache as fcache

    try:
        from fakeprobe.core.config import ExtractorConfig
        from fakeprobe.pipeline.run import extract
    except ImportError:  # a fakeprobe from before fakeprobe.core (the old commit, for comparison)
        from fakeprobe.extractor.config import ExtractorConfig
        from fakeprobe.extractor.pipeline import extract

    listing = manifest(args.data, folder, args.items)
    cache = folder / "cache.h5"
    commits: list[dict] = []
    commit = fcache.commit

    def timed(*a, **kw):
        t0 = time.perf_counter()
        merged = commit(*a, **kw)
        commits.append({"seconds": time.perf_counter() - t0, "items": merged,
                        "at_s": time.perf_counter() - started})
        return merged

    fcache.commit = timed
    config = ExtractorConfig(face_crops=True, backbones=(args.backbone,))
    started = time.perf_counter()
    try:
        summary = extract([listing], cache, config, workers=args.workers,
                                   commit_every=args.commit_every)
    finally:
        fcache.commit = commit
    total = time.perf_counter() - started
    with fcache.CacheReader(cache) as reader:
        items = reader.n_videos
        schema = int(reader.attrs["schema_version"])
    commit_s = sum(c["seconds"] for c in commits)
    buckets = per_thousand(commits, items)
    return {"items": items, "extracted": summary.extracted, "failed": summary.failed,
            "schema_version": schema, "run_s": round(total, 2),
            "commit_s": round(commit_s, 2), "commit_share": round(commit_s / total, 4),
            "commits": len(commits), "cache_mb": round(cache.stat().st_size / 2**20, 1),
            "commit_s_per_1000_items": [round(b, 3) for b in buckets],
            "last_over_first_thousand": (round(buckets[-1] / buckets[0], 2)
                                         if len(buckets) > 1 and buckets[0] else None),
            "commit_log": [{k: round(v, 3) for k, v in c.items()} for c in commits]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--items", type=int, default=20000)
    parser.add_argument("--backbone", default="spectrum")
    parser.add_argument("--commit-every", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--label", default="in-place-journal",
                        help="what the commit path is called in the result")
    parser.add_argument("--workdir", type=Path, help="keep the cache here (default: a "
                        "temporary folder, removed)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=False)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="fp-commit-") as tmp:
            result = run(args, Path(tmp))
    try:
        from fakeprobe.core.provenance import environment
    except ImportError:
        from fakeprobe.evaluation.runs import environment
    import fakeprobe

    result = {"benchmark": "cache_commit", "label": args.label, "environment": environment(),
              "fakeprobe_path": str(Path(fakeprobe.__file__).parent),
              "config": {k: str(v) for k, v in vars(args).items()}, **result}
    buckets = result["commit_s_per_1000_items"]
    rows = "\n".join(f"| {k + 1}k | {b:.3f} |" for k, b in enumerate(buckets))
    table = (f"{args.label}: {result['items']} items ({args.backbone}, --face-crops, a commit "
             f"every {args.commit_every:g} s): run {result['run_s']:.0f} s, "
             f"{result['commits']} commits, {result['commit_s']:.1f} s in commits "
             f"({100 * result['commit_share']:.1f}% of the run); last thousand / first: "
             f"{result['last_over_first_thousand']}\n\n"
             "| items | commit s per 1000 items |\n|---:|---:|\n" + rows)
    emit(result, table, args.json_out, args.markdown)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
