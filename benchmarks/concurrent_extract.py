"""Two ``fakeprobe extract`` runs on one cache at the same time: one is refused or both
complete, and no item is ever lost.

Per trial, in a fresh folder: ``in/real`` and ``in/fake`` hold links to a few small FF++ c40
clips of ``../shared/data``; ``fakeprobe extract in/real --out c.h5 --commit-every 0`` and
``fakeprobe extract in/fake --out c.h5 --commit-every 0`` start together (the second after a
delay drawn per trial, from 0 to ``--max-delay`` seconds, so that it meets the first at every
stage: start-up, extraction, commit, after the end). A trial holds when

- each run exits 0, or exits 1 with one line saying the cache is being written by another
  process (no traceback);
- the cache holds every item of every run that exited 0, each with the rows of a clean run
  (``--frames``), and nothing is left staged;
- a refused run, started again alone, completes and adds its items.

```bash
python benchmarks/concurrent_extract.py                  # 20 trials, 2 + 2 clips, spectrum
python benchmarks/concurrent_extract.py --trials 5 --clips 1 --json-out r.json --markdown r.md
```
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def fakeprobe() -> list[str]:
    exe = Path(sys.executable).with_name("fakeprobe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "fakeprobe.cli"]


def clips(data: Path, n: int) -> tuple[list[Path], list[Path]]:
    ffpp = data / "ffpp"
    real = sorted((ffpp / "original_sequences/youtube/c40/videos").glob("*.mp4"))[:n]
    fake = sorted((ffpp / "manipulated_sequences/Deepfakes/c40/videos").glob("*.mp4"))[:n]
    if len(real) < n or len(fake) < n:
        raise SystemExit(f"{ffpp}: fewer than {n} FF++ c40 clips of each class")
    return real, fake


def cache_content(path: Path) -> dict[str, int]:
    """id -> row count of every item in the cache (read with h5py alone)."""
    if not path.exists():
        return {}
    with h5py.File(path, "r") as h5:
        ids = h5["videos/id"].asstr()[:]
        counts = h5["videos/row_count"][:]
        status = h5["videos/status"].asstr()[:]
    return {str(i): int(c) for i, c, s in zip(ids, counts, status) if s in ("ok", "no_face")}


def trial(k: int, real: list[Path], fake: list[Path], args: argparse.Namespace,
          rng: random.Random) -> dict:
    with tempfile.TemporaryDirectory(prefix="fp-concurrent-") as tmp:
        root = Path(tmp)
        for label, files in (("real", real), ("fake", fake)):
            (root / "in" / label).mkdir(parents=True)
            for f in files:
                (root / "in" / label / f.name).symlink_to(f.resolve())
        base = fakeprobe() + ["extract", "--out", "c.h5", "--commit-every", "0", "-b",
                              args.backbone, "--frames", str(args.frames), "--workers", "1"]
        commands = {"real": base[:2] + ["in/real"] + base[2:],
                    "fake": base[:2] + ["in/fake"] + base[2:]}
        delay = rng.uniform(0, args.max_delay)
        env = {**os.environ, "FAKEPROBE_DEBUG": ""}
        started = time.perf_counter()
        first = subprocess.Popen(commands["real"], cwd=root, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(delay)
        second = subprocess.Popen(commands["fake"], cwd=root, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=env)
        runs = {}
        for name, process in (("real", first), ("fake", second)):
            _, stderr = process.communicate(timeout=600)
            runs[name] = {"rc": process.returncode, "stderr": stderr}
        seconds = time.perf_counter() - started
        content = cache_content(root / "c.h5")
        staged = sorted(p.name for p in (root / "c.h5.staging").glob("*.npz")) if (
            root / "c.h5.staging").exists() else []
        expected = {"real": {f"real/{f.name}" for f in real},
                    "fake": {f"fake/{f.name}" for f in fake}}
        problems = []
        outcome = []
        for name, run in runs.items():
            lines = [line for line in run["stderr"].splitlines() if line.strip()]
            if "Traceback" in run["stderr"]:
                problems.append(f"{name}: traceback")
            if run["rc"] == 0:
                outcome.append(f"{name} ok")
                lost = expected[name] - set(content)
                if lost:
                    problems.append(f"{name}: exited 0 but lost {sorted(lost)}")
            elif run["rc"] == 1 and any("being written by another" in line for line in lines):
                outcome.append(f"{name} refused")
            else:
                problems.append(f"{name}: exit {run['rc']}: {lines[-1:] }")
        wrong_rows = {i: c for i, c in content.items() if c != args.frames}
        if wrong_rows:
            problems.append(f"items with other than {args.frames} rows: {wrong_rows}")
        if staged:
            problems.append(f"left staged: {staged}")
        # a refused run, started again alone, completes
        for name, run in runs.items():
            if run["rc"] == 1:
                again = subprocess.run(commands[name], cwd=root, capture_output=True,
                                       text=True, env=env, timeout=600)
                after = cache_content(root / "c.h5")
                if again.returncode != 0 or expected[name] - set(after):
                    problems.append(f"{name}: the rerun did not complete ({again.returncode})")
        return {"trial": k, "delay_s": round(delay, 2), "outcome": ", ".join(outcome),
                "items": len(content), "seconds": round(seconds, 1), "problems": problems,
                "held": not problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--clips", type=int, default=2, help="clips of each class")
    parser.add_argument("--backbone", default="spectrum")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--max-delay", type=float, default=3.0,
                        help="the second run starts 0 to this many seconds after the first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    real, fake = clips(args.data, args.clips)
    rng = random.Random(args.seed)
    results = []
    for k in range(args.trials):
        results.append(trial(k, real, fake, args, rng))
        print(f"trial {k}: {results[-1]['outcome']}, {results[-1]['items']} items"
              f"{'' if results[-1]['held'] else ' FAILED: ' + '; '.join(results[-1]['problems'])}",
              file=sys.stderr, flush=True)
    held = sum(r["held"] for r in results)
    refused = sum("refused" in r["outcome"] for r in results)
    from fakeprobe.core.provenance import environment

    result = {"benchmark": "concurrent_extract", "environment": environment(),
              "trials": args.trials, "held": held,
              "one_refused": refused, "both_completed": sum(r["outcome"] == "real ok, fake ok"
                                                            for r in results),
              "config": {k: str(v) for k, v in vars(args).items()}, "results": results}
    rows = "\n".join(f"| {r['trial']} | {r['delay_s']} | {r['outcome']} | {r['items']} | "
                     f"{'yes' if r['held'] else 'NO: ' + '; '.join(r['problems'])} |"
                     for r in results)
    table = (f"{held} of {args.trials} trials held ({refused} with one run refused, "
             f"{result['both_completed']} with both complete)\n\n"
             "| trial | delay s | outcome | items | held |\n|---:|---:|---|---:|---|\n" + rows)
    emit(result, table, args.json_out, args.markdown)
    if held != args.trials:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
