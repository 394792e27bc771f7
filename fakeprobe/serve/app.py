"""The web application of ``fakeprobe serve``: a page and a REST API over a :class:`JobQueue`.

FastAPI gives the routing, the request checks and the OpenAPI description (``/docs``,
``/openapi.json``); uvicorn serves it. The page is one static HTML file with a small script and
a style sheet, served by fakeprobe itself: no template engine, no framework, no CDN, so it
works with no network and there is nothing to build.

Safety: a token, when set, is required on every request (``Authorization: Bearer TOKEN``, the
``X-Fakeprobe-Token`` header, or ``?token=`` for links the page opens) and compared in constant
time; uploads are streamed into a private folder (mode 0700) under a size limit, told by their
content, decoded once before they are queued, and deleted once scored; no client input names a
path on the server or a model file (models are the ones loaded at start-up, chosen by name).
"""


import csv
import hmac
import io
import json
import math
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from fakeprobe.app import Predictor
from fakeprobe.errors import FakeprobeError, MissingDependency
from fakeprobe.evaluation.runs import finite
from fakeprobe.serve.jobs import Job, JobQueue, QueueFull, new_job_id
from fakeprobe.serve.uploads import UploadRejected, check_media, receive

#: Hosts that reach only this machine: binding any other needs a token.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Environment variable read for the token when ``--token`` is not given.
TOKEN_ENV = "FAKEPROBE_TOKEN"
#: Longest ``?wait=`` a poll may ask for, in seconds.
MAX_WAIT = 60.0
#: What a client is told to wait before trying again when the queue is full (Retry-After).
RETRY_AFTER_S = 5
STATIC = files("fakeprobe.serve") / "static"


@dataclass
class ServeConfig:
    """What ``fakeprobe serve`` runs with (every limit has a command-line option)."""

    models: list[Path] = field(default_factory=list)
    token: str | None = None
    max_upload_mb: float = 500.0
    #: Longest video accepted, in frames (the extractor samples at most ``max_frames`` of them,
    #: but a decoder still walks the file): 54,000 is 30 minutes at 30 fps.
    max_video_frames: int = 54_000
    max_queued: int = 16
    batch_size: int = 4
    keep_jobs: int = 100
    workers: int = 2
    device: str = "auto"
    warm: bool = True
    work_dir: Path | None = None

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def require_web() -> None:
    """Fail with the install hint when the web packages (the ``serve`` extra) are missing."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "python_multipart")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependency(f"serve needs {', '.join(missing)}: "
                                'pip install "fakeprobe[serve]"')


def check_host(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token."""
    if host not in LOCAL_HOSTS and not token:
        raise FakeprobeError(f"--host {host} lets other machines connect: set a token with "
                             f"--token or the {TOKEN_ENV} environment variable")


def load_predictors(config: ServeConfig) -> dict[str, Predictor]:
    """The bundled detector first (the default), then each ``--model`` file, by unique name."""
    predictors: dict[str, Predictor] = {}
    for path in [None, *config.models]:
        predictor = Predictor(path, workers=config.workers, device=config.device,
                              keep_crops=_crop_side(path))
        name = predictor.model_name
        if name in predictors:
            stem, k = name, 2
            while name in predictors:
                name, k = f"{stem}-{k}", k + 1
        predictors[name] = predictor
    return predictors


def _crop_side(path: Path | None) -> int:
    """Side of the face crops a server stores: enough to cut every backbone's crop for the
    occlusion heatmap, and at least 112 px for thumbnails."""
    from fakeprobe.classifiers.model import load_model
    from fakeprobe.evaluation.explain import backbone_specs, covering_spec
    from fakeprobe.weights import bundled_model_path

    model = load_model(path or bundled_model_path())
    try:
        return max(112, covering_spec(backbone_specs(model).values()).size)
    except FakeprobeError:  # a feature set with no crop geometry: thumbnails only
        return 112


def create_app(config: ServeConfig, predictors: dict[str, Predictor] | None = None):
    """The FastAPI application. ``predictors`` (model name -> :class:`Predictor`, the first
    the default) are loaded from ``config`` when not given."""
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    require_web()
    predictors = predictors if predictors is not None else load_predictors(config)
    if not predictors:
        raise FakeprobeError("no model to serve")
    default_model = next(iter(predictors))
    root = Path(tempfile.mkdtemp(prefix="fakeprobe-serve-", dir=config.work_dir))
    root.chmod(0o700)
    uploads = root / "uploads"
    runs = root / "runs"
    uploads.mkdir(mode=0o700)
    runs.mkdir(mode=0o700)
    queue = JobQueue(predictors, runs, max_queued=config.max_queued,
                     batch_size=config.batch_size, keep=config.keep_jobs, device=config.device)
    status = {"ready": False, "receiving": 0}

    @asynccontextmanager
    async def lifespan(_app):
        try:
            if config.warm:
                for predictor in predictors.values():
                    await run_in_threadpool(predictor.warm_up)
            status["ready"] = True
            queue.start()
            yield
        finally:
            await run_in_threadpool(queue.stop)
            shutil.rmtree(root, ignore_errors=True)

    # FastAPI's /docs and /redoc pages load their scripts from a CDN: left out, so that
    # nothing the server offers needs the network; /openapi.json describes the API.
    app = FastAPI(
        title="fakeprobe", version=_version(), lifespan=lifespan, docs_url=None,
        redoc_url=None,
        description="Score videos and images for deepfakes: submit a file, poll its job, read "
                    "the fake probability, the per-frame timeline and the most fake faces. "
                    "When the server has a token, send it as `Authorization: Bearer TOKEN`.")
    app.state.queue = queue
    app.state.root = root
    app.state.uploads = uploads
    app.state.config = config

    def error(status_code: int, message: str, headers: dict[str, str] | None = None):
        return JSONResponse({"error": message, "status": status_code}, status_code=status_code,
                            headers=headers)

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if config.token:
            supplied = (request.headers.get("authorization", "").removeprefix("Bearer ").strip()
                        or request.headers.get("x-fakeprobe-token", "")
                        or request.query_params.get("token", ""))
            if not hmac.compare_digest(supplied.encode(), config.token.encode()):
                return error(401, "a valid token is required (Authorization: Bearer TOKEN)",
                             {"WWW-Authenticate": "Bearer"})
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    def find(job_id: str) -> Job:
        job = queue.get(job_id)
        if job is None:
            raise StarletteHTTPException(404, f"no job {job_id!r} (unknown, deleted or expired)")
        return job

    def job_body(job: Job) -> dict[str, Any]:
        return finite(job.to_dict(queue.position(job)))

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html",
                            headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/api/health", summary="Is the server up, and how busy")
    def health() -> dict[str, Any]:
        return {"status": "ok" if status["ready"] else "starting", "version": _version(),
                "models": list(predictors), "default_model": default_model,
                "queued": queue.queued, "running": queue.running,
                "completed": queue.completed, "failed": queue.failed,
                "limits": {"max_upload_bytes": config.max_upload_bytes,
                           "max_video_frames": config.max_video_frames,
                           "max_queued": config.max_queued}}

    @app.get("/api/models", summary="The models this server scores with")
    def models() -> list[dict[str, Any]]:
        out = []
        for name, predictor in predictors.items():
            provenance = predictor.model.provenance
            out.append({"name": name, "default": name == default_model,
                        "bundled": predictor.bundled, "threshold": predictor.model.threshold,
                        "head": provenance.get("head"), "features": list(predictor.model.features),
                        "aggregation": provenance.get("aggregation"),
                        "frames": predictor.config.frames})
        return out

    @app.post("/api/jobs", status_code=202, summary="Submit one video or image",
              responses={400: {"description": "no file, empty, bad form, unknown model"},
                         413: {"description": "over the size, pixel or frame limits"},
                         415: {"description": "not a video or an image"},
                         422: {"description": "truncated or damaged: it does not decode"},
                         503: {"description": "the queue is full: try again (Retry-After)"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {
                      "type": "object", "required": ["file"], "properties": {
                          "file": {"type": "string", "format": "binary"},
                          "model": {"type": "string",
                                    "description": "a name from /api/models (default: the "
                                                   "first)"}}}}}}})
    async def submit(request: Request):
        """Upload one file in the multipart field `file` (and optionally `model`). The file is
        checked by its content and decoded once; the answer (202) holds the job id to poll."""
        if queue.queued + status["receiving"] >= config.max_queued:  # bodies on disk too
            return error(503, f"the queue is full ({config.max_queued} jobs waiting or "
                         "arriving); try again in a few seconds",
                         {"Retry-After": str(RETRY_AFTER_S)})
        job_id = new_job_id()
        part = uploads / f"{job_id}.part"
        status["receiving"] += 1
        try:
            received = await receive(request, part, config.max_upload_bytes)
            model = received.fields.get("model") or default_model
            if model not in predictors:
                raise UploadRejected(f"unknown model {model!r}; this server has: "
                                     f"{', '.join(predictors)}")
            max_pixels = predictors[model].config.max_pixels
            checked = await run_in_threadpool(check_media, part, max_pixels=max_pixels,
                                              max_frames=config.max_video_frames)
            media = part.with_suffix(checked.suffix)
            part.rename(media)
        except UploadRejected as exc:
            part.unlink(missing_ok=True)
            return error(exc.status_code, str(exc))
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            status["receiving"] -= 1
        job = Job(job_id, received.filename, model, media, checked.kind, received.size)
        try:
            queue.submit(job)
        except QueueFull as exc:
            media.unlink(missing_ok=True)
            return error(503, str(exc), {"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse(job_body(job), status_code=202,
                            headers={"Location": f"/api/jobs/{job.id}"})

    @app.get("/api/jobs/{job_id}", summary="A job's state, and its result once done")
    async def get_job(job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """`wait`: seconds (at most 60) to wait for the job to finish before answering. The
        result is what `fakeprobe predict --json` prints for the item; `extras` add the smoothed
        timeline, the face thumbnails and the download links."""
        job = find(job_id)
        if wait > 0 and not job.done.is_set():
            await run_in_threadpool(job.done.wait, min(float(wait), MAX_WAIT))
        return job_body(job)

    @app.delete("/api/jobs/{job_id}", summary="Forget a job and delete what it kept")
    def delete_job(job_id: str):
        job = find(job_id)
        if not queue.delete(job.id):
            return error(409, "the job is running; delete it once it is done")
        return {"deleted": job.id}

    def finished(job_id: str) -> Job:
        job = find(job_id)
        if job.state != "done":
            raise StarletteHTTPException(409, f"the job is {job.state}"
                                         + (f": {job.error}" if job.error else ""))
        return job

    @app.get("/api/jobs/{job_id}/result.json", summary="Download the result as JSON")
    def result_json(job_id: str):
        job = finished(job_id)
        body = json.dumps(finite({**job.result, "extras": job.extras}), indent=2)
        return Response(body, media_type="application/json",
                        headers=_attachment(job.filename, "json"))

    @app.get("/api/jobs/{job_id}/result.csv", summary="Download the timeline as CSV")
    def result_csv(job_id: str):
        job = finished(job_id)
        return Response(_csv(job), media_type="text/csv",
                        headers=_attachment(job.filename, "csv"))

    @app.get("/api/jobs/{job_id}/thumbnails/{rank}.png", summary="A face of the most fake "
             "frames (0: the most fake)")
    def thumbnail(job_id: str, rank: int):
        job = finished(job_id)
        if not 0 <= rank < len(job.thumbnails):
            raise StarletteHTTPException(404, f"no thumbnail {rank}")
        return Response(job.thumbnails[rank], media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/jobs/{job_id}/heatmap.png", summary="Occlusion heatmap of the most fake "
             "faces (computed on first request)")
    def heatmap(job_id: str):
        job = finished(job_id)
        try:
            png = queue.heatmap(job)
        except FakeprobeError as exc:
            return error(422, str(exc))
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    return app


def _version() -> str:
    from fakeprobe.core.provenance import installed

    return installed("fakeprobe") or "unknown"


def _attachment(filename: str, suffix: str) -> dict[str, str]:
    from urllib.parse import quote

    stem = Path(filename).stem or "result"
    return {"Content-Disposition": f"attachment; filename=\"fakeprobe-result.{suffix}\"; "
                                   f"filename*=UTF-8''{quote(f'{stem}.fakeprobe.{suffix}')}"}


def _cell(value: str) -> str:
    """A text cell a spreadsheet will not run (the rule of ``predict --csv``: OWASP's advice
    against CSV injection)."""
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r")) else value


def _csv(job: Job) -> str:
    """One row per scored frame (the item's columns repeated), or one row with no frame."""
    item = job.result["predictions"][0]
    smoothed = job.extras["smoothed"] if job.extras else []
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["item", "status", "fake_probability", "label", "threshold", "frames_used",
                     "note", "frame", "time", "track", "frame_probability", "smoothed"])
    head = [_cell(job.filename), item["status"],
            "" if item["score"] is None else f"{item['score']:.6f}", item["label"] or "",
            f"{job.result['threshold']:.6f}", item["frames_used"], _cell(item["error"])]
    if not item["timeline"]:
        writer.writerow(head + [""] * 5)
    for point, value in zip(item["timeline"], smoothed or [None] * len(item["timeline"])):
        time_s = point["time"]
        writer.writerow(head + [point["frame"], f"{time_s:.3f}" if math.isfinite(time_s) else "",
                                point["track"], f"{point['score']:.6f}",
                                "" if value is None else f"{value:.6f}"])
    return buffer.getvalue()


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Load the models, then serve until Ctrl-C (``fakeprobe serve``)."""
    require_web()
    check_host(host, config.token)
    import uvicorn

    app = create_app(config)
    # with a token, URLs may carry it (?token=): keep them out of the access log
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                access_log=not config.token, timeout_graceful_shutdown=10)


__all__ = ["LOCAL_HOSTS", "TOKEN_ENV", "ServeConfig", "check_host", "create_app",
           "load_predictors", "serve"]
