"""Commands that train and judge heads: ``fit-<head>`` (one per registered head), ``compare``
and ``evaluate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fakeprobe.cli._base import FIT_PREFIX, app, dim, err, handles_errors, out, print_json
from fakeprobe.cli.options import (AggOpt, AlphaOpt, CacheArg, CvOpt, DatasetOpt, EvalOpt,
                                   FeaturesOpt, ForceOpt, HoldoutOpt, JsonOpt, MethodOpt,
                                   NIterOpt, ReportOpt, SaveRunOpt, ScoreBlendOpt,
                                   SearchOpt, SeedOpt, SmoothOpt, SmoteOpt, TrainDatasetOpt,
                                   TrainFakesOpt, TrainMethodOpt, WindowOpt, XDatasetOpt,
                                   XGroupOpt, XMethodOpt, selection)


def _print_excluded(excluded) -> None:
    for entry in excluded:
        err.print(f"[yellow]no score[/] {escape(entry['id'])}: {escape(entry['reason'])}",
                  highlight=False, soft_wrap=True)


def _print_files(files) -> None:
    if files.run:
        err.print(f"run record written to {files.run}")
    if files.html:
        err.print(f"report written to {files.html} (markdown {files.markdown})")


def _judging(aggregate, smooth, window, alpha, cv, holdout, eval_cache, search, seed, smote,
             train_dataset, train_method, train_fakes, score_self_blend, n_iter):
    """The aggregation and the protocol of the shared options."""
    from fakeprobe.app.protocol import make_aggregation, make_protocol

    return (make_aggregation(aggregate, smooth, window, alpha),
            make_protocol(cv, holdout, eval_cache, search, seed, smote, train_dataset,
                          train_method, train_fakes, score_self_blend, n_iter))


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
        engine: Annotated[str, typer.Option(
            help="local, or dask (xgb and logreg): grouped cross-validation on features read "
            "in chunks, for a cache larger than memory (xgboost.dask; logreg by SGD "
            "partial_fit); --out fits the final model through the engine too.")
            ] = "local",
        address: Annotated[Optional[str], typer.Option(
            help="With --engine dask: the scheduler (default: a local cluster); its workers "
            "must see the cache at the same path.")] = None,
        workers: Annotated[int, typer.Option(min=1, help="With --engine dask: local worker "
                                             "processes.")] = 2,
        chunk_rows: Annotated[int, typer.Option(min=1, help="With --engine dask: feature "
                                                "rows read per chunk.")] = 50_000,
    ) -> None:
        from fakeprobe.app.heads import fit
        from fakeprobe.cli.render import metrics_tables

        aggregation, protocol = _judging(
            aggregate, smooth, window, alpha, cv, holdout, eval_cache, search, seed, smote,
            train_dataset, train_method, train_fakes, score_self_blend, n_iter)
        if engine != "local":
            from fakeprobe.app.cluster import cluster_summary, fit_on_cluster
            from fakeprobe.errors import InvalidOption

            if engine != "dask":
                raise InvalidOption(f"unknown engine {engine!r}: local or dask", "--engine")
            done = fit_on_cluster(
                cache, head, features=features, protocol=protocol, out=out_path,
                selection=selection(dataset, method, exclude_dataset, exclude_method,
                                    exclude_group),
                address=address, workers=workers, chunk_rows=chunk_rows, force=force)
            print_json(done) if as_json else out.print(cluster_summary(done))
            if out_path and not as_json:
                out.print(f"model written to {out_path} (threshold {done.threshold:.3f}, "
                          f"final fit {done.final_fit_seconds:.1f} s)")
            return
        result = fit(cache, head, out_path, features=features,
                     selection=selection(dataset, method, exclude_dataset, exclude_method,
                                         exclude_group),
                     aggregation=aggregation, protocol=protocol, save_run=save_run,
                     report=report, force=force)
        _print_files(result.files)
        if as_json:
            print_json(result)
            return
        _print_excluded(result.report.excluded)
        out.print(*metrics_tables([result.report], f"{head}: {result.report.protocol}"))
        if out_path:
            out.print(f"model written to {out_path} (threshold "
                      f"{result.report.threshold:.3f}, final fit {result.final_fit_seconds:.1f}"
                      " s)")

    command.__doc__ = (
        f"Evaluate the {head} head on a cache by grouped cross-validation (or --holdout, or "
        "--eval on another cache), then fit it on every item and save the model (--out).")
    return command


def fit_commands() -> dict:
    """One click command ``fit-<head>`` per registered head (made on demand: see
    :class:`fakeprobe.cli._base.Commands`)."""
    from typer.main import get_command_from_info
    from typer.models import CommandInfo

    from fakeprobe.app.cache import choices

    return {f"{FIT_PREFIX}{head}": get_command_from_info(
                CommandInfo(name=f"{FIT_PREFIX}{head}",
                            callback=handles_errors(_fit_command(head))),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=app.rich_markup_mode)
            for head in choices("head")}


@app.command()
@handles_errors
def compare(
    cache: CacheArg,
    features: FeaturesOpt = [],
    head: Annotated[list[str], typer.Option(
        "--head", help="Heads to compare, by registered name (`fakeprobe components` lists "
        "them; default: svm, xgb, logreg).")
                    ] = [],
    dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
    exclude_method: XMethodOpt = [], exclude_group: XGroupOpt = [],
    aggregate: AggOpt = "mean", smooth: SmoothOpt = "none", window: WindowOpt = 5,
    alpha: AlphaOpt = 0.3, cv: CvOpt = 5, holdout: HoldoutOpt = None,
    eval_cache: EvalOpt = None, search: SearchOpt = None, n_iter: NIterOpt = 10,
    seed: SeedOpt = 0, smote: SmoteOpt = False, train_dataset: TrainDatasetOpt = [],
    train_method: TrainMethodOpt = [], train_fakes: TrainFakesOpt = "all",
    score_self_blend: ScoreBlendOpt = False, save_run: SaveRunOpt = None,
    report: ReportOpt = None, force: ForceOpt = False, as_json: JsonOpt = False,
    engine: Annotated[str, typer.Option(
        help="local, or dask: xgb and logreg cross-validated on a Dask cluster on features read "
        "in chunks (see fit-xgb --engine dask), on the same folds.")] = "local",
    address: Annotated[Optional[str], typer.Option(
        help="With --engine dask: the scheduler (default: a local cluster).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="With --engine dask: local worker "
                                         "processes.")] = 2,
    chunk_rows: Annotated[int, typer.Option(min=1, help="With --engine dask: feature rows "
                                            "read per chunk.")] = 50_000,
) -> None:
    """Every head on every feature set, on identical grouped folds: one table sorted by video
    ROC-AUC, with every metric and the fit/predict time and memory. With --train-dataset the
    same folds give in-domain and out-of-domain scores side by side."""
    from fakeprobe.app.heads import compare as run_compare
    from fakeprobe.cli.render import metrics_tables

    aggregation, protocol = _judging(
        aggregate, smooth, window, alpha, cv, holdout, eval_cache, search, seed, smote,
        train_dataset, train_method, train_fakes, score_self_blend, n_iter)
    if engine != "local":
        from functools import partial

        from fakeprobe.app.cluster import compare_on_cluster
        from fakeprobe.errors import InvalidOption

        if engine != "dask":
            raise InvalidOption(f"unknown engine {engine!r}: local or dask", "--engine")
        run_compare = partial(compare_on_cluster, address=address, workers=workers,
                              chunk_rows=chunk_rows)
    result = run_compare(
        cache, head, features,
        selection=selection(dataset, method, exclude_dataset, exclude_method, exclude_group),
        aggregation=aggregation, protocol=protocol, save_run=save_run, report=report,
        force=force, progress=None if as_json else (lambda m: dim(f"fitting {m}")))
    _print_files(result.files)
    if as_json:
        print_json(result)
        return
    _print_excluded(result.excluded)
    reports = result.sorted()
    out.print(*metrics_tables(reports, f"compare: {cache.name}, {reports[0].protocol}, "
                              "sorted by video ROC-AUC"))


@app.command()
@handles_errors
def evaluate(
    model: Annotated[list[Path], typer.Argument(
        exists=True, dir_okay=False, metavar="MODEL",
        help="A model file from fit-*; with several, each model and their mean.")],
    cache: CacheArg,
    dataset: DatasetOpt = [], method: MethodOpt = [], exclude_dataset: XDatasetOpt = [],
    exclude_method: XMethodOpt = [], exclude_group: XGroupOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """Score a cache with a saved model at its threshold and print every metric.

    With several models, each is scored and so is their mean (of the video and frame
    probabilities, at the videos every model scored; threshold: the mean of the models'
    thresholds), side by side. Loading a model file runs no code from it (skops data,
    trusted types only)."""
    from fakeprobe.app.heads import evaluate as run_evaluate
    from fakeprobe.cli.render import metrics_tables

    chosen = selection(dataset, method, exclude_dataset, exclude_method, exclude_group)
    if len(model) > 1:
        return _evaluate_mean(model, cache, chosen, as_json)
    result = run_evaluate(model[0], cache, chosen)
    for warning in result.warnings:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    if as_json:
        print_json(result)
        return
    _print_excluded(result.report.excluded)
    out.print(*metrics_tables([result.report], f"evaluate {model[0].name} on {cache.name}"))


def _evaluate_mean(models: list[Path], cache: Path, chosen, as_json: bool) -> None:
    from dataclasses import replace

    from fakeprobe.app.ensemble import THRESHOLD_RULE, evaluate_mean
    from fakeprobe.cli.render import metrics_tables

    result = evaluate_mean(models, cache, chosen)
    for warning in result.warnings:
        err.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)
    if as_json:
        print_json(result)
        return
    _print_excluded(result.ensemble.excluded)
    rows = [replace(r.report, head=f"{m.name} ({r.report.head})")
            for m, r in zip(models, result.members)] + [result.ensemble]
    out.print(*metrics_tables(rows, f"evaluate {len(models)} models and their mean on "
                              f"{cache.name}"))
    out.print(f"{result.ensemble.head}: threshold {result.ensemble.threshold:.3f}, the "
              f"{THRESHOLD_RULE}; {result.ensemble.video['n']} videos scored by every model")
