"""How long ``fakeprobe predict`` of one video takes from a fresh shell process, and where it goes.

1. **Wall time**: ``fakeprobe predict VIDEO`` (the console script, the bundled detector, one
   FF++ c40 video) run ``--repeats`` times as a user runs it, each in a fresh process; the median,
   once per forensic runtime (ONNX Runtime, the default, and Keras via
   ``FAKEPROBE_FORENSIC_RUNTIME=keras``), and ``fakeprobe --help`` beside it.
2. **Where it goes**: the same command run in a fresh process by a small harness that times the
   steps through the package's own seams (no copy of its logic): ``import`` (the CLI module),
   ``model load`` (the bundled detector's file, the face detector and the backbone, TensorFlow's
   import included when Keras serves), ``decode+detect`` (the extraction run less embedding,
   backbone building and cache writes), ``embed`` (the backbone's ``embed`` calls), ``cache``
   (staging and committing the temporary cache) and ``head+output`` (the rest: reading the
   features back, the head, the table). ``interpreter`` is what the harness process spent
   outside the timed part (Python's start-up and shutdown). Each step is a median over the runs,
   so the steps need not add up to a median wall time. The heavy modules each run imported are
   listed: a one-video predict on ONNX Runtime imports no TensorFlow.
3. **Runtimes** (``--runtimes``): each way of running the forensic network, in a fresh process:
   import, build, first batch of 32 and steady crops/s (batches of 32) on this machine, and the
   largest feature difference from the Keras network on 200 DFDC face crops (the 224 px crops
   of ``dfdc_faces`` resized to 160 px). LiteRT (``ai-edge-litert``, converted by TensorFlow's
   ``TFLiteConverter``) is measured when installed.

The machine's load (1-minute load average, other processes' CPU share) is recorded beside the
numbers: on a shared machine every time is longer than on an idle one; the ratios between
runtimes measured back to back hold better.

```bash
.venv/bin/python benchmarks/startup.py                      # ../shared/data, 5 repeats
.venv/bin/python benchmarks/startup.py --runtimes --json-out r.json --markdown r.md
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_VIDEO = Path("ffpp/original_sequences/youtube/c40/videos/253.mp4")
#: The target: one video, from the shell, on an idle 2-core machine.
TARGET_S = 3.0
RUNTIME_ENV = "FAKEPROBE_FORENSIC_RUNTIME"
#: Modules that are heavy to import; each run says which of them it loaded.
HEAVY = ("tensorflow", "keras", "torch", "xgboost", "h5py", "sklearn", "scipy", "matplotlib",
         "onnxruntime", "ai_edge_litert", "skops", "pandas", "optuna", "fastapi")

# The harness: run in a fresh process, prints one JSON line. It wraps seams of the package
# (where they exist) with timers, then runs the console script's entry point on argv.
HARNESS = r'''
import json, sys, time
t0 = time.perf_counter()
from importlib.metadata import entry_points
(entry,) = entry_points(group="console_scripts", name="fakeprobe")
main = entry.load()
t_import = time.perf_counter() - t0
imported_early = sorted(m for m in HEAVY if m in sys.modules)
timers = {"model_load": 0.0, "extract": 0.0, "embed": 0.0, "build_in_run": 0.0}
stage = {}
inside_run = [False]

def wrap(owner, name, key, after=None):
    original = getattr(owner, name, None)
    if original is None:
        return False
    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            result = original(*args, **kwargs)
        finally:
            spent = time.perf_counter() - t
            timers[key] += spent
            if key == "model_load" and inside_run[0]:
                timers["build_in_run"] += spent
        if after:
            after(result)
        return result
    setattr(owner, name, timed)
    return True

def run_wrapper(owner):
    original = owner.run
    def timed(*args, **kwargs):
        inside_run[0] = True
        t = time.perf_counter()
        try:
            summary = original(*args, **kwargs)
        finally:
            inside_run[0] = False
            timers["extract"] += time.perf_counter() - t
        stage.update(getattr(summary, "stage_seconds", {}) or {})
        return summary
    owner.run = timed

import importlib
seams = []
from fakeprobe.registry import Registry
seams.append(wrap(Registry, "create", "model_load") and "Registry.create")
for module in ("fakeprobe.classifiers.model",):
    mod = importlib.import_module(module)
    seams.append(wrap(mod, "load_model", "model_load") and f"{module}.load_model")
for module in ("fakeprobe.pipeline.run", "fakeprobe.extractor.pipeline"):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        continue
    if hasattr(mod, "Extractor"):
        run_wrapper(mod.Extractor)
        seams.append(f"{module}.Extractor.run")
        break
from fakeprobe.extractor.backbones import forensic
seams.append(wrap(forensic.ForensicBackbone, "embed", "embed") and "ForensicBackbone.embed")
runtime = {}
def note_runtime(owner=forensic.ForensicBackbone, init=forensic.ForensicBackbone.__init__):
    def init_and_note(self, *args, **kwargs):
        init(self, *args, **kwargs)
        runtime["forensic"] = getattr(self, "runtime", None)
    owner.__init__ = init_and_note
note_runtime()
t_setup = time.perf_counter() - t0 - t_import
sys.argv = ["fakeprobe", *ARGV]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
total = time.perf_counter() - t0 - t_setup
cache = sum(stage.get(k, 0.0) for k in ("stage", "commit"))
embed = timers["embed"]
decode_detect = max(0.0, timers["extract"] - timers["build_in_run"] - embed - cache)
split = {"import": t_import, "model_load": timers["model_load"],
         "decode_detect": decode_detect, "embed": embed, "cache": cache}
split["head_output"] = max(0.0, total - sum(split.values()))
print(json.dumps({"code": code, "total": total, "split": split, "stage_seconds": stage,
                  "runtime": runtime.get("forensic"), "seams": [s for s in seams if s],
                  "heavy_after_import": imported_early,
                  "heavy_at_end": sorted(m for m in HEAVY if m in sys.modules)}))
'''


def _env(runtime: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != RUNTIME_ENV}
    if runtime:
        env[RUNTIME_ENV] = runtime
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _wall(command: list[str], env: dict, repeats: int) -> dict:
    """Wall seconds of ``command`` in fresh processes, ``repeats`` times."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}")
    return {"median_s": statistics.median(times), "runs_s": times}


def _harness(argv: list[str], env: dict, repeats: int) -> dict:
    """The harness's per-step seconds (median of each over ``repeats`` fresh processes)."""
    code = f"HEAVY = {HEAVY!r}\nARGV = {argv!r}\n" + HARNESS
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - t0
        lines = [line for line in done.stdout.splitlines() if line.startswith('{"code"')]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"the harness failed ({done.returncode}):\n{done.stderr[-3000:]}")
        runs.append(json.loads(lines[-1]))
        # what the process spent outside the timed part: interpreter start-up and shutdown
        runs[-1]["split"] = {"interpreter": max(0.0, wall - runs[-1]["total"]),
                             **runs[-1]["split"]}
        runs[-1]["wall"] = wall
    if any(r["code"] for r in runs):
        raise SystemExit(f"predict failed in the harness: exit {runs[0]['code']}")
    keys = runs[0]["split"]
    return {"wall_s": statistics.median(r["wall"] for r in runs),
            "total_s": statistics.median(r["total"] for r in runs),
            "split_s": {k: statistics.median(r["split"][k] for r in runs) for k in keys},
            "runtime": runs[0]["runtime"], "seams": runs[0]["seams"],
            "heavy_after_import": runs[0]["heavy_after_import"],
            "heavy_at_end": runs[0]["heavy_at_end"],
            "stage_seconds": {k: statistics.median(r["stage_seconds"].get(k, 0.0) for r in runs)
                              for k in runs[0]["stage_seconds"]}}


class Load:
    """Other processes' CPU use while a block runs (cores) and the 1-minute load average."""

    def __enter__(self):
        import psutil

        self._psutil = psutil
        self.t0 = time.perf_counter()
        self.cpu0 = sum(psutil.cpu_times()[:3])
        self.own0 = self._own()
        self.load_before = os.getloadavg()[0]
        return self

    def _own(self) -> float:
        me = self._psutil.Process()
        total = sum(me.cpu_times()[:4])  # user, system, children user, children system
        return total

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        cpu = sum(self._psutil.cpu_times()[:3]) - self.cpu0
        own = self._own() - self.own0
        self.other_cores = max(0.0, (cpu - own) / wall) if wall > 0 else 0.0
        self.load_after = os.getloadavg()[0]
        return False

    def to_dict(self) -> dict:
        return {"other_processes_cores": round(self.other_cores, 2),
                "load_1min_before": self.load_before, "load_1min_after": self.load_after}


# --------------------------------------------------------------------------------------------
# Runtimes of the network alone

RUNTIME_PROBE = r'''
import json, sys, time
t0 = time.perf_counter()
import numpy as np
KIND, PATH, CROPS, REF = sys.argv[1:5]
if KIND == "onnxruntime":
    import onnxruntime
elif KIND == "litert":
    from ai_edge_litert.interpreter import Interpreter
else:
    from fakeprobe.core.tf import import_tensorflow
    tf = import_tensorflow()
    import keras
t_import = time.perf_counter() - t0
crops, reference = np.load(CROPS), np.load(REF)
t = time.perf_counter()
if KIND == "onnxruntime":
    from fakeprobe.extractor.backbones.onnx_runtime import OnnxNetwork
    net = OnnxNetwork(open(PATH, "rb").read(), PATH, providers=["CPUExecutionProvider"],
                      batch_size=32)
    run = net.embed
elif KIND == "litert":
    it = Interpreter(model_path=PATH)
    detail_in, detail_out = it.get_input_details()[0], it.get_output_details()[0]
    shape = [None]
    def run(batch):
        if shape[0] != batch.shape:
            it.resize_tensor_input(detail_in["index"], list(batch.shape))
            it.allocate_tensors()
            shape[0] = batch.shape
        it.set_tensor(detail_in["index"], batch)
        it.invoke()
        return it.get_tensor(detail_out["index"]).copy()
else:
    from fakeprobe.extractor.backbones.forensic import ForensicBackbone
    backbone = ForensicBackbone(device="cpu", runtime="keras")
    run = backbone.embed
t_build = time.perf_counter() - t
t = time.perf_counter()
run(crops[:32])
t_first = time.perf_counter() - t
batches = [crops[i:i + 32] for i in range(0, len(crops), 32)]
t = time.perf_counter()
out = np.concatenate([run(b) for b in batches] + [run(b) for b in batches])[:len(crops)]
steady = 2 * len(crops) / (time.perf_counter() - t)
difference = np.abs(out.astype(np.float64) - reference)
print(json.dumps({"import_s": t_import, "build_s": t_build, "first_batch_s": t_first,
                  "crops_per_s": steady, "max_abs_difference": float(difference.max()),
                  "max_difference_over_scale": float(difference.max() / np.abs(reference).max()),
                  "mean_abs_difference": float(difference.mean())}))
'''


def dfdc_crops(data: Path, n: int = 200, size: int = 160):
    """``n`` DFDC face crops spread over ``dfdc_faces`` (sorted), RGB, resized to ``size``."""
    import csv

    import cv2
    import numpy as np

    with open(data / "dfdc_faces" / "manifest.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["path"])
    picked = [rows[int(k)] for k in np.linspace(0, len(rows) - 1, n)]
    out = np.empty((len(picked), size, size, 3), np.uint8)
    for k, row in enumerate(picked):
        image = cv2.imread(str(data / "dfdc_faces" / row["path"]))
        out[k] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)[:, :, ::-1]
    return out


def measure_runtimes(data: Path) -> dict:
    """Each runtime of the shipped network in a fresh process (see the module doc)."""
    import importlib.util

    import numpy as np

    from fakeprobe.extractor.backbones.forensic import (CONVERTED_FILE, ForensicBackbone,
                                                        WEIGHTS_FILE, build_keras, read_weights)
    from fakeprobe.weights import weights_dir

    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="fakeprobe-startup-") as tmp:
        tmp = Path(tmp)
        crops = dfdc_crops(data)
        np.save(tmp / "crops.npy", crops)
        keras_net = ForensicBackbone(device="cpu", runtime="keras")
        np.save(tmp / "reference.npy", keras_net.embed(crops).astype(np.float64))
        kinds = {"keras": weights_dir() / WEIGHTS_FILE,
                 "onnxruntime": weights_dir() / CONVERTED_FILE}
        if importlib.util.find_spec("ai_edge_litert") is not None:
            import tensorflow as tf

            architecture, _, arrays = read_weights(weights_dir() / WEIGHTS_FILE)
            model = build_keras(architecture, arrays, WEIGHTS_FILE)
            size = crops.shape[1]

            @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
            def forward(x):
                return model(tf.cast(x, tf.float32), training=False)

            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [forward.get_concrete_function()], forward)
            (tmp / "forensic.tflite").write_bytes(converter.convert())
            kinds["litert"] = tmp / "forensic.tflite"
        for kind, path in kinds.items():
            done = subprocess.run([sys.executable, "-c", RUNTIME_PROBE, kind, str(path),
                                   str(tmp / "crops.npy"), str(tmp / "reference.npy")],
                                  capture_output=True, text=True, env=_env(None))
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode != 0 or not lines:
                out[kind] = {"error": done.stderr[-2000:]}
                continue
            out[kind] = {**json.loads(lines[-1]), "file_mb": path.stat().st_size / 1e6}
    return out


# --------------------------------------------------------------------------------------------


def _markdown(result: dict) -> str:
    wall = result["wall"]
    rows = ["| run (median of %d, fresh process) | seconds | vs target %.1f s |" % (
        result["repeats"], TARGET_S), "|---|---|---|"]
    for key, label in (("predict_onnxruntime", "`fakeprobe predict VIDEO` (ONNX Runtime)"),
                       ("predict_keras", "`fakeprobe predict VIDEO` (Keras)"),
                       ("help", "`fakeprobe --help`")):
        if key in wall:
            seconds = wall[key]["median_s"]
            rows.append(f"| {label} | {seconds:.2f} | {seconds / TARGET_S:.2f}x |")
    if "predict_onnxruntime" in wall and "predict_keras" in wall:
        ratio = wall["predict_onnxruntime"]["median_s"] / wall["predict_keras"]["median_s"]
        rows.append(f"| ONNX Runtime / Keras | {ratio:.2f} | |")
    rows += ["", "| step (median) | " + " | ".join(result["split"]) + " |",
             "|---|" + "---|" * len(result["split"])]
    steps = ("interpreter", "import", "model_load", "decode_detect", "embed", "cache",
             "head_output")
    for step in steps:
        rows.append(f"| {step.replace('_', ' ')} | " + " | ".join(
            f"{split['split_s'].get(step, 0.0):.2f}" for split in result["split"].values())
            + " |")
    rows.append("| heavy modules imported | " + " | ".join(
        ", ".join(split["heavy_at_end"]) or "-" for split in result["split"].values()) + " |")
    runtimes = result.get("runtimes")
    if runtimes:
        rows += ["", "| network runtime | import s | build s | first batch of 32 s | crops/s "
                 "| max abs diff vs Keras | / feature scale | file MB |",
                 "|---|---|---|---|---|---|---|---|"]
        for kind, r in runtimes.items():
            if "error" in r:
                rows.append(f"| {kind} | error | | | | | | |")
                continue
            rows.append(f"| {kind} | {r['import_s']:.2f} | {r['build_s']:.2f} | "
                        f"{r['first_batch_s']:.2f} | {r['crops_per_s']:.0f} | "
                        f"{r['max_abs_difference']:.1e} | {r['max_difference_over_scale']:.1e} | "
                        f"{r['file_mb']:.1f} |")
    load = result["load"]
    rows.append("")
    rows.append(f"Video: {result['video']}. Machine: {result['environment']['cpu']}, "
                f"{result['environment']['cores']} cores; other processes used "
                f"{load['other_processes_cores']:.2f} cores on average meanwhile (load "
                f"{load['load_1min_before']:.1f} -> {load['load_1min_after']:.1f}).")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--video", type=Path, help=f"default: DATA/{DEFAULT_VIDEO}")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtimes", action="store_true",
                        help="also measure each runtime of the network alone (200 DFDC crops)")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    video = args.video or args.data / DEFAULT_VIDEO
    if not video.is_file():
        parser.error(f"no video at {video}")
    script = str(Path(sys.executable).with_name("fakeprobe"))
    predict = ["predict", str(video)]
    from fakeprobe.core.provenance import RUN_LIBRARIES, environment

    libraries = {**RUN_LIBRARIES, "onnxruntime": ("onnxruntime",),
                 "ai-edge-litert": ("ai-edge-litert",)}
    result: dict = {"video": str(video), "repeats": args.repeats, "target_s": TARGET_S,
                    "command": " ".join(["fakeprobe", *predict]),
                    "environment": environment(libraries)}
    with Load() as load:
        wall, split = {}, {}
        for runtime in ("onnxruntime", "keras"):
            env = _env(runtime)
            wall[f"predict_{runtime}"] = _wall([script, *predict], env, args.repeats)
            split[runtime] = _harness(predict, env, args.repeats)
        wall["help"] = _wall([script, "--help"], _env(None), args.repeats)
        result["wall"], result["split"] = wall, split
        if args.runtimes:
            result["runtimes"] = measure_runtimes(args.data)
    result["load"] = load.to_dict()
    emit(result, _markdown(result), args.json_out, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
