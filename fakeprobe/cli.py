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
from rich.markup import escape
from rich.table import Table

from fakeprobe import __version__
from fakeprobe.core.config import DEFAULT_BACKBONE, MAX_SAMPLED_FRAMES
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
            err.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _print_json(data: object) -> None:
    from fakeprobe.evaluation.runs import finite

    sys.stdout.write(json.dumps(finite(data), indent=2, default=str, allow_nan=False) + "\n")


ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace an existing output file even when it is of another kind (a "
    "cache, a model, a video...). An output that is one of the inputs is refused anyway.")]


def _check_outputs(outputs: list[tuple[Optional[Path], str, str]], inputs: list = (),
                   force: bool = False) -> None:
    """Refuse, before any work, the outputs (path, kind, option) that are inputs, existing
    files of another kind (unless --force), twice the same file, or not writable."""
    from fakeprobe.fileio import check_output

    given = [(Path(p), kind, option) for p, kind, option in outputs if p is not None]
    seen: dict[Path, str] = {}
    for path, kind, option in given:
        key = path.resolve()
        if key in seen:
            raise FakeprobeError(f"{option} and {seen[key]} name the same file {path}")
        seen[key] = option
        check_output(path, kind, inputs=[Path(i) for i in inputs if i is not None],
                     force=force, option=option)


def _note(message: str) -> None:
    from rich.markup import escape as escape_markup

    err.print(f"[yellow]note[/] {escape_markup(message)}", highlight=False, soft_wrap=True)


def _interrupted_line(cache_path: Path) -> str:
    """What an interrupted writer leaves: items in the cache, items only staged beside it."""
    from fakeprobe.features.cache import CacheReader, staged_files, staging_dir

    try:
        with CacheReader(cache_path) as reader:
            line = f"{cache_path} holds {reader.n_videos} committed item(s)"
    except FakeprobeError:
        line = f"no cache written at {cache_path} yet"
    staged = len(staged_files(cache_path))
    if staged:
        line += (f"; {staged} finished item(s) are staged in {staging_dir(cache_path)}, not in "
                 "the cache yet: the next run commits them")
    return line + "; run the same command again to resume"


def _backbones_and_weights(backbones: list[str], weights: list[str]
                           ) -> tuple[tuple[str, ...], dict[str, str]]:
    """``--backbone`` names and ``--weights`` files; ``-b NAME:PATH`` is ``-b NAME --weights
    NAME=PATH`` (``-b finetuned:NET.keras``)."""
    from fakeprobe.extractor.components import BACKBONES

    names, pairs = [], list(weights)
    for value in backbones:
        name, sep, path = value.partition(":")
        if sep and name in BACKBONES.names():
            if not path or not Path(path).is_file():
                raise typer.BadParameter(f"{value!r}: no such file {path!r}",
                                         param_hint="--backbone")
            names.append(name)
            pairs.append(f"{name}={path}")
        else:
            names.append(value)
    return tuple(dict.fromkeys(names)), _parse_weights(pairs)


def _cache_settings(ctx: typer.Context, cache_path: Path, settings: dict) -> dict:
    """The existing cache's values of the ``settings`` not given on the command line (so that
    adding media or a backbone needs no repeat of the first run's options); said on stderr.
    ``backbones`` not given means only the cache's own. Nothing when there is no such cache."""
    from fakeprobe.features.cache import CacheReader

    if not cache_path.is_file():
        return {}
    try:
        with CacheReader(cache_path) as reader:
            stored = reader.config.to_dict()
    except FakeprobeError:
        return {}  # the extraction says what is wrong with the file
    option = {"backbones": "backbone"}
    inherited = {}
    for name, value in settings.items():
        source = ctx.get_parameter_source(option.get(name, name))  # a ParameterSource enum
        if getattr(source, "name", None) == "DEFAULT" and name in stored:
            if name == "backbones":
                inherited[name] = tuple(stored[name])
            elif stored[name] != value:
                inherited[name] = stored[name]
    changed = {k: v for k, v in inherited.items() if k != "backbones"}
    if changed:
        err.print(f"[dim]{cache_path}'s settings for what was not given: "
                  + ", ".join(f"{k} {v}" for k, v in changed.items()) + "[/]", highlight=False)
    return inherited


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
            self.progress.console.print(f"[yellow]skip[/] {escape(item.id)}: {escape(message)}",
                                        highlight=False, soft_wrap=True)
        self.progress.advance(self.task)
        task = self.progress.tasks[self.task]
        speed = task.finished_speed or task.speed
        self.progress.update(
            self.task, rate=f"{speed:.2f} items/s" if speed else "",
            failed=f"{self.failed} failed" if self.failed else "")


BlendSeedOpt = Annotated[int, typer.Option(
    "--blend-seed", help="Seed of the self-blend parameters (one draw per item and face "
    "track, from the seed and the source's id).")]
BlendMaskOpt = Annotated[Optional[str], typer.Option(
    "--blend-mask", help="Self-blend mask: hull (of the face outline) or ellipse.")]
BlendConfigOpt = Annotated[Optional[Path], typer.Option(
    "--blend-config", exists=True, dir_okay=False,
    help="JSON of self-blend ranges (keys of fakeprobe.synth.blend.BlendConfig: mask, erode, "
    "blur, blend_ratio, scale, shift, hue, saturation, brightness, contrast, sharpen_or_blur, "
    "sharpen_amount, filter_sigma); `fakeprobe synth --show-config` prints the defaults.")]


def _blend_config(config_path: Path | None, mask: str | None):
    import dataclasses

    from fakeprobe.errors import FakeprobeError
    from fakeprobe.synth.blend import BlendConfig

    try:
        config = BlendConfig()
        if config_path is not None:
            config = BlendConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        if mask is not None:
            config = dataclasses.replace(config, mask=mask)
    except (ValueError, TypeError) as exc:
        raise FakeprobeError(f"blend settings: {exc}") from None
    return config


@app.command()
@_handles_errors
def extract(
    ctx: typer.Context,
    inputs: Annotated[list[Path], typer.Argument(
        exists=True, help="Folders (real/ and fake/ subfolders, a FaceForensics++ tree, DFDC "
        "folders with metadata.json, or unlabelled media), CSV manifests (path,label[,group]) "
        "or single videos and images.", show_default=False)],
    out_path: Annotated[Path, typer.Option("--out", "-o", dir_okay=False,
                                           help="The HDF5 cache to create or extend.")],
    frames: Annotated[int, typer.Option(min=1, max=MAX_SAMPLED_FRAMES,
                                        help="Evenly spaced frames per video.")] = 32,
    fps: Annotated[Optional[float], typer.Option(
        min=0.001, help="Sample at this rate (frames per second) instead of --frames.")] = None,
    max_frames: Annotated[int, typer.Option(min=1, max=MAX_SAMPLED_FRAMES,
                                            help="Cap per video with --fps.")] = 300,
    detector: Annotated[str, typer.Option(help="Face detector: yunet, dlib-hog or mtcnn.")
                        ] = "yunet",
    detect_size: Annotated[int, typer.Option(
        min=64, help="Longest side of the downscaled copy the detector sees.")] = 640,
    min_face_score: Annotated[Optional[float], typer.Option(
        help="Detector confidence threshold (default: the detector's own): 0 to 1, except "
        "for dlib-hog's unbounded HOG score.")] = None,
    all_faces: Annotated[bool, typer.Option(
        "--all-faces", help="Keep every face, linked into tracks across frames (default: the "
        "largest face of each frame).")] = False,
    backbone: Annotated[list[str], typer.Option(
        "--backbone", "-b", help="Feature set(s) to compute; repeat for several. See "
        "`fakeprobe components`. NAME:PATH also gives the weights file (-b "
        "finetuned:NET.keras).")] = [DEFAULT_BACKBONE],
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
    face_crops: Annotated[bool, typer.Option(
        "--face-crops", help="Every still image is one face crop (face-crop data sets such "
        "as dfdc_faces): the largest detected face is aligned on its landmarks, and an image "
        "where none is found is taken as a tight face box, centred on the face template, "
        "never dropped. Videos are unaffected. Stored in the cache's config.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Decoding/detection threads.")] = 2,
    batch_size: Annotated[int, typer.Option(min=1, help="Crops per network batch.")] = 32,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or gpu.")] = "auto",
    max_pixels: Annotated[int, typer.Option(min=1, help="Refuse frames larger than this.")
                          ] = 40_000_000,
    commit_every: Annotated[float, typer.Option(
        help="Seconds between commits of finished items into the cache.")] = 600.0,
    self_blend: Annotated[bool, typer.Option(
        "--self-blend", help="Also cache a self-blended pseudo-fake of every real item "
        "(blended in memory, never re-encoded; id ITEM#self_blend, method self_blend, in the "
        "real's group), to train on real footage alone (`--train-fakes self-blend`).")] = False,
    blend_seed: BlendSeedOpt = 0, blend_mask: BlendMaskOpt = None,
    blend_config: BlendConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")
                       ] = False,
) -> None:
    """Extract faces and features of labelled media into an HDF5 cache.

    Re-running with the same --out skips what is cached and adds what is new (more media, or
    another --backbone). A crash or Ctrl-C loses nothing: run the same command again. On an
    existing cache, the sampling, detection and crop options not given (and --backbone) are
    the cache's own.
    """
    from fakeprobe.core.config import ExtractorConfig
    from fakeprobe.pipeline.run import extract as run_extract
    from fakeprobe.pipeline.steps import SelfBlend

    if fps is not None and getattr(ctx.get_parameter_source("frames"), "name", "") != "DEFAULT":
        raise typer.BadParameter("--frames and --fps are two ways to sample; give one (with "
                                 "--fps, --max-frames caps the count)", param_hint="--fps")
    blending = (SelfBlend(_blend_config(blend_config, blend_mask), blend_seed)
                if self_blend else None)
    backbone_names, weight_files = _backbones_and_weights(backbone, weights)

    settings = dict(frames=frames, fps=fps, max_frames=max_frames, detector=detector,
                    detect_size=detect_size, min_face_score=min_face_score,
                    all_faces=all_faces, keep_crops=keep_crops, max_pixels=max_pixels,
                    face_crops=face_crops, backbones=backbone_names)
    settings.update(_cache_settings(ctx, out_path, settings))
    try:
        config = ExtractorConfig(**settings)
    except ValueError as exc:  # e.g. --min-face-score nan, which no range check catches
        raise typer.BadParameter(str(exc)) from None
    from fakeprobe.features.cache import writer as cache_writer
    from fakeprobe.fileio import check_output

    check_output(out_path, "cache", inputs=inputs, force=None, option="--out")
    reporter = _ProgressReporter(err)
    attrs = {"self_blend": blending.to_attr()} if blending else {}
    try:
        with cache_writer(out_path, config, attrs, log=_note), reporter:
            summary = run_extract(
                inputs, out_path, config, workers=workers, device=device,
                batch_size=batch_size, weights=weight_files,
                detector_weights=str(detector_weights) if detector_weights else None,
                commit_every=commit_every, frame_folders=frame_folders, reporter=reporter,
                self_blend=blending,
            )
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: {_interrupted_line(out_path)}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(130) from None
    for problem in summary.problems:
        err.print(f"[yellow]note[/] {escape(problem)}", highlight=False, soft_wrap=True)
    for warning in summary.warnings:
        err.print(f"[yellow]warning[/] {escape(warning['id'])}: {escape(warning['warning'])}",
                  highlight=False, soft_wrap=True)
    if as_json:
        _print_json(summary.to_dict())
    else:
        _print_extract_summary(summary)
    if not summary.ok:
        err.print("[red]error[/]: no item could be extracted")
        raise typer.Exit(1)


@app.command()
@_handles_errors
def synth(
    inputs: Annotated[list[Path], typer.Argument(
        help="Real videos and images, folders or manifests (items labelled fake are left "
        "out; unlabelled ones are taken as real footage).", show_default=False)] = [],
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", file_okay=False, help="Folder for the pseudo-fakes and labels.csv.")
                       ] = None,
    seed: BlendSeedOpt = 0, blend_mask: BlendMaskOpt = None,
    blend_config: BlendConfigOpt = None,
    detector: Annotated[str, typer.Option(help="Face detector: yunet, dlib-hog or mtcnn.")
                        ] = "yunet",
    detect_size: Annotated[int, typer.Option(min=64, help="Longest side the detector sees.")
                           ] = 640,
    max_frames: Annotated[Optional[int], typer.Option(
        min=1, help="Write at most this many frames per video (default: all).")] = None,
    contact_sheet: Annotated[Optional[Path], typer.Option(
        "--contact-sheet", dir_okay=False, help="Also write a PNG of real crops beside their "
        "self-blended versions (and the blend mask) to check the blends by eye.")] = None,
    show_config: Annotated[bool, typer.Option(
        "--show-config", help="Print the blend settings as JSON (a --blend-config file) and "
        "exit.")] = False,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON.")
                       ] = False,
) -> None:
    """Write self-blended pseudo-fakes of real videos and images (Shiohara & Yamasaki, CVPR
    2022): per face, a copy with colour, sharpness and scale changes, slightly warped, pasted
    back through a soft face mask; one parameter draw per video, so a video stays consistent.

    Writes OUT/self_blend/... and OUT/labels.csv (path,label,group,dataset,method,source: each
    pseudo-fake in its source real's group), ready for `fakeprobe extract OUT/labels.csv`.
    Videos are re-encoded (H.264); to train, `extract --self-blend` blends in memory instead.
    """
    from fakeprobe.errors import FakeprobeError
    from fakeprobe.synth.media import synthesize

    config = _blend_config(blend_config, blend_mask)
    if show_config:
        _print_json(config.to_dict())
        return
    if not inputs or out_dir is None:
        raise FakeprobeError("give real INPUTS and --out DIR (or --show-config)")
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FakeprobeError(f"no such file or folder: {', '.join(missing)}")
    from fakeprobe.fileio import check_output_folder

    check_output_folder(out_dir, inputs=inputs)
    _check_outputs([(contact_sheet, "image", "--contact-sheet")], inputs, force)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                        disable=as_json)
    with progress:
        task = progress.add_task("self-blending", total=None)

        def advance(item, result) -> None:
            if result.error:
                progress.console.print(f"[yellow]skip[/] {item.id}: {result.error}",
                                       highlight=False)
            progress.advance(task)

        summary = synthesize(inputs, out_dir, config=config, seed=seed, detector=detector,
                             detect_size=detect_size, max_frames=max_frames, progress=advance,
                             on_start=lambda n: progress.update(task, total=n))
    if contact_sheet is not None:
        from fakeprobe.synth.sheet import contact_sheet as make_sheet

        make_sheet([r for r in summary.results if r.status == "ok"], contact_sheet,
                   config=config, seed=seed, detector=detector, detect_size=detect_size)
        err.print(f"contact sheet written to {contact_sheet}")
    if as_json:
        _print_json(summary.to_dict())
    else:
        for problem in summary.problems:
            err.print(f"[yellow]note[/] {problem}", highlight=False)
        out.print(f"{summary.written} pseudo-fake(s) written to {out_dir}, {summary.failed} "
                  f"failed, {summary.skipped_not_real} fake input(s) left out "
                  f"({summary.seconds:.1f} s); manifest {summary.labels_csv}")
    if summary.written == 0:
        raise typer.Exit(1)


@app.command()
@_handles_errors
def sample(
    out_dir: Annotated[Path, typer.Option("--out", "-o", file_okay=False,
                                          help="Folder to write the sample into.")],
    clips: Annotated[int, typer.Option(min=2, help="Training clips per photo.")] = 6,
    holdout: Annotated[int, typer.Option(min=0, help="Held-out clips per photo (for "
                                         "predict).")] = 1,
    seconds: Annotated[float, typer.Option(min=0.2, help="Length of each clip.")] = 2.0,
    seed: BlendSeedOpt = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")
                       ] = False,
) -> None:
    """Make a small labelled video sample offline, for a first run and smoke tests.

    Real clips film face photos shipped inside installed packages with a moving virtual camera
    (pan, zoom, tilt, light drift, noise, JPEG and H.264 compression); fakes are self-blended
    versions of the same frames. OUT/labels.csv lists the training clips, OUT/holdout/labels.csv
    clips with other camera paths. It is a pipeline check, not a deepfake data set: two
    identities and self-blends only; a score on it says nothing about real manipulations.
    """
    from dataclasses import asdict

    from fakeprobe.fileio import check_output_folder
    from fakeprobe.synth.sample import make_sample

    check_output_folder(out_dir)
    summary = make_sample(out_dir, clips_per_photo=clips, holdout_per_photo=holdout,
                          seed=seed, seconds=seconds,
                          progress=None if as_json else (lambda m: err.print(f"[dim]{m}[/]")))
    if as_json:
        _print_json(asdict(summary))
        return
    for problem in summary.problems:
        err.print(f"[yellow]note[/] {problem}", highlight=False)
    out.print(f"{summary.clips} clips from {', '.join(summary.photos)} in {out_dir} "
              f"({summary.seconds:.1f} s; a face in {summary.frames_with_face} of "
              f"{summary.frames} frames); manifests {summary.labels_csv} and "
              f"{summary.holdout_csv}")


def _failures_table(failures: list[dict[str, str]], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "status", "error"):
        table.add_column(column)
    for failure in failures:
        table.add_row(escape(failure["id"]), failure["status"], escape(failure["error"]))
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
    from fakeprobe.core.schema import READ_STATUSES
    from fakeprobe.features.cache import CacheReader, summarize

    summary = summarize(cache)
    with CacheReader(cache) as reader:  # items read with a caveat, e.g. a truncated video
        videos = reader.videos()
    summary["warnings"] = [
        {"id": str(vid), "status": str(status), "error": str(error)}
        for vid, status, error in zip(videos["id"], videos["status"], videos["error"])
        if status in READ_STATUSES and error]
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
            table.add_row(escape(str(name)), str(count))
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
    if summary["warnings"]:
        out.print(_failures_table(summary["warnings"], f"read with a caveat "
                                  f"({len(summary['warnings'])}): their frames are used"))


@app.command()
@_handles_errors
def components(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the detectors and backbones, and which can run on this machine; and the
    detector bundled with fakeprobe (what `predict` uses with no --model)."""
    from fakeprobe.classifiers.model import bundled_model_info
    from fakeprobe.extractor.components import BACKBONES, DETECTORS

    data = {}
    for kind, registry in (("detector", DETECTORS), ("backbone", BACKBONES)):
        data[kind] = [
            {"name": name, "available": not registry.entry(name).missing(),
             "missing": registry.entry(name).missing(), "hint": registry.entry(name).hint,
             "description": registry.entry(name).description}
            for name in registry.names()
        ]
    data["bundled_model"] = bundled_model_info()
    if as_json:
        _print_json(data)
        return
    bundled = data.pop("bundled_model")
    if bundled.get("error"):
        err.print(f"[yellow]bundled detector[/]: {escape(bundled['error'])}", highlight=False)
    else:
        out.print(f"bundled detector (predict with no --model): {escape(bundled['name'])}, "
                  f"{bundled['head']} on {', '.join(bundled['features'])}, threshold "
                  f"{bundled['threshold']:.3f}; model card: {escape(bundled['card'])}",
                  highlight=False)
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
XGroupOpt = Annotated[list[str], typer.Option(
    "--exclude-group", help="Drop items whose group matches, e.g. 'ffpp:actor:*' (the FF++ "
    "actor originals and their pseudo-fakes).")]
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
    help="Hyperparameter search inside the training folds: grid, random or bayes (Optuna's "
    "TPE sampler, seeded; needs fakeprobe[bayes]).")]
NIterOpt = Annotated[int, typer.Option(
    "--n-iter", min=1, help="Candidates of --search random, trials of --search bayes.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random state of splits and heads.")]
SmoteOpt = Annotated[bool, typer.Option(
    "--smote", help="Balance classes by SMOTE oversampling inside each training fold instead "
    "of sample weights (needs fakeprobe[smote]).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
TrainDatasetOpt = Annotated[list[str], typer.Option(
    "--train-dataset", help="Train only on items whose dataset matches (shell pattern, "
    "repeatable); every selected item is still split by group and scored, so the other "
    "datasets are out-of-domain columns of the same folds (cross-dataset evaluation).")]
TrainMethodOpt = Annotated[list[str], typer.Option(
    "--train-method", help="Train only on fakes of these methods (and every real); the other "
    "methods are scored unseen (leave-methods-out).")]
TrainFakesOpt = Annotated[str, typer.Option(
    "--train-fakes", help="Which fakes train: all, real (true fakes only) or self-blend "
    "(pseudo-fakes from `extract --self-blend` only). Pseudo-fakes are never scored.")]
ScoreBlendOpt = Annotated[bool, typer.Option(
    "--score-self-blend", help="Also score pseudo-fakes (method self_blend), for data with no "
    "true fakes such as `fakeprobe sample`: it then measures how well blends are found, not "
    "deepfakes.")]
SaveRunOpt = Annotated[Optional[Path], typer.Option(
    "--save-run", dir_okay=False, help="Write the run record (every score, per frame too, "
    "with provenance) as JSON for `fakeprobe report`.")]
ReportOpt = Annotated[Optional[Path], typer.Option(
    "--report", dir_okay=False, help="Write a self-contained HTML report (plots, tables, "
    "timelines; a markdown summary and PNGs beside it).")]


def _selection(dataset, method, exclude_dataset, exclude_method, exclude_group=()):
    from fakeprobe.classifiers.data import Selection

    return Selection(datasets=tuple(dataset), methods=tuple(method),
                     exclude_datasets=tuple(exclude_dataset),
                     exclude_methods=tuple(exclude_method), exclude_groups=tuple(exclude_group))


def _aggregation(aggregate, smooth, window, alpha):
    from fakeprobe.classifiers.aggregate import Aggregation

    try:
        return Aggregation(method=aggregate, smoothing=smooth, window=window, alpha=alpha)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _protocol(cv, holdout, eval_cache, search, seed, smote=False, train_dataset=(),
              train_method=(), train_fakes="all", score_self_blend=False, n_iter=10):
    from fakeprobe.classifiers.api import TRAIN_FAKES, Protocol
    from fakeprobe.classifiers.data import Selection

    from fakeprobe.training.search import SEARCH_MODES

    if search not in (None, *SEARCH_MODES):
        raise typer.BadParameter(f"use {', '.join(SEARCH_MODES)}", param_hint="--search")
    if holdout is not None and eval_cache is not None:
        raise typer.BadParameter("--holdout and --eval are two different evaluations; give "
                                 "one", param_hint="--holdout")
    if train_fakes not in TRAIN_FAKES:
        raise typer.BadParameter(f"use {', '.join(TRAIN_FAKES)}", param_hint="--train-fakes")
    train_selection = None
    if train_dataset or train_method:
        # reals always train; --train-method names the fake methods that may
        train_selection = Selection(datasets=tuple(train_dataset),
                                    methods=tuple(train_method), real_any_method=True)
    return Protocol(folds=cv, holdout=holdout, eval_cache=eval_cache, search=search,
                    n_iter=n_iter, random_state=seed, smote=smote, train_selection=train_selection,
                    train_fakes=train_fakes, score_self_blend=score_self_blend)


def _run_outputs(save_run: Optional[Path], report_path: Optional[Path]) -> list:
    """The outputs of --save-run and --report (the HTML, and its markdown beside it)."""
    outputs = [(save_run, "run", "--save-run"), (report_path, "html", "--report")]
    if report_path is not None:
        from fakeprobe.evaluation.report import markdown_path

        outputs.append((markdown_path(report_path), "markdown", "--report (its markdown)"))
    return outputs


def _write_run(kind, reports, cache, protocol, selection, aggregation, excluded, save_run,
               report_path) -> None:
    """--save-run and --report of fit and compare."""
    if not (save_run or report_path):
        return
    from fakeprobe.evaluation.runs import run_record, save_run as write_run

    record = run_record(kind, reports, cache=cache, eval_cache=protocol.eval_cache,
                        selection=selection, protocol=protocol, aggregation=aggregation,
                        excluded=excluded)
    if save_run:
        write_run(save_run, record)
        err.print(f"run record written to {save_run}")
    if report_path:
        from fakeprobe.evaluation.report import write_report

        written = write_report(record, report_path)
        err.print(f"report written to {written.html} (markdown {written.markdown})")


def _metrics_table(reports, title: str) -> list[Table]:
    """Two compact tables: ranking metrics and cost, then the metrics at the threshold."""
    from rich import box

    from fakeprobe.classifiers.metrics import fmt

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
        err.print(f"[yellow]no score[/] {escape(entry['id'])}: {escape(entry['reason'])}",
                  highlight=False,
                  soft_wrap=True)


def _fit_command(head: str):
    def command(
        cache: CacheArg,
        out_path: Annotated[Optional[Path], typer.Option(
            "--out", "-o", dir_okay=False, help="Model file to write (the fitted pipeline "
            "and its provenance).")] = None,
        features: FeaturesOpt = [],
        dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
        exclude_method: XMethodOpt = [], exclude_group: XGroupOpt = [],
        aggregate: AggOpt = "mean", smooth: SmoothOpt = "none", window: WindowOpt = 5,
        alpha: AlphaOpt = 0.3, cv: CvOpt = 5, holdout: HoldoutOpt = None,
        eval_cache: EvalOpt = None, search: SearchOpt = None, n_iter: NIterOpt = 10,
        seed: SeedOpt = 0, smote: SmoteOpt = False, train_dataset: TrainDatasetOpt = [],
        train_method: TrainMethodOpt = [], train_fakes: TrainFakesOpt = "all",
        score_self_blend: ScoreBlendOpt = False, save_run: SaveRunOpt = None,
        report: ReportOpt = None, force: ForceOpt = False, as_json: JsonOpt = False,
    ) -> None:
        from fakeprobe.classifiers.api import fit

        _check_outputs([(out_path, "model", "--out"), *_run_outputs(save_run, report)],
                       [cache, eval_cache], force)
        selection = _selection(dataset, method, exclude_dataset, exclude_method, exclude_group)
        aggregation = _aggregation(aggregate, smooth, window, alpha)
        protocol = _protocol(cv, holdout, eval_cache, search, seed, smote, train_dataset,
                             train_method, train_fakes, score_self_blend, n_iter)
        result = fit(cache, head, out_path, features=[x for f in features for x in
                                                      f.split("+")],
                     selection=selection, aggregation=aggregation, protocol=protocol)
        _write_run("fit", [result.report], cache, protocol, selection, aggregation,
                   result.report.excluded, save_run, report)
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


for _head in ("svm", "xgb", "logreg", "gru", "stack"):
    app.command(f"fit-{_head}")(_handles_errors(_fit_command(_head)))


@app.command()
@_handles_errors
def compare(
    cache: CacheArg,
    features: FeaturesOpt = [],
    head: Annotated[list[str], typer.Option(
        "--head", help="Heads to compare (default: svm, xgb, logreg).")] = [],
    dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
    exclude_method: XMethodOpt = [], exclude_group: XGroupOpt = [],
    aggregate: AggOpt = "mean", smooth: SmoothOpt = "none", window: WindowOpt = 5,
    alpha: AlphaOpt = 0.3, cv: CvOpt = 5, holdout: HoldoutOpt = None,
    eval_cache: EvalOpt = None, search: SearchOpt = None, n_iter: NIterOpt = 10,
    seed: SeedOpt = 0, smote: SmoteOpt = False, train_dataset: TrainDatasetOpt = [],
    train_method: TrainMethodOpt = [], train_fakes: TrainFakesOpt = "all",
    score_self_blend: ScoreBlendOpt = False, save_run: SaveRunOpt = None,
    report: ReportOpt = None, force: ForceOpt = False, as_json: JsonOpt = False,
) -> None:
    """Every head on every feature set, on identical grouped folds: one table sorted by video
    ROC-AUC, with every metric and the fit/predict time and memory. With --train-dataset the
    same folds give in-domain and out-of-domain scores side by side."""
    from fakeprobe.classifiers.api import compare as run_compare

    _check_outputs(_run_outputs(save_run, report), [cache, eval_cache], force)
    selection = _selection(dataset, method, exclude_dataset, exclude_method, exclude_group)
    aggregation = _aggregation(aggregate, smooth, window, alpha)
    protocol = _protocol(cv, holdout, eval_cache, search, seed, smote, train_dataset,
                         train_method, train_fakes, score_self_blend, n_iter)
    result = run_compare(
        cache, head or ["svm", "xgb", "logreg"], [tuple(f.split("+")) for f in features],
        selection=selection, aggregation=aggregation, protocol=protocol,
        progress=None if as_json else (lambda m: err.print(f"[dim]fitting {m}[/]")))
    _write_run("compare", result.reports, cache, protocol, selection, aggregation,
               result.excluded, save_run, report)
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
    exclude_method: XMethodOpt = [], exclude_group: XGroupOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """Score a cache with a saved model at its threshold and print every metric.

    Loading a model file runs no code from it (skops data, trusted types only)."""
    from fakeprobe.classifiers.api import evaluate as run_evaluate

    report, warnings = run_evaluate(model, cache, _selection(
        dataset, method, exclude_dataset, exclude_method, exclude_group))
    for warning in warnings:
        err.print(f"[yellow]warning[/] {warning}", highlight=False)
    if as_json:
        _print_json({"report": report.to_dict(), "warnings": warnings})
        return
    _print_excluded(report.excluded)
    out.print(*_metrics_table([report], f"evaluate {model.name} on {cache.name}"))


def _csv_text(value: str) -> str:
    """A text cell that a spreadsheet will not run: one starting with ``= + - @`` (or a tab
    or carriage return) gets a leading ``'`` (OWASP's advice against CSV injection)."""
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r")) else value


@app.command()
@_handles_errors
def predict(
    inputs: Annotated[list[Path], typer.Argument(
        exists=True, help="Videos, images, folders. (The older form `predict MODEL "
        "INPUT...` still works: a first argument that is a model file is taken as --model.)",
        show_default=False)],
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", exists=True, dir_okay=False,
        help="A model file from fit-* (default: the detector bundled with fakeprobe, a "
        "logistic regression on the shipped `forensic` encoder).")] = None,
    face_crops: Annotated[bool, typer.Option(
        "--face-crops", help="The images are face crops: one face each, centred on the face "
        "template when the detector finds none (see `extract --face-crops`).")] = False,
    csv_path: Annotated[Optional[Path], typer.Option(
        "--csv", dir_okay=False, help="Also write one row per item to this CSV.")] = None,
    timeline_csv: Annotated[Optional[Path], typer.Option(
        "--timeline-csv", dir_okay=False, help="Write the per-frame scores here.")] = None,
    cache: Annotated[Optional[Path], typer.Option(
        dir_okay=False, help="Keep the extracted features in this cache (default: a "
        "temporary one).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Decoding threads.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score new videos or images: the fake probability, the label at the model's threshold,
    the frames used and a per-frame timeline. Runs the extractor with the model's settings.

    With no --model, the detector bundled with fakeprobe scores them (its name and threshold
    are printed); `fakeprobe components` says what it was trained on."""
    import csv as csvlib

    from fakeprobe.classifiers.api import predict as run_predict
    from fakeprobe.classifiers.model import read_provenance

    def is_model_file(path: Path) -> bool:
        try:
            return path.is_file() and bool(read_provenance(path))
        except FakeprobeError:
            return False

    if model is None and is_model_file(inputs[0]):
        if len(inputs) == 1:
            raise FakeprobeError(f"{inputs[0]} is a model file: name the videos or images "
                                 "to score after it (or use --model)")
        model, inputs = inputs[0], inputs[1:]
    _check_outputs([(csv_path, "csv", "--csv"), (timeline_csv, "csv", "--timeline-csv"),
                    (cache, "cache", "--cache")], [model, *inputs], force)
    reporter = _ProgressReporter(err)
    with reporter:
        result = run_predict(model, inputs, cache_path=cache, workers=workers, device=device,
                             reporter=reporter, face_crops=face_crops)
    if result.bundled:
        err.print(f"[dim]scored by the bundled detector {result.model_name} (threshold "
                  f"{result.threshold:.3f}); --model PATH uses your own[/]", highlight=False)
    for warning in result.warnings:
        err.print(f"[yellow]version[/] {warning}")
    from fakeprobe.fileio import atomic_path

    if csv_path:
        with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csvlib.writer(handle)
            writer.writerow(["id", "path", "status", "fake_probability", "label", "threshold",
                             "frames_used", "error"])
            for p in result.predictions:
                writer.writerow([_csv_text(p.id), _csv_text(p.path), p.status,
                                 "" if p.score is None else f"{p.score:.6f}", p.label or "",
                                 f"{result.threshold:.6f}", p.frames_used, _csv_text(p.error)])
    if timeline_csv:
        with atomic_path(timeline_csv) as tmp, open(tmp, "w", newline="") as handle:
            writer = csvlib.writer(handle)
            writer.writerow(["id", "frame", "time", "track", "fake_probability"])
            for p in result.predictions:
                for point in p.timeline:
                    time_s = point["time"]
                    writer.writerow([_csv_text(p.id), point["frame"],
                                     f"{time_s:.3f}" if math.isfinite(time_s) else "",
                                     point["track"], f"{point['score']:.6f}"])
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"predict with {result.model_name} (threshold {result.threshold:.3f})")
    for column in ("item", "fake probability", "label", "frames", "timeline", "note"):
        table.add_column(column, justify="right" if column in ("fake probability", "frames")
                         else "left")
    for p in result.predictions:
        table.add_row(escape(p.id), "-" if p.score is None else f"{p.score:.3f}",
                      (f"[red]{p.label}[/]" if p.label == "fake" else p.label) or "-",
                      str(p.frames_used), _sparkline([t["score"] for t in p.timeline]),
                      escape(p.error) or ("" if p.status == "ok" else p.status))
    out.print(table)


@app.command()
@_handles_errors
def explain(
    model: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="A model file from fit-*.")],
    cache: CacheArg,
    out_dir: Annotated[Path, typer.Option(
        "--out", "-o", file_okay=False, help="Folder for one PNG per item (<id with / as "
        "_>.png) and explanations.json.")],
    ids: Annotated[list[str], typer.Option(
        "--id", help="Item to explain, as its id in the cache (repeatable; see `fakeprobe "
        "info`).")] = [],
    top_fakes: Annotated[Optional[int], typer.Option(
        min=1, help="Also explain the N items the model scores most fake (default 5 when no "
        "--id is given).")] = None,
    top_frames: Annotated[int, typer.Option(
        min=1, help="Frames explained per item: the highest-scoring ones.")] = 4,
    fill: Annotated[str, typer.Option(
        help="What hides an occluded patch: blur (a heavy blur of the same region: no texture, "
        "no new edge) or grey.")] = "blur",
    patch: Annotated[Optional[int], typer.Option(
        min=1, help="Occluding patch side in pixels of the face crop (default: a fifth of the "
        "crop); the stride is half of it.")] = None,
    space: Annotated[str, typer.Option(
        help="Heat units: logit (drop in the log-odds of fake when hidden: readable even for "
        "scores near 0 or 1) or proba (drop in P(fake)).")] = "logit",
    weights: Annotated[list[str], typer.Option(
        help="Local weights for a backbone, as BACKBONE=PATH, when the model was extracted "
        "with such weights.")] = [],
    device: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print explanations.json to stdout as well.")] = False,
) -> None:
    """Show which frames and which face regions drove a model's score of cached items.

    Per item: the frame scores over time (the timeline, with the model's smoothing and
    threshold) and, for its top frames, the aligned face crop with an occlusion-sensitivity
    heatmap (Zeiler & Fergus 2014): a patch slides over the face, each hidden copy is scored
    through the model's backbones and head, and red marks regions whose hiding lowers P(fake),
    i.e. regions that made the face look fake. explanations.json names the hottest regions
    (eyes, nose, mouth, cheeks, forehead, chin, jaw line/boundary, background; left/right as seen
    in the image).

    Crops come from the cache (--keep-crops) when they are large enough for every backbone,
    otherwise the frames are re-read from the items' paths. Loading a model file runs no code
    from it (skops data, trusted types only)."""
    from fakeprobe.evaluation.explain import explain_items
    from fakeprobe.fileio import check_output_folder

    check_output_folder(out_dir, inputs=[model, cache])
    if fill not in ("blur", "grey"):
        raise typer.BadParameter("use blur or grey", param_hint="--fill")
    if space not in ("logit", "proba"):
        raise typer.BadParameter("use logit or proba", param_hint="--space")
    result = explain_items(
        model, cache, out_dir, ids=ids, top_fakes=top_fakes if top_fakes or ids else 5,
        top_k=top_frames, patch=patch, fill=fill, space=space, device=device,
        weights=_parse_weights(weights),
        progress=None if as_json else (lambda i: err.print(f"[dim]explaining {i}[/]",
                                                           highlight=False)))
    for warning in dict.fromkeys(w for item in result.items for w in item.warnings):
        err.print(f"[yellow]warning[/] {warning}", highlight=False)
    for failure in result.failures:
        err.print(f"[yellow]skip[/] {escape(failure['id'])}: {escape(failure['error'])}",
                  highlight=False,
                  soft_wrap=True)
    if as_json:
        _print_json(result.to_dict())
        return
    table = Table(title=f"explain {model.name} on {cache.name}")
    for column in ("item", "score", "label", "true", "top frames (frame: score)",
                   "hottest regions (#1)", "s"):
        table.add_column(column, justify="right" if column in ("score", "s") else "left")
    for item in result.items:
        top = item.top_frames
        table.add_row(escape(item.id), f"{item.score:.3f}", item.label, item.true_label or "-",
                      ", ".join(f"{f.frame_index}: {f.score:.2f}" for f in top),
                      ", ".join(r["region"] for r in top[0].regions) or "-",
                      f"{item.seconds:.1f}")
    out.print(table)
    out.print(f"{len(result.pngs)} figures and {result.json_path} written in "
              f"{result.seconds:.1f} s")


def _explanations(record: dict, run: Path, model: Path | None, cache: Path | None, n: int
                  ) -> list[tuple[str, bytes]]:
    """(title, PNG) occlusion explanations of the ``n`` most fake-scored items of the cache."""
    from fakeprobe.classifiers.model import load_model
    from fakeprobe.errors import FakeprobeError
    from fakeprobe.evaluation.explain import (ModelScorer, explain_video, render_explanation,
                                              top_scoring)

    model_path = model or (run if record.get("model") else None)
    if model_path is None:
        raise FakeprobeError("--explain needs a model: pass a model file, or --model MODEL")
    cache_path = cache or Path(record.get("cache", {}).get("path") or "")
    if not cache_path.is_file():
        raise FakeprobeError(f"--explain needs the cache; {cache_path} is not there (--cache)")
    loaded = load_model(model_path)
    scorer = ModelScorer(loaded)
    out = []
    for video_id, score in top_scoring(loaded, cache_path, n):
        err.print(f"[dim]explaining {video_id}[/]")
        expl = explain_video(loaded, cache_path, video_id, scorer=scorer)
        out.append((f"{video_id} (video score {score:.3f})", render_explanation(expl)))
    return out


@app.command()
@_handles_errors
def report(
    run: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, metavar="RUN_OR_MODEL", help="A run record (`compare "
        "--save-run RUN.json`) or a model file from fit-* (its stored evaluation).")],
    out_path: Annotated[Path, typer.Option(
        "--out", "-o", dir_okay=False, help="The HTML file to write; the markdown summary "
        "(.md) and the figures (<stem>_files/) go beside it.")],
    timelines: Annotated[int, typer.Option(
        min=0, help="Timelines of the most fake-scored fakes, and as many of reals, for the "
        "best evaluation (0: none).")] = 6,
    explain: Annotated[int, typer.Option(
        "--explain", min=0, help="Occlusion heatmaps (which face regions drove the score) for "
        "the N most fake-scored items, through the model's extractor and head: needs a model "
        "(RUN_OR_MODEL, or --model) and the cache (the run's, or --cache).")] = 0,
    model: Annotated[Optional[Path], typer.Option(
        "--model", exists=True, dir_okay=False, help="The model to explain with, when "
        "RUN_OR_MODEL is a run record.")] = None,
    cache: Annotated[Optional[Path], typer.Option(
        "--cache", exists=True, dir_okay=False, help="The cache to explain items of (default: "
        "the one the run was made on).")] = None,
    force: ForceOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the written paths as JSON.")
                       ] = False,
) -> None:
    """Write one self-contained HTML report of a run: every metric, ROC/PR/calibration curves,
    confusion matrices, cross-dataset and per-method tables, per-frame timelines with face
    thumbnails, failures and provenance. It opens offline (images inlined); a markdown summary
    and the PNGs are written beside it.

    Of a model file, only its provenance and stored evaluation (JSON) are read here."""
    from fakeprobe.evaluation.report import write_report
    from fakeprobe.evaluation.runs import load_run

    from fakeprobe.evaluation.report import markdown_path

    _check_outputs([(out_path, "html", "--out"),
                    (markdown_path(out_path), "markdown", "--out (its markdown)")],
                   [run, model, cache], force)
    record = load_run(run)
    explanations = []
    if explain:
        explanations = _explanations(record, run, model, cache, explain)
    written = write_report(record, out_path, timelines=timelines, explanations=explanations)
    if as_json:
        _print_json(written.to_dict())
        return
    out.print(f"report written to {written.html} (markdown {written.markdown}, "
              f"{written.images} figures in {written.figures})", highlight=False)


@app.command()
@_handles_errors
def finetune(
    cache: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="A cache made with `fakeprobe extract --keep-crops "
        "N`: training reads its stored face crops, no video is decoded.")],
    out_path: Annotated[Path, typer.Option(
        "--out", "-o", dir_okay=False, help="The model to write (.keras): the best epoch on "
        "validation, provenance inside and in OUT.json. OUT.ckpt/ keeps the last epoch: "
        "running the same command again resumes after it.")],
    base: Annotated[str, typer.Option(
        help="ImageNet network to fine-tune (offline weights): mobilenet-v2 or "
        "efficientnet-lite0.")] = "mobilenet-v2",
    input_size: Annotated[Optional[int], typer.Option(
        min=32, max=1024, help="Network input in pixels, cut from the stored crops at the "
        "same margin (default: the stored crop size, at most 224).")] = None,
    epochs: Annotated[int, typer.Option(
        min=1, help="Total epochs (raise it and re-run to train on from the checkpoint).")
                      ] = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="Crops per training step.")] = 32,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-4,
    schedule: Annotated[str, typer.Option(
        help="Learning-rate schedule: constant, or cosine (linear warm-up over --warmup "
        "epochs, then a half cosine down to lr/100 at the last epoch).")] = "constant",
    warmup: Annotated[float, typer.Option(
        min=0.0, help="Warm-up epochs of the cosine schedule.")] = 0.0,
    clipnorm: Annotated[Optional[float], typer.Option(
        min=0.0, help="Clip each weight's gradient to this norm (steadier at higher "
        "learning rates).")] = None,
    val_fraction: Annotated[float, typer.Option(
        min=0.0, max=0.5, help="Share of the groups held out for validation (a fold of a "
        "stratified grouped K-fold, K = 1 / fraction; a fake and its source real stay on one "
        "side); 0 trains on everything and keeps the last epoch.")] = 0.2,
    val_fold: Annotated[int, typer.Option(
        min=0, help="Which of the K folds validates (to try another grouped split).")] = 0,
    patience: Annotated[int, typer.Option(
        min=1, help="Stop after this many epochs without a better validation --monitor.")
                        ] = 3,
    monitor: Annotated[str, typer.Option(
        help="What early stopping and the best model follow: auc (frame ROC-AUC), video-auc "
        "(ROC-AUC of each item's mean frame score) or loss (class-balanced log loss).")
                       ] = "auc",
    fakes: Annotated[str, typer.Option(
        help="Fakes to train on: all, real (true fakes only) or self-blend (only the "
        "pseudo-fakes whose method is self_blend). Validation uses true fakes whenever its "
        "groups hold any.")] = "all",
    dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
    exclude_method: XMethodOpt = [], exclude_group: XGroupOpt = [],
    frames_per_item: Annotated[int, typer.Option(
        min=0, help="At most this many evenly spaced face crops per item (0: all).")] = 0,
    augment: Annotated[str, typer.Option(
        help="On-the-fly augmentations, comma-separated: flip, jitter (colour), blur "
        "(Gaussian), jpeg (re-compression at quality 30-95), cutout; or none.")
                       ] = "flip,jitter,blur,jpeg,cutout",
    dropout: Annotated[float, typer.Option(
        min=0.0, max=0.95, help="Dropout before and after the embedding layer.")] = 0.3,
    embedding_dim: Annotated[int, typer.Option(
        min=2, help="Size of the embedding layer, the feature set the `finetuned` backbone "
        "gives.")] = 128,
    freeze_until: Annotated[int, typer.Option(
        min=-1, help="Keep the first N layers of the base frozen (0: train all; -1: train "
        "the head only).")] = 0,
    allow_upsample: Annotated[bool, typer.Option(
        "--allow-upsample", help="Allow an input larger than the stored crops (upsampled; "
        "adds no detail).")] = False,
    restart: Annotated[bool, typer.Option(
        "--restart", help="Discard OUT.ckpt/ and start from the ImageNet weights.")] = False,
    force: ForceOpt = False,
    seed: SeedOpt = 0,
    device: Annotated[str, typer.Option(
        help="auto (GPU when present, then with mixed float16), cpu or gpu.")] = "auto",
    as_json: JsonOpt = False,
) -> None:
    """Fine-tune an ImageNet network on real vs fake face crops stored in a cache.

    Splits by group, balances classes, augments on the fly, keeps the best epoch on validation
    and checkpoints every epoch (Ctrl-C, then the same command, resumes). Use the result as a
    feature set: `fakeprobe extract DATA --out CACHE -b finetuned:OUT`
    (on a cache with stored crops, nothing is decoded).
    """
    from fakeprobe.training.finetune import AugmentConfig, FinetuneConfig
    from fakeprobe.training.finetune import finetune as run_finetune

    _check_outputs([(out_path, "keras", "--out")], [cache], force)
    steps = [s.strip() for s in augment.split(",") if s.strip() and s.strip() != "none"]
    try:
        augmentation = AugmentConfig.only(steps)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--augment") from None
    config = FinetuneConfig(
        base=base, input_size=input_size, epochs=epochs, batch_size=batch_size, lr=lr,
        val_fraction=val_fraction, val_fold=val_fold, patience=patience, monitor=monitor,
        fakes=fakes, augment=augmentation, dropout=dropout, embedding_dim=embedding_dim,
        freeze_until=freeze_until, frames_per_item=frames_per_item,
        allow_upsample=allow_upsample, seed=seed, schedule=schedule, warmup=warmup,
        clipnorm=clipnorm)
    reporter = _FinetuneReporter(err)
    try:
        with reporter:
            result = run_finetune(
                cache, out_path, config, device=device, restart=restart, progress=reporter,
                selection=_selection(dataset, method, exclude_dataset, exclude_method,
                                     exclude_group))
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished epochs are saved in {out_path}.ckpt; run "
                  "the same command again to resume")
        raise typer.Exit(130) from None
    for warning in result.warnings:
        err.print(f"[yellow]note[/] {warning}", highlight=False)
    if as_json:
        _print_json(result.to_dict())
        return
    out.print(f"{result.base} {result.input_size}px: best epoch {result.best_epoch} of "
              f"{result.epochs_run} (validation {result.monitor} {result.best_value:.3f}; "
              f"{result.train_items} training / {result.val_items} validation items"
              f"{', stopped early' if result.stopped_early else ''}) -> {result.model_path}",
              highlight=False)


class _FinetuneReporter:
    """A progress bar over the batches of the running epoch, and one line per finished epoch."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=True)
        self.task = None

    def __enter__(self) -> "_FinetuneReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def message(self, text: str) -> None:
        self.progress.console.print(f"[dim]{text}[/]", highlight=False)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("epoch", total=batches, epoch=f"{epoch}/{epochs}",
                                           loss="")

    def batch(self, done: int, loss: float) -> None:
        self.progress.update(self.task, completed=done, loss=f"{loss:.4f}")

    def end_epoch(self, log) -> None:
        def num(value: float) -> str:
            return f"{value:.4f}" if math.isfinite(value) else "-"

        self.progress.console.print(
            f"epoch {log.epoch:3d}  loss {num(log.train_loss)}  val loss {num(log.val_loss)}  "
            f"val AUC {num(log.val_auc)}  video AUC {num(log.val_video_auc)}  "
            f"{log.seconds:6.1f} s  {log.crops_per_second:5.1f} crops/s"
            f"{'  [green]best[/]' if log.improved else ''}", highlight=False)


@app.command()
@_handles_errors
def derive(
    cache: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, help="An HDF5 cache written by `fakeprobe extract`; the "
        "new feature sets are added to it (staged, then committed atomically).")],
    temporal: Annotated[list[str], typer.Option(
        "--temporal", "-t", metavar="BASE", help="Add BASE-temporal for the cached feature set "
        "BASE (repeatable): per face track, 9 statistics of how its BASE vectors change over "
        "time: cosine distance between consecutive frames (mean, std, max), per-dimension std "
        "(mean, median), cosine distance to the track mean (mean, std), the von Neumann ratio "
        "(flicker vs drift) and a one-row flag.")] = [],
    landmarks: Annotated[bool, typer.Option(
        "--landmarks", help="Add `landmarks`: per face track, 20 statistics of landmark "
        "stability with the head motion removed (similarity-aligned on the ArcFace template): "
        "speed of each of the 5 points (mean, std, 90th percentile, per second), residual of "
        "the similarity fit (mean, std), scale speed and its mismatch with the detector box, "
        "and a one-row flag (images).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Derive video-level (temporal) feature sets from what a cache holds, without decoding.

    Each face track's statistics are stored on every face row of that track (rows without a
    face stay empty), so heads use them like any other feature set, alone or joined with '+':
    `fakeprobe compare CACHE -f landmarks -f mobilenet-v2+mobilenet-v2-temporal`. The stored
    config names the recipe version and the base set's weights, so a model refuses a cache
    where they were derived otherwise. Re-running skips the items already done; a crash or
    Ctrl-C loses nothing. Do not run it while `fakeprobe extract` writes the same cache.
    """
    from fakeprobe.features.temporal import LANDMARKS, TEMPORAL_SUFFIX
    from fakeprobe.features.temporal import derive as run_derive

    names = ([LANDMARKS] if landmarks else []) + [f"{b}{TEMPORAL_SUFFIX}" for b in temporal]
    if not names:
        raise FakeprobeError("nothing to derive: give --landmarks and/or --temporal BASE")
    from fakeprobe.features.cache import writer as cache_writer

    try:
        with cache_writer(cache, log=_note):
            summary = run_derive(cache, names)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: {_interrupted_line(cache)}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(130) from None
    if as_json:
        _print_json(summary.to_dict())
        return
    table = Table(title=f"derive -> {cache} ({summary.seconds:.1f} s)")
    for column in ("feature set", "dim", "items computed now", "already done",
                   "base not extracted"):
        table.add_column(column, justify="left" if column == "feature set" else "right")
    for name, counts in summary.feature_sets.items():
        table.add_row(name, str(counts["dim"]), str(counts["computed"]),
                      str(counts["already_done"]), str(counts["no_base"]))
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


@app.command()
@_handles_errors
def serve(
    model: Annotated[Optional[list[Path]], typer.Option(
        "--model", "-m", exists=True, dir_okay=False,
        help="A model file to offer beside the bundled detector (repeatable).")] = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on; any but 127.0.0.1/localhost/::1 needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    token: Annotated[Optional[str], typer.Option(
        envvar="FAKEPROBE_TOKEN", show_envvar=True,
        help="Required on every request (Authorization: Bearer TOKEN).")] = None,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest upload.")] = 500.0,
    max_video_frames: Annotated[int, typer.Option(
        min=1, help="Longest video accepted, in frames.")] = 54_000,
    queue: Annotated[int, typer.Option(
        "--queue", min=1, help="Jobs that may wait; more are answered 503.")] = 16,
    batch: Annotated[int, typer.Option(
        min=1, help="Waiting jobs scored together in one extraction run.")] = 4,
    keep_jobs: Annotated[int, typer.Option(
        min=1, help="Finished jobs whose results are kept.")] = 100,
    workers: Annotated[int, typer.Option(min=1, help="Decoding threads.")] = 2,
    device: Annotated[str, typer.Option(help="auto, cpu or gpu.")] = "auto",
) -> None:
    """Serve a web page and a REST API that score uploaded videos and images, with the
    models and networks loaded once. The page is at http://HOST:PORT/, the API's OpenAPI
    description at /openapi.json."""
    from fakeprobe.serve import ServeConfig, check_host, serve as run_server

    check_host(host, token)
    config = ServeConfig(models=list(model or []), token=token, max_upload_mb=max_upload_mb,
                         max_video_frames=max_video_frames, max_queued=queue, batch_size=batch,
                         keep_jobs=keep_jobs, workers=workers, device=device)
    err.print(f"loading the models; then serving on http://{host}:{port}/ (Ctrl-C stops)",
              highlight=False)
    run_server(config, host=host, port=port)


def main() -> None:
    """Console-script entry point."""
    app()
