"""Commands about a cache and the components: ``info``, ``components`` and ``derive``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fakeprobe.cli._base import app, err, handles_errors, note, out, print_json
from fakeprobe.cli.options import JsonOpt


@app.command()
@handles_errors
def info(
    cache: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="An HDF5 cache written by `fakeprobe extract`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Counts per label, dataset, method and status, the feature sets and the extractor config."""
    from fakeprobe.app.cache import info as read_info
    from fakeprobe.cli.render import info_tables

    result = read_info(cache)
    if as_json:
        print_json(result)
        return
    for table in info_tables(cache, result.summary):
        out.print(table)


@app.command()
@handles_errors
def components(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the detectors, backbones and heads, and which can run on this machine; and the
    detector bundled with fakeprobe (what `predict` uses with no --model)."""
    from fakeprobe.app.cache import components as list_components
    from fakeprobe.cli.render import components_tables

    result = list_components()
    if as_json:
        print_json(result)
        return
    bundled = result.bundled_model
    if bundled.get("error"):
        err.print(f"[yellow]bundled detector[/]: {escape(bundled['error'])}", highlight=False)
    else:
        out.print(f"bundled detector (predict with no --model): {escape(bundled['name'])}, "
                  f"{bundled['head']} on {', '.join(bundled['features'])}, threshold "
                  f"{bundled['threshold']:.3f}; model card: {escape(bundled['card'])}",
                  highlight=False)
    data = result.to_dict()
    data.pop("bundled_model")
    for table in components_tables(data):
        out.print(table)


@app.command()
@handles_errors
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
    from fakeprobe.app.cache import derive as run_derive
    from fakeprobe.app.media import interrupted_note
    from fakeprobe.cli.render import derive_table

    try:
        summary = run_derive(cache, temporal=temporal, landmarks=landmarks, log=note)
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted[/]: {escape(interrupted_note(cache))}", highlight=False,
                  soft_wrap=True)
        raise typer.Exit(130) from None
    if as_json:
        print_json(summary)
        return
    out.print(derive_table(summary))
