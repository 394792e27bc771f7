"""Commands that read a model's decisions: ``explain``, ``report``; and ``finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fakeprobe.cli._base import app, dim, err, handles_errors, out, print_json
from fakeprobe.cli.options import (CacheArg, DatasetOpt, ForceOpt, JsonOpt, MethodOpt,
                                   ModelArg, SeedOpt, WeightsOpt, XDatasetOpt, XGroupOpt,
                                   XMethodOpt, selection)


@app.command()
@handles_errors
def explain(
    model: ModelArg,
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
    weights: WeightsOpt = [],
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
    from fakeprobe.app.reports import explain as run_explain
    from fakeprobe.cli.render import explain_table

    result = run_explain(model, cache, out_dir, ids=ids, top_fakes=top_fakes,
                         top_frames=top_frames, fill=fill, patch=patch, space=space,
                         weights=weights, device=device,
                         progress=None if as_json else (lambda i: dim(f"explaining {i}")))
    for warning in dict.fromkeys(w for item in result.items for w in item.warnings):
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    for failure in result.failures:
        err.print(f"[yellow]skip[/] {escape(failure['id'])}: {escape(failure['error'])}",
                  highlight=False, soft_wrap=True)
    if as_json:
        print_json(result)
        return
    out.print(explain_table(result, f"explain {model.name} on {cache.name}"))
    out.print(f"{len(result.pngs)} figures and {result.json_path} written in "
              f"{result.seconds:.1f} s")


@app.command()
@handles_errors
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
    from fakeprobe.app.reports import report as write_report

    written = write_report(run, out_path, timelines=timelines, explain=explain, model=model,
                           cache=cache, force=force,
                           progress=lambda i: dim(f"explaining {i}"))
    if as_json:
        print_json(written)
        return
    out.print(f"report written to {written.html} (markdown {written.markdown}, "
              f"{written.images} figures in {written.figures})", highlight=False)


@app.command()
@handles_errors
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
    fresh_blends: Annotated[bool, typer.Option(
        "--fresh-blends", help="Blend every self-blend twin anew from its source real crop "
        "each time it is drawn for training (new mask, colour and warp each time; the cache "
        "needs `extract --self-blend`). Validation keeps the stored twins.")] = False,
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
    from fakeprobe.app.finetuning import finetune as run_finetune
    from fakeprobe.cli.render import FinetuneReporter

    reporter = FinetuneReporter(err)
    try:
        with reporter:
            result = run_finetune(
                cache, out_path, augment=augment, device=device, restart=restart, force=force,
                progress=reporter, selection=selection(dataset, method, exclude_dataset,
                                                       exclude_method, exclude_group),
                base=base, input_size=input_size, epochs=epochs, batch_size=batch_size, lr=lr,
                val_fraction=val_fraction, val_fold=val_fold, patience=patience,
                monitor=monitor, fakes=fakes, dropout=dropout, embedding_dim=embedding_dim,
                freeze_until=freeze_until, frames_per_item=frames_per_item,
                allow_upsample=allow_upsample, seed=seed, schedule=schedule, warmup=warmup,
                clipnorm=clipnorm, fresh_blends=fresh_blends)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: finished epochs are saved in {out_path}.ckpt; run "
                  "the same command again to resume")
        raise typer.Exit(130) from None
    for warning in result.warnings:
        err.print(f"[yellow]note[/] {escape(warning)}", highlight=False)
    if as_json:
        print_json(result)
        return
    out.print(f"{result.base} {result.input_size}px: best epoch {result.best_epoch} of "
              f"{result.epochs_run} (validation {result.monitor} {result.best_value:.3f}; "
              f"{result.train_items} training / {result.val_items} validation items"
              f"{', stopped early' if result.stopped_early else ''}) -> {result.model_path}",
              highlight=False)
