"""Commands that read media: ``extract``, ``synth`` and ``sample``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fakeprobe.cli._base import app, dim, err, given, handles_errors, note, out, print_json
from fakeprobe.cli.options import (DETECTOR_HELP, BlendConfigOpt, BlendMaskOpt, BlendSeedOpt,
                                   ForceOpt, names)
from fakeprobe.core.config import DEFAULT_BACKBONE, DEFAULT_DETECT_SIZE, MAX_SAMPLED_FRAMES

#: extract's options that are extractor settings (stored in the cache; taken from an existing
#: cache when not given), by parameter name -> ExtractorConfig field.
SETTINGS = {"frames": "frames", "fps": "fps", "max_frames": "max_frames",
            "detector": "detector", "detect_size": "detect_size",
            "keyframes_only": "keyframes_only",
            "min_face_score": "min_face_score", "all_faces": "all_faces",
            "keep_crops": "keep_crops", "max_pixels": "max_pixels", "face_crops": "face_crops",
            "augment": "augment", "backbone": "backbones"}


@app.command()
@handles_errors
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
    detector: Annotated[str, typer.Option(help=DETECTOR_HELP)] = "yunet",
    detect_size: Annotated[int, typer.Option(
        min=64, help="Longest side of the downscaled copy the detector sees.")
        ] = DEFAULT_DETECT_SIZE,
    keyframes_only: Annotated[bool, typer.Option(
        "--keyframes-only", help="Take the key frame nearest each sampled frame and decode "
        "key frames only: much faster on long videos, frames up to half a group of pictures "
        "(a few seconds) from the even spacing. Stored in the cache's config.")] = False,
    min_face_score: Annotated[Optional[float], typer.Option(
        help="Detector confidence threshold (default: the detector's own): 0 to 1, except "
        "for dlib-hog's unbounded HOG score.")] = None,
    all_faces: Annotated[bool, typer.Option(
        "--all-faces", help="Keep every face, linked into tracks across frames (default: the "
        "largest face of each frame).")] = False,
    backbone: Annotated[list[str], typer.Option(
        "--backbone", "-b", help=f"Feature set(s) to compute ({names('backbone')}); repeat "
        "for several. See `fakeprobe components`. NAME:PATH also gives the weights file (-b "
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
    augment: Annotated[str, typer.Option(
        help="Extra training rows per face from transformed aligned crops, comma-separated "
        "NAME[:PARAM][*COPIES]: flip, jpeg[:QUALITY], blur[:SIGMA], noise[:STD], scale[:FACTOR] "
        "(e.g. flip,jpeg:60*2). Marked in the cache; used to train, never scored. Stored in "
        "the cache's config.")] = "",
    workers: Annotated[int, typer.Option(min=1, help="Decoding/detection threads; with "
                                         "--engine dask, local worker processes.")] = 2,
    engine: Annotated[str, typer.Option(help="local (this process) or dask (a Dask cluster: "
                                        'pip install "fakeprobe\\[dask]").')] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="With --engine dask: the scheduler (tcp://HOST:8786); its workers must see "
        "--out's folder at the same path (a shared filesystem). Default: a local cluster.")
        ] = None,
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
    from fakeprobe.app.media import extract as run_extract, interrupted_note
    from fakeprobe.cli.render import ProgressReporter, extract_summary

    values = locals()
    settings = {SETTINGS[p]: values[p] for p in given(ctx, *SETTINGS)}
    reporter = ProgressReporter(err)
    try:
        with reporter:
            result = run_extract(
                inputs, out_path, workers=workers, batch_size=batch_size, device=device,
                weights=weights, detector_weights=detector_weights, commit_every=commit_every,
                frame_folders=frame_folders, self_blend=self_blend, blend_seed=blend_seed,
                blend_mask=blend_mask, blend_config_file=blend_config, reporter=reporter,
                log=note, engine=engine, address=address, **settings)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: {escape(interrupted_note(out_path))}",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    summary = result.summary
    for problem in summary.problems:
        note(problem)
    for warning in summary.warnings:
        err.print(f"[yellow]warning[/] {escape(warning['id'])}: {escape(warning['warning'])}",
                  highlight=False, soft_wrap=True)
    if as_json:
        print_json(result)
    else:
        err.print(*extract_summary(summary))
    if not result.ok:
        err.print("[red]error[/]: no item could be extracted")
        raise typer.Exit(1)


@app.command()
@handles_errors
def synth(
    inputs: Annotated[list[Path], typer.Argument(
        help="Real videos and images, folders or manifests (items labelled fake are left "
        "out; unlabelled ones are taken as real footage).", show_default=False)] = [],
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", file_okay=False, help="Folder for the pseudo-fakes and labels.csv.")
                       ] = None,
    seed: BlendSeedOpt = 0, blend_mask: BlendMaskOpt = None,
    blend_config: BlendConfigOpt = None,
    detector: Annotated[str, typer.Option(help=DETECTOR_HELP)] = "yunet",
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from fakeprobe.app.media import synth as run_synth
    from fakeprobe.app.options import blend_config as make_blend_config
    from fakeprobe.errors import FakeprobeError

    if show_config:
        print_json(make_blend_config(blend_config, blend_mask).to_dict())
        return
    if not inputs or out_dir is None:
        raise FakeprobeError("give real INPUTS and --out DIR (or --show-config)")
    progress = Progress("[progress.description]{task.description}", BarColumn(),
                        MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                        disable=as_json)
    with progress:
        task = progress.add_task("self-blending", total=None)

        def advance(item, result) -> None:
            if result.error:
                progress.console.print(f"[yellow]skip[/] {escape(item.id)}: "
                                       f"{escape(result.error)}", highlight=False)
            progress.advance(task)

        summary = run_synth(inputs, out_dir, seed=seed, blend_mask=blend_mask,
                            blend_config_file=blend_config, detector=detector,
                            detect_size=detect_size, max_frames=max_frames,
                            contact_sheet=contact_sheet, force=force, progress=advance,
                            on_start=lambda n: progress.update(task, total=n))
    if contact_sheet is not None:
        err.print(f"contact sheet written to {contact_sheet}")
    if as_json:
        print_json(summary)
    else:
        for problem in summary.problems:
            note(problem)
        out.print(f"{summary.written} pseudo-fake(s) written to {out_dir}, {summary.failed} "
                  f"failed, {summary.skipped_not_real} fake input(s) left out "
                  f"({summary.seconds:.1f} s); manifest {summary.labels_csv}")
    if summary.written == 0:
        raise typer.Exit(1)


@app.command()
@handles_errors
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
    from fakeprobe.app.media import sample as run_sample

    summary = run_sample(out_dir, clips=clips, holdout=holdout, seconds=seconds, seed=seed,
                         progress=None if as_json else dim)
    if as_json:
        print_json(summary)
        return
    for problem in summary.problems:
        note(problem)
    out.print(f"{summary.clips} clips from {', '.join(summary.photos)} in {out_dir} "
              f"({summary.seconds:.1f} s; a face in {summary.frames_with_face} of "
              f"{summary.frames} frames); manifest {summary.labels_csv} and "
              f"{summary.holdout_csv}")
