"""The ``fakeprobe`` command line: parse options, call one library function, print or write JSON.

Known errors become one line on stderr and exit code 1; set ``FAKEPROBE_DEBUG=1`` for the
traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from fakeprobe import __version__
from fakeprobe.errors import FakeprobeError

app = typer.Typer(
    name="fakeprobe",
    help="Tell deepfake videos and images from real ones. Extract face features once into an "
    "HDF5 cache, then train and compare classical heads on it in seconds.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
err = Console(stderr=True)
#: Tables are wide: when stdout is a file or a pipe (no terminal width to respect), use 160.
out = Console(width=None if sys.stdout.isatty() else 160)


def _handles_errors(command):
    """Turn a known error into one red line and exit code 1 (traceback with FAKEPROBE_DEBUG)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except FakeprobeError as exc:
            if os.environ.get("FAKEPROBE_DEBUG"):
                raise
            err.print(f"[red]error[/]: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _finite(data: object) -> object:
    """NaN and infinities as null: strict JSON has no NaN (an image has no timestamp)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")


def _parse_weights(values: list[str]) -> dict[str, str]:
    weights = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"{value!r}: use BACKBONE=PATH", param_hint="--weights")
        if not Path(path).is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="--weights")
        weights[name] = path
    return weights


class _ProgressReporter:
    """A rich progress bar with items/s and ETA; failures are printed above it."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]extract[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("[red]{task.fields[failed]}"),
            console=console, transient=False,
        )
        self.task = None
        self.failed = 0

    def __enter__(self) -> "_ProgressReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("extract", total=total, rate="", failed="")

    def advance(self, item, status: str, message: str = "") -> None:
        if message:
            self.failed += 1
            self.progress.console.print(f"[yellow]skip[/] {item.id}: {message}", highlight=False)
        self.progress.advance(self.task)
        task = self.progress.tasks[self.task]
        speed = task.finished_speed or task.speed
        self.progress.update(
            self.task, rate=f"{speed:.2f} items/s" if speed else "",
            failed=f"{self.failed} failed" if self.failed else "")


@app.command()
@_handles_errors
def extract(
    inputs: Annotated[list[Path], typer.Argument(
        exists=True, help="Folders (real/ and fake/ subfolders, a FaceForensics++ tree, DFDC "
        "folders with metadata.json, or unlabelled media), CSV manifests (path,label[,group]) "
        "or single videos and images.", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", "-o", dir_okay=False,
                                           help="The HDF5 cache to create or extend.")],
    frames: Annotated[int, typer.Option(min=1, help="Evenly spaced frames per video.")] = 32,
    fps: Annotated[Optional[float], typer.Option(
        min=0.001, help="Sample at this rate (frames per second) instead of --frames.")] = None,
    max_frames: Annotated[int, typer.Option(min=1, help="Cap per video with --fps.")] = 300,
    detector: Annotated[str, typer.Option(help="Face detector: yunet, dlib-hog or mtcnn.")
                        ] = "yunet",
    detect_size: Annotated[int, typer.Option(
        min=64, help="Longest side of the downscaled copy the detector sees.")] = 640,
    min_face_score: Annotated[Optional[float], typer.Option(
        help="Detector confidence threshold (default: the detector's own).")] = None,
    all_faces: Annotated[bool, typer.Option(
        "--all-faces", help="Keep every face, linked into tracks across frames (default: the "
        "largest face of each frame).")] = False,
    backbone: Annotated[list[str], typer.Option(
        "--backbone", "-b", help="Feature set(s) to compute; repeat for several. See "
        "`fakeprobe components`.")] = ["mobilenet-v2"],
    weights: Annotated[list[str], typer.Option(
        help="Local weights for a backbone, as BACKBONE=PATH (for the keras.applications "
        "family offline).")] = [],
    detector_weights: Annotated[Optional[Path], typer.Option(
        exists=True, dir_okay=False, help="Local model file for the detector.")] = None,
    keep_crops: Annotated[int, typer.Option(
        min=0, help="Also store aligned face crops of this size, for thumbnails and to add "
        "backbones later without decoding: 224 serves every ImageNet backbone and sface "
        "(crops are re-used only where no upsampling or extra margin is needed).")] = 0,
    frame_folders: Annotated[bool, typer.Option(
        "--frame-folders", help="Read each leaf folder of images as one video (its frames).")
                             ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Decoding/detection threads.")] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per network batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or gpu.")] = "auto",
    max_pixels: Annotated[int, typer.Option(help="Refuse frames larger than this.")
                          ] = 40_000_000,
    commit_every: Annotated[float, typer.Option(
        help="Seconds between commits of finished items into the cache.")] = 600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")
                       ] = False,
) -> None:
    """Extract faces and features of labelled media into an HDF5 cache.

    Re-running with the same --out skips what is cached and adds what is new (more media, or
    another --backbone). A crash or Ctrl-C loses nothing: run the same command again.
    """
    from fakeprobe.extractor.config import ExtractorConfig
    from fakeprobe.extractor.pipeline import extract as run_extract

    config = ExtractorConfig(
        frames=frames, fps=fps, max_frames=max_frames, detector=detector,
        detect_size=detect_size, min_face_score=min_face_score, all_faces=all_faces,
        keep_crops=keep_crops, max_pixels=max_pixels, backbones=tuple(dict.fromkeys(backbone)),
    )
    reporter = _ProgressReporter(err)
    try:
        with reporter:
            summary = run_extract(
                inputs, out_path, config, workers=workers, device=device,
                batch_size=batch_size, weights=_parse_weights(weights),
                detector_weights=str(detector_weights) if detector_weights else None,
                commit_every=commit_every, frame_folders=frame_folders, reporter=reporter,
            )
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished items are saved in {out_path}; run the "
                  "same command again to resume")
        raise typer.Exit(130) from None
    for problem in summary.problems:
        err.print(f"[yellow]note[/] {problem}", highlight=False)
    if as_json:
        _print_json(summary.to_dict())
    else:
        _print_extract_summary(summary)
    if not summary.ok:
        err.print("[red]error[/]: no item could be extracted")
        raise typer.Exit(1)


def _failures_table(failures: list[dict[str, str]], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "status", "error"):
        table.add_column(column)
    for failure in failures:
        table.add_row(failure["id"], failure["status"], failure["error"])
    return table


def _print_extract_summary(summary) -> None:
    table = Table(title=f"extract -> {summary.cache}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("items found", summary.found), ("extracted now", summary.extracted),
        ("feature sets added to cached items", summary.features_added),
        ("already cached", summary.already_done), ("failed", summary.failed),
        ("frames sampled", summary.rows), ("frames with a face", summary.faces),
        ("seconds", f"{summary.seconds:.1f}"),
    ]
    for key, value in rows:
        table.add_row(key, str(value))
    workers = {"decode", "detect", "align"}
    for stage, secs in sorted(summary.stage_seconds.items()):
        where = " (all workers)" if stage in workers else ""
        table.add_row(f"  time in {stage}{where}", f"{secs:.1f} s")
    err.print(table)
    if summary.failures:
        err.print(_failures_table(summary.failures, "failures (recorded in the cache)"))


@app.command()
@_handles_errors
def info(
    cache: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="An HDF5 cache written by `fakeprobe extract`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Counts per label, dataset, method and status, the feature sets and the extractor config."""
    from fakeprobe.features.cache import summarize

    summary = summarize(cache)
    if as_json:
        _print_json(summary)
        return
    head = Table(title=str(cache), show_header=False)
    head.add_column(style="bold")
    head.add_column()
    for key in ("schema_version", "fakeprobe_version", "created", "updated", "items", "rows",
                "rows_with_face", "crops", "staged_not_committed"):
        if key in summary:
            head.add_row(key, str(summary[key]))
    out.print(head)
    for key in ("by_label", "by_status", "by_kind", "by_dataset", "by_method"):
        table = Table(title=key.replace("_", " "))
        table.add_column(key.split("_", 1)[1])
        table.add_column("items", justify="right")
        for name, count in summary[key].items():
            table.add_row(name, str(count))
        out.print(table)
    features = Table(title="feature sets")
    for column in ("name", "dim", "items done", "weights"):
        features.add_column(column)
    for name, cfg in summary["feature_sets"].items():
        features.add_row(name, str(cfg.get("dim")), str(cfg.get("items_done")),
                         str(cfg.get("weights", cfg.get("sha256", "")))[:40])
    out.print(features)
    config = Table(title="extractor config", show_header=False)
    config.add_column(style="bold")
    config.add_column()
    for key, value in summary["extractor_config"].items():
        config.add_row(key, str(value))
    out.print(config)
    if summary["failures"]:
        out.print(_failures_table(summary["failures"],
                                  f"failures ({len(summary['failures'])})"))


@app.command()
@_handles_errors
def components(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the detectors and backbones, and which can run on this machine."""
    from fakeprobe.extractor.components import BACKBONES, DETECTORS

    data = {}
    for kind, registry in (("detector", DETECTORS), ("backbone", BACKBONES)):
        data[kind] = [
            {"name": name, "available": not registry.entry(name).missing(),
             "missing": registry.entry(name).missing(), "hint": registry.entry(name).hint,
             "description": registry.entry(name).description}
            for name in registry.names()
        ]
    if as_json:
        _print_json(data)
        return
    for kind, entries in data.items():
        table = Table(title=f"{kind}s")
        for column in ("name", "available", "description"):
            table.add_column(column)
        for entry in entries:
            available = "yes" if entry["available"] else f"no: {entry['hint']}"
            table.add_row(entry["name"], available, entry["description"])
        out.print(table)


# --- heads -------------------------------------------------------------------------------------

CacheArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="An HDF5 cache written by `fakeprobe extract`.")]
FeaturesOpt = Annotated[list[str], typer.Option(
    "--features", "-f", help="Cached feature set(s); repeat to concatenate (default: the "
    "cache's first backbone). In `compare`, each --features is one row; join with '+' to "
    "concatenate, e.g. efficientnet-lite0+spectrum.")]
DatasetOpt = Annotated[list[str], typer.Option(
    "--dataset", help="Keep items whose dataset matches (shell pattern, repeatable).")]
MethodOpt = Annotated[list[str], typer.Option(
    "--method", help="Keep items whose method matches (e.g. Deepfakes, original_*).")]
XDatasetOpt = Annotated[list[str], typer.Option(
    "--exclude-dataset", help="Drop items whose dataset matches.")]
XMethodOpt = Annotated[list[str], typer.Option(
    "--exclude-method", help="Drop items whose method matches (leave one method out).")]
AggOpt = Annotated[str, typer.Option(
    "--aggregate", help="Frame-to-video rule: mean, median, topk, logit-mean, confident.")]
SmoothOpt = Annotated[str, typer.Option(
    "--smooth", help="Temporal smoothing before aggregation: none, moving, exponential, "
    "median.")]
WindowOpt = Annotated[int, typer.Option(min=1, help="Window (frames) of moving/median "
                                        "smoothing.")]
AlphaOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of the new frame in "
                                         "exponential smoothing.")]
CvOpt = Annotated[int, typer.Option("--cv", min=2, help="Folds of grouped cross-validation.")]
HoldoutOpt = Annotated[Optional[float], typer.Option(
    min=0.05, max=0.95, help="Instead of CV: hold out this share of the groups.")]
EvalOpt = Annotated[Optional[Path], typer.Option(
    "--eval", exists=True, dir_okay=False,
    help="Instead of CV: train on CACHE (after the filters), test on every labelled item of "
    "this other cache (cross-dataset).")]
SearchOpt = Annotated[Optional[str], typer.Option(
    help="Hyperparameter search inside the training folds: grid or random.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random state of splits and heads.")]
SmoteOpt = Annotated[bool, typer.Option(
    "--smote", help="Balance classes by SMOTE oversampling inside each training fold instead "
    "of sample weights (needs fakeprobe[smote]).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _selection(dataset, method, exclude_dataset, exclude_method):
    from fakeprobe.classifiers.data import Selection

    return Selection(datasets=tuple(dataset), methods=tuple(method),
                     exclude_datasets=tuple(exclude_dataset),
                     exclude_methods=tuple(exclude_method))


def _aggregation(aggregate, smooth, window, alpha):
    from fakeprobe.classifiers.aggregate import Aggregation

    try:
        return Aggregation(method=aggregate, smoothing=smooth, window=window, alpha=alpha)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _protocol(cv, holdout, eval_cache, search, seed, smote=False):
    from fakeprobe.classifiers.api import Protocol

    if search not in (None, "grid", "random"):
        raise typer.BadParameter("use grid or random", param_hint="--search")
    return Protocol(folds=cv, holdout=holdout, eval_cache=eval_cache, search=search,
                    random_state=seed, smote=smote)


def _metrics_table(reports, title: str) -> list[Table]:
    """Two compact tables: ranking metrics and cost, then the metrics at the threshold."""
    from rich import box

    from fakeprobe.evaluation.metrics import fmt

    def table(heading: str, columns: list[str]) -> Table:
        t = Table(title=heading, box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            t.add_column(column, justify="left" if column in ("head", "features") else "right",
                         no_wrap=True, min_width=min(len(column), 9))
        return t

    ranking = table(title, ["head", "features", "video AUC", "PR-AUC", "log loss", "EER",
                            "frame AUC", "videos", "fit s", "pred s", "MiB"])
    decisions = table("at the threshold picked on training folds (video level)",
                      ["head", "features", "thr", "acc", "bal acc", "prec", "recall", "F1",
                       "spec", "FPR", "FNR", "TN/FP/FN/TP"])
    for r in reports:
        v, f, c = r.video, r.frame, r.video["confusion"]
        feats = "+".join(r.features)
        ranking.add_row(r.head, feats, fmt(v["roc_auc"]), fmt(v["pr_auc"]), fmt(v["log_loss"]),
                        fmt(v["eer"]), fmt(f["roc_auc"]), str(v["n"]), f"{r.fit_seconds:.1f}",
                        f"{r.predict_seconds:.2f}", f"{r.peak_rss_mb:.0f}")
        decisions.add_row(r.head, feats, fmt(v["threshold"], 2), fmt(v["accuracy"]),
                          fmt(v["balanced_accuracy"]), fmt(v["precision"]), fmt(v["recall"]),
                          fmt(v["f1"]), fmt(v["specificity"]), fmt(v["fpr"]), fmt(v["fnr"]),
                          f"{c['tn']}/{c['fp']}/{c['fn']}/{c['tp']}")
    return [ranking, decisions]


def _print_excluded(excluded) -> None:
    for entry in excluded:
        err.print(f"[yellow]no score[/] {entry['id']}: {entry['reason']}", highlight=False,
                  soft_wrap=True)


def _fit_command(head: str):
    def command(
        cache: CacheArg,
        out_path: Annotated[Optional[Path], typer.Option(
            "--out", "-o", dir_okay=False, help="Model file to write (the fitted pipeline "
            "and its provenance).")] = None,
        features: FeaturesOpt = [],
        dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
        exclude_method: XMethodOpt = [],
        aggregate: AggOpt = "mean", smooth: SmoothOpt = "none", window: WindowOpt = 5,
        alpha: AlphaOpt = 0.3, cv: CvOpt = 5, holdout: HoldoutOpt = None,
        eval_cache: EvalOpt = None, search: SearchOpt = None, seed: SeedOpt = 0,
        smote: SmoteOpt = False, as_json: JsonOpt = False,
    ) -> None:
        from fakeprobe.classifiers.api import fit

        selection = _selection(dataset, method, exclude_dataset, exclude_method)
        result = fit(cache, head, out_path, features=[x for f in features for x in
                                                      f.split("+")],
                     selection=selection, aggregation=_aggregation(aggregate, smooth, window,
                                                                   alpha),
                     protocol=_protocol(cv, holdout, eval_cache, search, seed, smote))
        if as_json:
            _print_json(result.to_dict())
            return
        _print_excluded(result.report.excluded)
        out.print(*_metrics_table([result.report], f"{head}: {result.report.protocol}"))
        if out_path:
            out.print(f"model written to {out_path} (threshold "
                      f"{result.report.threshold:.3f}, final fit {result.final_fit_seconds:.1f}"
                      " s)")

    command.__doc__ = (
        f"Evaluate the {head} head on a cache by grouped cross-validation (or --holdout, or "
        "--eval on another cache), then fit it on every item and save the model (--out).")
    return command


for _head in ("svm", "xgb", "logreg"):
    app.command(f"fit-{_head}")(_handles_errors(_fit_command(_head)))


@app.command()
@_handles_errors
def compare(
    cache: CacheArg,
    features: FeaturesOpt = [],
    head: Annotated[list[str], typer.Option(
        "--head", help="Heads to compare (default: svm, xgb, logreg).")] = [],
    dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
    exclude_method: XMethodOpt = [],
    aggregate: AggOpt = "mean", smooth: SmoothOpt = "none", window: WindowOpt = 5,
    alpha: AlphaOpt = 0.3, cv: CvOpt = 5, holdout: HoldoutOpt = None,
    eval_cache: EvalOpt = None, search: SearchOpt = None, seed: SeedOpt = 0,
    smote: SmoteOpt = False, as_json: JsonOpt = False,
) -> None:
    """Every head on every feature set, on identical grouped folds: one table sorted by video
    ROC-AUC, with every metric and the fit/predict time and memory."""
    from fakeprobe.classifiers.api import compare as run_compare

    selection = _selection(dataset, method, exclude_dataset, exclude_method)
    result = run_compare(
        cache, head or ["svm", "xgb", "logreg"], [tuple(f.split("+")) for f in features],
        selection=selection, aggregation=_aggregation(aggregate, smooth, window, alpha),
        protocol=_protocol(cv, holdout, eval_cache, search, seed, smote),
        progress=None if as_json else (lambda m: err.print(f"[dim]fitting {m}[/]")))
    if as_json:
        _print_json(result.to_dict())
        return
    _print_excluded(result.excluded)
    reports = result.sorted()
    out.print(*_metrics_table(reports, f"compare: {cache.name}, {reports[0].protocol}, "
                              "sorted by video ROC-AUC"))


@app.command()
@_handles_errors
def evaluate(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="A model file from fit-*.")],
    cache: CacheArg,
    dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
    exclude_method: XMethodOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """Score a cache with a saved model at its threshold and print every metric.

    The model file is a pickle: load only models you trust."""
    from fakeprobe.classifiers.api import evaluate as run_evaluate

    report, warnings = run_evaluate(model, cache, _selection(dataset, method, exclude_dataset,
                                                              exclude_method))
    for warning in warnings:
        err.print(f"[yellow]warning[/] {warning}", highlight=False)
    if as_json:
        _print_json({"report": report.to_dict(), "warnings": warnings})
        return
    _print_excluded(report.excluded)
    out.print(*_metrics_table([report], f"evaluate {model.name} on {cache.name}"))


@app.command()
@_handles_errors
def predict(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="A model file from fit-*.")],
    inputs: Annotated[list[Path], typer.Argument(exists=True, help="Videos, images, folders.",
                                                 show_default=False)],
    csv_path: Annotated[Optional[Path], typer.Option(
        "--csv", dir_okay=False, help="Also write one row per item to this CSV.")] = None,
    timeline_csv: Annotated[Optional[Path], typer.Option(
        "--timeline-csv", dir_okay=False, help="Write the per-frame scores here.")] = None,
    cache: Annotated[Optional[Path], typer.Option(
        dir_okay=False, help="Keep the extracted features in this cache (default: a "
        "temporary one).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Decoding threads.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Score new videos or images: the fake probability, the label at the model's threshold,
    the frames used and a per-frame timeline. Runs the extractor with the model's settings.

    The model file is a pickle: load only models you trust."""
    import csv as csvlib

    from fakeprobe.classifiers.api import predict as run_predict

    reporter = _ProgressReporter(err)
    with reporter:
        result = run_predict(model, inputs, cache_path=cache, workers=workers, device=device,
                             reporter=reporter)
    for warning in result.warnings:
        err.print(f"[yellow]version[/] {warning}")
    if csv_path:
        with open(csv_path, "w", newline="") as handle:
            writer = csvlib.writer(handle)
            writer.writerow(["id", "path", "status", "fake_probability", "label", "threshold",
                             "frames_used", "error"])
            for p in result.predictions:
                writer.writerow([p.id, p.path, p.status, "" if p.score is None else
                                 f"{p.score:.6f}", p.label or "", f"{result.threshold:.6f}",
                                 p.frames_used, p.error])
    if timeline_csv:
        with open(timeline_csv, "w", newline="") as handle:
            writer = csvlib.writer(handle)
            writer.writerow(["id", "frame", "time", "track", "fake_probability"])
            for p in result.predictions:
                for point in p.timeline:
                    time_s = point["time"]
                    writer.writerow([p.id, point["frame"],
                                     f"{time_s:.3f}" if math.isfinite(time_s) else "",
                                     point["track"], f"{point['score']:.6f}"])
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"predict with {model.name} (threshold {result.threshold:.3f})")
    for column in ("item", "fake probability", "label", "frames", "timeline", "note"):
        table.add_column(column, justify="right" if column in ("fake probability", "frames")
                         else "left")
    for p in result.predictions:
        table.add_row(p.id, "-" if p.score is None else f"{p.score:.3f}",
                      (f"[red]{p.label}[/]" if p.label == "fake" else p.label) or "-",
                      str(p.frames_used), _sparkline([t["score"] for t in p.timeline]),
                      p.error or ("" if p.status == "ok" else p.status))
    out.print(table)


def _sparkline(values: list[float]) -> str:
    """Frame scores (0..1) as a strip of block characters, at most 40 wide."""
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    step = max(1, len(values) // 40)
    sampled = [max(values[i : i + step]) for i in range(0, len(values), step)]
    return "".join(bars[min(int(v * len(bars)), len(bars) - 1)] for v in sampled)


def _version(value: bool) -> None:
    if value:
        out.print(f"fakeprobe {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Tell deepfake videos and images from real ones."""


def main() -> None:
    """Console-script entry point."""
    app()
