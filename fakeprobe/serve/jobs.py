"""The job queue of ``fakeprobe serve``: uploads wait in a bounded queue and one worker thread
scores them with models loaded once.

The worker takes the oldest job and up to ``batch_size - 1`` more for the same model and scores
them in one extraction run (decoding of one overlaps embedding of another), then deletes their
media at once, scored or not. What a job keeps afterwards (its JSON, face thumbnails, and the
run's small cache of features and face crops, which an occlusion heatmap is computed from on
request) lives in memory and in the server's private folder until the job is deleted, pushed
out by newer ones (``keep`` finished jobs), or the server stops.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.app import Predictor
from fakeprobe.classifiers.aggregate import smooth
from fakeprobe.errors import FakeprobeError

log = logging.getLogger("fakeprobe.serve")

#: States of a job, in order.
STATES = ("queued", "running", "done", "failed")
#: Face thumbnails kept per item: its most fake face rows.
THUMBNAILS = 4
#: Frames explained in a heatmap figure.
HEATMAP_FRAMES = 3


class QueueFull(FakeprobeError):
    """The queue holds as many jobs as it may; the client should try again later."""


@dataclass
class _Run:
    """One extraction run's folder (its cache); removed when no job of the run is kept."""

    folder: Path
    jobs: set[str] = field(default_factory=set)

    @property
    def cache(self) -> Path:
        return self.folder / "cache.h5"


@dataclass
class Job:
    """One uploaded file and what became of it. ``filename`` is the client's name for it, shown
    and never used as a path; ``media`` is where the server stored it (deleted once scored)."""

    id: str
    filename: str
    model: str
    media: Path
    kind: str
    size: int
    created: float = field(default_factory=time.time)
    state: str = "queued"
    started: float | None = None
    finished: float | None = None
    result: dict[str, Any] | None = None
    extras: dict[str, Any] | None = None
    error: str = ""
    item_id: str = ""
    thumbnails: list[bytes] = field(default_factory=list)
    heatmap: bytes | None = None
    run: _Run | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def to_dict(self, position: int = 0) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "filename": self.filename, "model": self.model,
            "kind": self.kind, "bytes": self.size, "position": position,
            "created": self.created, "started": self.started, "finished": self.finished,
            "error": self.error, "result": self.result, "extras": self.extras,
        }


def new_job_id() -> str:
    """An id no client can guess (it is the only key to a job's result)."""
    return secrets.token_urlsafe(12)


class JobQueue:
    """A bounded queue of :class:`Job` and the worker thread that scores them.

    ``predictors``: model name -> :class:`Predictor`, loaded once. ``folder``: where runs keep
    their caches (private to the server). At most ``max_queued`` jobs wait; :meth:`submit`
    raises :class:`QueueFull` beyond. ``keep`` finished jobs are kept for their results.
    """

    def __init__(self, predictors: dict[str, Predictor], folder: Path, *, max_queued: int = 16,
                 batch_size: int = 4, keep: int = 100, device: str = "auto") -> None:
        if max_queued < 1 or batch_size < 1 or keep < 1:
            raise FakeprobeError("max_queued, batch_size and keep must be at least 1")
        self.predictors = predictors
        self.folder = Path(folder)
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.keep = keep
        self.device = device
        self._queue: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._cond = threading.Condition()
        self._compute = threading.Lock()  # one extraction or explanation at a time
        self._scorers: dict[str, Any] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.running = 0
        self.peak_queued = 0
        self.completed = 0
        self.failed = 0

    # -- client side ------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._queue) >= self.max_queued:
                raise QueueFull(f"the queue is full ({self.max_queued} jobs waiting); try again "
                                "in a few seconds")
            self._queue.append(job)
            self._jobs[job.id] = job
            self.peak_queued = max(self.peak_queued, len(self._queue))
            self._cond.notify_all()

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """1 for the next job to run, 0 when it is not waiting."""
        with self._cond:
            for k, queued in enumerate(self._queue, start=1):
                if queued is job:
                    return k
        return 0

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def delete(self, job_id: str) -> bool:
        """Forget a job and its files; a queued job is taken out of the queue. A running job
        cannot be deleted (False)."""
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state == "running":
                return False
            if job in self._queue:
                self._queue.remove(job)
                job.media.unlink(missing_ok=True)
            self._drop(job)
            return True

    # -- worker -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="fakeprobe-serve-worker",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            for job in self._queue:
                job.media.unlink(missing_ok=True)
            self._queue.clear()

    def _take(self) -> list[Job] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._queue.popleft()
            batch = [first]
            for job in list(self._queue):
                if len(batch) >= self.batch_size:
                    break
                if job.model == first.model:
                    self._queue.remove(job)
                    batch.append(job)
            now = time.time()
            for job in batch:
                job.state, job.started = "running", now
            self.running = len(batch)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._score(batch)
            except Exception as exc:  # a bug must fail the jobs, never kill the worker
                log.exception("scoring failed")
                for job in batch:
                    if job.state == "running":
                        self._finish(job, error=f"internal error ({exc.__class__.__name__}); "
                                                "see the server's log")
            finally:
                for job in batch:
                    job.media.unlink(missing_ok=True)
                with self._cond:
                    self.running = 0

    def _score(self, batch: list[Job]) -> None:
        predictor = self.predictors[batch[0].model]
        run = _Run(self.folder / f"run-{secrets.token_hex(8)}")
        run.folder.mkdir(mode=0o700)
        try:
            with self._compute:
                result = predictor.predict([job.media for job in batch], cache_path=run.cache)
        except FakeprobeError as exc:
            shutil.rmtree(run.folder, ignore_errors=True)
            for job in batch:
                self._finish(job, error=str(exc))
            return
        finally:
            for job in batch:  # the media go as soon as they are scored
                job.media.unlink(missing_ok=True)
        by_name = {Path(p.path).name: p for p in result.predictions}
        common = result.to_dict()
        common["model"] = predictor.model_name  # never a server path
        for job in batch:
            prediction = by_name.get(job.media.name)
            if prediction is None:
                self._finish(job, error="the item was not scored (see the server's log)")
                continue
            job.item_id = prediction.id
            item = {**prediction.__dict__, "id": job.filename, "path": job.filename}
            job.result = {**common, "predictions": [item]}
            job.extras = self._extras(job, predictor, run, item)
            job.run = run
            run.jobs.add(job.id)
            self._finish(job)
        if not run.jobs:
            shutil.rmtree(run.folder, ignore_errors=True)

    def _extras(self, job: Job, predictor: Predictor, run: _Run,
                item: dict[str, Any]) -> dict[str, Any]:
        """The smoothed timeline (the model's own smoothing, per track), thumbnails of the most
        fake faces, and where to get the rest."""
        aggregation = predictor.model.aggregation
        timeline = item["timeline"]
        smoothed = [float("nan")] * len(timeline)
        tracks = np.array([p["track"] for p in timeline], int)
        scores = np.array([p["score"] for p in timeline], float)
        for track in np.unique(tracks):
            members = np.flatnonzero(tracks == track)
            values = smooth(scores[members], aggregation.smoothing, aggregation.window,
                            aggregation.alpha)
            for k, value in zip(members, values):
                smoothed[k] = float(value)
        top = list(np.argsort(-scores, kind="stable")[:THUMBNAILS]) if len(scores) else []
        thumbnails = []
        if top:
            points = [timeline[k] for k in top]
            job.thumbnails = _face_crops(run.cache, job.item_id, points)
            thumbnails = [{"url": f"/api/jobs/{job.id}/thumbnails/{n}.png", "rank": n + 1,
                           **points[n]} for n in range(len(job.thumbnails))]
        base = f"/api/jobs/{job.id}"
        return {
            "smoothing": {"method": aggregation.smoothing, "window": aggregation.window,
                          "alpha": aggregation.alpha, "aggregation": aggregation.method},
            "smoothed": smoothed, "thumbnails": thumbnails,
            "heatmap_url": f"{base}/heatmap.png" if top else None,
            "json_url": f"{base}/result.json", "csv_url": f"{base}/result.csv",
        }

    def _finish(self, job: Job, error: str = "") -> None:
        with self._cond:
            job.error = error
            job.state = "failed" if error else "done"
            job.finished = time.time()
            if error:
                self.failed += 1
            else:
                self.completed += 1
            job.done.set()
            finished = [j for j in self._jobs.values() if j.state in ("done", "failed")]
            for old in finished[:max(0, len(finished) - self.keep)]:
                self._drop(old)

    def _drop(self, job: Job) -> None:
        """Forget ``job`` (the caller holds the lock); its run's folder goes with its last job."""
        self._jobs.pop(job.id, None)
        job.thumbnails, job.heatmap = [], None
        run, job.run = job.run, None
        if run is not None:
            run.jobs.discard(job.id)
            if not run.jobs:
                shutil.rmtree(run.folder, ignore_errors=True)

    # -- explanations -----------------------------------------------------------------------
    def heatmap(self, job: Job) -> bytes:
        """The occlusion heatmap figure of a scored job (PNG), computed once on request from the
        run's stored face crops (:func:`fakeprobe.evaluation.explain.explain_video`)."""
        from fakeprobe.evaluation.explain import ModelScorer, explain_video, render_explanation

        if job.heatmap is not None:
            return job.heatmap
        run = job.run
        if job.state != "done" or run is None or not job.extras or not job.extras["heatmap_url"]:
            raise FakeprobeError("no heatmap: the item has no scored face")
        predictor = self.predictors[job.model]
        with self._compute:
            scorer = self._scorers.get(job.model)
            if scorer is None:
                scorer = self._scorers[job.model] = ModelScorer(predictor.model,
                                                                device=self.device)
            explanation = explain_video(predictor.model, run.cache, job.item_id,
                                        top_k=HEATMAP_FRAMES, scorer=scorer)
        explanation.id = job.filename
        job.heatmap = render_explanation(explanation)
        return job.heatmap


def _face_crops(cache_path: Path, item_id: str, points: list[dict[str, Any]]) -> list[bytes]:
    """PNGs of the stored face crops of an item's rows at ``points`` (frame, track)."""
    import cv2

    from fakeprobe.features.cache import CacheReader
    from fakeprobe.features.crops import row_crops, stored_spec

    with CacheReader(cache_path) as cache:
        if not cache.has_crops:
            return []
        videos = cache.videos()
        hits = np.flatnonzero(videos["id"] == item_id)
        if not len(hits):
            return []
        start = int(videos["row_start"][hits[0]])
        rows = slice(start, start + int(videos["row_count"][hits[0]]))
        frames = cache.frames(("frame_index", "track"))
        where = {(int(f), int(t)): start + k for k, (f, t) in
                 enumerate(zip(frames["frame_index"][rows], frames["track"][rows]))}
        wanted = [where[(p["frame"], p["track"])] for p in points
                  if (p["frame"], p["track"]) in where]
        spec = stored_spec(cache)
        if not wanted or spec is None:
            return []
        got = row_crops(cache, wanted, spec, media=False)
        crops = got[spec][got.ok]
    out = []
    for crop in crops:  # crops are RGB
        ok, data = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
        if ok:
            out.append(data.tobytes())
    return out
