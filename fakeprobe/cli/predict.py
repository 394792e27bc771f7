"""Commands that score new media: ``predict``, and ``serve`` (a web page and a REST API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from fakeprobe.cli._base import app, err, handles_errors, out, print_json
from fakeprobe.cli.options import DeviceOpt, ForceOpt, JsonOpt


@app.command()
@handles_errors
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
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Score new videos or images: the fake probability, the label at the model's threshold,
    the frames used and a per-frame timeline. Runs the extractor with the model's settings.

    With no --model, the detector bundled with fakeprobe scores them (its name and threshold
    are printed); `fakeprobe components` says what it was trained on."""
    from fakeprobe.app.scoring import is_model_file, predict as run_predict
    from fakeprobe.cli.render import ProgressReporter, predictions_table
    from fakeprobe.errors import FakeprobeError

    if model is None and is_model_file(inputs[0]):
        if len(inputs) == 1:
            raise FakeprobeError(f"{inputs[0]} is a model file: name the videos or images "
                                 "to score after it (or use --model)")
        model, inputs = inputs[0], inputs[1:]
    reporter = ProgressReporter(err)
    with reporter:
        result = run_predict(model, inputs, cache_path=cache, workers=workers, device=device,
                             reporter=reporter, face_crops=face_crops, csv=csv_path,
                             timeline_csv=timeline_csv, force=force)
    if result.bundled:
        err.print(f"[dim]scored by the bundled detector {escape(result.model_name)} "
                  f"(threshold {result.threshold:.3f}); --model PATH uses your own[/]",
                  highlight=False)
    for warning in result.warnings:
        err.print(f"[yellow]version[/] {escape(warning)}")
    if as_json:
        print_json(result)
        return
    out.print(predictions_table(result))


@app.command()
@handles_errors
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
    device: DeviceOpt = "auto",
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
