"""The extraction run: media -> sampled frames -> faces -> aligned crops -> features -> cache.

Decoding, detection and alignment of whole items run in worker threads (OpenCV releases the
GIL); the main thread embeds crops of several items in batches with every backbone and stages
each finished item (see :mod:`fakeprobe.features.cache`). At most ``2 * workers + 1`` items are
in flight, so memory does not grow with the number of items.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from fakeprobe.core.config import CONTEXT_MARGIN, ExtractorConfig
from fakeprobe.core.geometry import CropSpec
from fakeprobe.core.schema import READ_STATUSES
from fakeprobe.datasets import Discovery, MediaItem, discover, safe_text, with_self_blends
from fakeprobe.errors import ConfigMismatch, FakeprobeError, MediaError
from fakeprobe.extractor.align import can_recrop
from fakeprobe.extractor.augment import augment_crops, expand_rows
from fakeprobe.extractor.base import Backbone, Detector
from fakeprobe.extractor.components import BACKBONES
from fakeprobe.extractor.frames import Frame, read_media
from fakeprobe.features import cache as fcache
from fakeprobe.features.crops import row_crops
from fakeprobe.pipeline.progress import ExtractSummary, Reporter, Silent
from fakeprobe.pipeline.steps import Prepared, SelfBlend, align_rows, detect_rows, make_detector
from fakeprobe.synth.blend import self_blend


class Extractor:
    """Runs extraction into one cache. Create once, call :meth:`run`."""

    def __init__(self, config: ExtractorConfig, *, workers: int = 2, device: str = "auto",
                 batch_size: int = 32, weights: dict[str, str] | None = None,
                 detector_weights: str | None = None, commit_every: float = 600.0,
                 self_blend: SelfBlend | None = None) -> None:
        self.config = config
        self.self_blend = self_blend
        self.workers = max(1, workers)
        self.device = device
        self.batch_size = max(1, batch_size)
        self.weights = weights or {}
        self.detector_weights = detector_weights
        self.commit_every = commit_every
        self._local = threading.local()
        self.backbones: dict[str, Backbone] = {}
        self._stored_crops: CropSpec | None = None  # geometry of the cache's stored crops
        #: What staged items carry when this process holds no writer session of the cache
        #: (a cluster worker): :func:`fakeprobe.features.cache.run_settings` of the driver.
        self.stage_settings: dict | None = None

    # -- worker side --------------------------------------------------------------------------
    def _detector(self) -> Detector:
        detector = getattr(self._local, "detector", None)
        if detector is None:  # one per thread: detectors keep per-call state
            detector = make_detector(self.config, self.device, self.detector_weights)
            self._local.detector = detector
        return detector

    def _crop_specs(self, names: Iterable[str], with_keep: bool) -> set[CropSpec]:
        specs = {self.backbones[n].crop for n in names}
        if with_keep and self.config.keep_crops:
            specs.add(CropSpec(self.config.keep_crops, CONTEXT_MARGIN))
        return specs

    def _record(self, item: MediaItem) -> fcache.VideoRecord:
        return fcache.VideoRecord(
            id=item.id, path=safe_text(str(item.path)), kind=item.kind, label=item.label,
            group=item.group, dataset=item.dataset, method=item.method,
        )

    def prepare(self, item: MediaItem, backbones: tuple[str, ...],
                cached: _Cached | None = None, twin: MediaItem | None = None
                ) -> list[Prepared]:
        """Decode, detect and align one item (worker thread). ``cached`` rows mean the item is
        in the cache already and only needs new feature sets: its frames are re-read at the
        cached indices and aligned with the cached landmarks, so rows stay identical. A
        pseudo-fake item (``item.blend_of``) is blended after detection; ``twin``, the
        pseudo-fake of a real ``item``, is made from the same decoded frames and rows."""
        cfg = self.config
        seconds: dict[str, float] = defaultdict(float)
        record = self._record(item)
        t0 = time.perf_counter()
        indices = None if cached is None else np.unique(cached.frames.frame_index)
        info, frames = read_media(item.path, item.kind, indices, count=cfg.frames, fps=cfg.fps,
                                  max_frames=cfg.max_frames, max_pixels=cfg.max_pixels,
                                  keyframes_only=cfg.keyframes_only and cached is None)
        seconds["decode"] += time.perf_counter() - t0
        record.fps, record.width, record.height, record.n_frames = (
            float(info.fps), info.width, info.height, info.n_frames)
        if cached is None:
            rows, origin = detect_rows(frames, self._detector(), cfg, seconds,
                                       face_crop=cfg.face_crops and item.kind == "image")
            kind = "video"
        else:
            by_index = {frame.index: k for k, frame in enumerate(frames)}
            lost = [int(i) for i in indices if int(i) not in by_index]
            if lost:
                raise MediaError(f"frames {lost[:5]} of the cached rows can no longer be decoded")
            rows = cached.frames
            origin = [by_index[int(i)] for i in rows.frame_index]
            kind = "features"
        record.status = "ok" if rows.has_face.any() else "no_face"
        # a truncated video keeps the frames before the damage (the item is still usable and
        # scored) but says so: the warning is stored as its error and printed
        record.error = info.warning
        out = []
        for member in ([item, twin] if twin is not None else [item]):
            member_record = record if member is item else replace(
                record, id=member.id, label=member.label, group=member.group,
                method=member.method)
            if member.blend_of:
                t0 = time.perf_counter()
                frames = self._blend(frames, rows, origin, member.blend_of)
                seconds["blend"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            member_rows, member_origin = rows, origin
            if cfg.augment and cached is None:  # augmented copies follow the original rows
                member_rows, source = expand_rows(rows, cfg.augment)
                member_origin = [origin[k] for k in source]
            crops = align_rows(frames, member_rows, member_origin,
                               self._crop_specs(backbones, cached is None))
            if cfg.augment:
                crops = augment_crops(crops, member_rows, cfg.augment, member.id)
            seconds["align"] += time.perf_counter() - t0
            out.append(Prepared(member, kind, member_record, member_rows, crops, backbones,
                                dict(seconds)))
            seconds = defaultdict(float)
        return out

    def _blend(self, frames: list[Frame], rows: fcache.FrameRows, origin: list[int],
               source_id: str) -> list[Frame]:
        """Copies of ``frames`` with every face row self-blended (one draw per track)."""
        from fakeprobe.synth.media import item_params

        if self.self_blend is None:
            raise FakeprobeError("a self-blend item needs the extractor's self_blend settings")
        images = [frame.image for frame in frames]
        params = {}
        original = rows.columns()["augment"] == ""  # each frame is blended once
        for row in np.flatnonzero(rows.has_face & original):
            track = int(rows.track[row])
            if track not in params:
                params[track] = item_params(self.self_blend.config, self.self_blend.seed,
                                            source_id, track)
            position = origin[row]
            images[position], _ = self_blend(images[position], rows.landmarks[row],
                                             params[track])
        return [Frame(f.index, f.timestamp, image) for f, image in zip(frames, images)]

    def can_use_crops(self, backbones: Iterable[str]) -> bool:
        """True when the cache's stored crops can feed every one of ``backbones``."""
        stored = self._stored_crops
        return stored is not None and all(can_recrop(stored, self.backbones[n].crop)
                                          for n in backbones)

    def prepare_from_crops(self, cache_path: Path, item: MediaItem, backbones: tuple[str, ...],
                           cached: _Cached) -> Prepared:
        """New feature sets for a cached item, cut from its stored crops: nothing is decoded."""
        t0 = time.perf_counter()
        rows = np.arange(cached.rows.start, cached.rows.stop)[cached.frames.has_face]
        with fcache.CacheReader(cache_path) as reader:
            crops = row_crops(reader, rows, [self.backbones[n].crop for n in backbones],
                              strict=True).crops
        return Prepared(item, "features", cached.record, cached.frames, crops, backbones,
                        {"recrop": time.perf_counter() - t0})

    # -- main-thread side ---------------------------------------------------------------------
    def _embed(self, batch: list[Prepared], seconds: dict[str, float]) -> list[dict]:
        """Features of every prepared item, embedding the crops of the whole batch together."""
        out: list[dict[str, np.ndarray]] = [{} for _ in batch]
        for name in sorted({n for p in batch for n in p.backbones}):
            backbone = self.backbones[name]
            members = [k for k, p in enumerate(batch) if name in p.backbones]
            crops = [batch[k].crops[backbone.crop] for k in members]
            stacked = np.concatenate(crops) if crops else np.zeros((0,))
            t0 = time.perf_counter()
            vectors = np.zeros((0, backbone.dim), np.float32)
            if len(stacked):
                vectors = np.concatenate([
                    backbone.embed(stacked[i : i + self.batch_size])
                    for i in range(0, len(stacked), self.batch_size)
                ]).astype(np.float32)
            seconds[f"embed:{name}"] += time.perf_counter() - t0
            offset = 0
            for k, chunk in zip(members, crops):
                full = np.full((len(batch[k].rows), backbone.dim), np.nan, np.float32)
                full[batch[k].rows.has_face] = vectors[offset : offset + len(chunk)]
                out[k][name] = full
                offset += len(chunk)
        return out

    def _stage(self, cache_path: Path, prepared: Prepared, features: dict[str, np.ndarray],
               ) -> None:
        crops = None
        if prepared.kind == "video" and self.config.keep_crops:
            face_crops = prepared.crops[CropSpec(self.config.keep_crops, CONTEXT_MARGIN)]
            size = self.config.keep_crops
            crops = np.zeros((len(prepared.rows), size, size, 3), np.uint8)
            crops[prepared.rows.has_face] = face_crops
        fcache.stage(cache_path, fcache.StagedItem(
            record=prepared.record, kind=prepared.kind,
            rows=prepared.rows if prepared.kind == "video" else None,
            features=features, crops=crops,
        ), settings=self.stage_settings)

    def warm_up(self) -> None:
        """Create the detector and every backbone of the config now and embed one blank crop
        with each, so that the first :meth:`run` pays no start-up (a server's first request).
        The backbones are kept by this extractor; results are unchanged."""
        self._detector()
        self._load_backbones(self.config.backbones)
        for backbone in self.backbones.values():
            size = backbone.crop.size
            backbone.embed(np.zeros((1, size, size, 3), np.uint8))

    def _load_backbones(self, names: Iterable[str]) -> None:
        for name in names:
            if name not in self.backbones:
                self.backbones[name] = BACKBONES.create(
                    name, device=self.device, weights=self.weights.get(name),
                    batch_size=self.batch_size)

    def _plan(self, cache_path: Path, items: list[MediaItem], summary: ExtractSummary
              ) -> list[tuple[MediaItem, tuple[str, ...], _Cached | None]]:
        """What each item still needs: everything, some feature sets, or nothing."""
        wanted = tuple(self.config.backbones)
        state: dict[str, tuple[str, set[str]]] = {}
        cached_rows: dict[str, _Cached] = {}
        if cache_path.exists():
            with fcache.CacheReader(cache_path) as reader:
                fcache.check_config(reader.config, self.config, cache_path)
                for name, stored in reader.feature_sets.items():
                    if name in self.backbones:
                        _check_feature_config(name, stored, self.backbones[name].config(),
                                              cache_path)
                stored_blend = reader.attrs.get("self_blend")
                if (self.self_blend is not None and stored_blend is not None
                        and stored_blend != self.self_blend.to_attr()):
                    raise ConfigMismatch(
                        f"{cache_path}: its pseudo-fakes were blended with other settings "
                        f"({stored_blend}); use the same --blend-seed and blend options, or "
                        "another --out file")
                state = reader.state()
                needs_rows = {vid for vid, (st, done) in state.items()
                              if st in READ_STATUSES and set(wanted) - done}
                if needs_rows:
                    cached_rows = _rows_by_id(reader, needs_rows)
                self._stored_crops = (CropSpec(self.config.keep_crops, CONTEXT_MARGIN)
                                      if reader.has_crops else None)
        plan = []
        for item in items:
            if item.id not in state or fcache.retried(state[item.id][0]):
                plan.append((item, wanted, None))
                continue
            status, done = state[item.id]
            todo = tuple(n for n in wanted if n not in done)
            if status in READ_STATUSES and todo:
                plan.append((item, todo, cached_rows[item.id]))
            else:
                summary.already_done += 1
        return plan

    def run(self, inputs: Iterable[Path | str] | Discovery, cache_path: Path | str, *,
            frame_folders: bool = False, reporter: Reporter | None = None,
            log: Callable[[str], None] | None = None) -> ExtractSummary:
        """Extract every item of ``inputs`` not yet in ``cache_path``; return a summary.

        Failures are recorded in the cache and the summary; the run goes on. On Ctrl-C the
        finished items are committed before ``KeyboardInterrupt`` propagates. The run holds
        the cache's writer lock throughout (a second writer is refused at once), and what it
        stages carries its settings (re-entrant: the CLI already holds it).
        """
        attrs = {"self_blend": self.self_blend.to_attr()} if self.self_blend else {}
        with fcache.writer(cache_path, self.config, attrs, log=log):
            return self._run(inputs, cache_path, frame_folders=frame_folders,
                             reporter=reporter, log=log)

    def _begin(self, inputs: Iterable[Path | str] | Discovery, cache_path: Path,
               frame_folders: bool) -> tuple[ExtractSummary, Discovery]:
        """The start every run shares: commit what a killed run left staged (under the settings
        it was made with), then find the items (with their self-blended twins when asked)."""
        summary = ExtractSummary(cache=str(cache_path))
        if fcache.staged_files(cache_path):
            summary.committed += self._commit(cache_path)
        found = inputs if isinstance(inputs, Discovery) else discover(
            inputs, frame_folders=frame_folders)
        if self.self_blend is not None:
            found = with_self_blends(found)
        summary.found, summary.problems = len(found.items), list(found.problems)
        return summary, found

    def _run(self, inputs: Iterable[Path | str] | Discovery, cache_path: Path | str, *,
             frame_folders: bool = False, reporter: Reporter | None = None,
             log: Callable[[str], None] | None = None) -> ExtractSummary:
        cache_path = Path(cache_path)
        reporter = reporter or Silent()
        log = log or (lambda message: None)
        started = time.perf_counter()
        seconds: dict[str, float] = defaultdict(float)
        summary, found = self._begin(inputs, cache_path, frame_folders)
        self._detector()  # fail now, not in a worker, on a detector that cannot be made
        self._load_backbones(self.config.backbones)
        plan = _pair_twins(self._plan(cache_path, found.items, summary))
        reporter.start(sum(1 + (twin is not None) for _, _, _, twin in plan))

        def record_failure(item: MediaItem, error: MediaError) -> None:
            message = safe_text(str(error))  # an error's text may carry a name's raw bytes
            record = fcache.VideoRecord(
                id=item.id, path=safe_text(str(item.path)), kind=item.kind, label=item.label,
                group=item.group, dataset=item.dataset, method=item.method,
                status=error.status, error=message)
            fcache.stage(cache_path, fcache.StagedItem(record=record))
            summary.failed += 1
            summary.failures.append({"id": item.id, "status": error.status, "error": message})
            log(f"{item.id}: {message}")
            reporter.advance(item, error.status, message)

        def finish(batch: list[Prepared]) -> None:
            for prepared, features in zip(batch, self._embed(batch, seconds)):
                t0 = time.perf_counter()
                self._stage(cache_path, prepared, features)
                seconds["stage"] += time.perf_counter() - t0
                for key, value in prepared.seconds.items():
                    seconds[key] += value
                if prepared.record.error and prepared.kind == "video":
                    summary.warnings.append({"id": prepared.item.id,
                                             "warning": prepared.record.error})
                    log(f"{prepared.item.id}: {prepared.record.error}")
                if prepared.kind == "video":
                    summary.extracted += 1
                    summary.rows += len(prepared.rows)
                    summary.faces += int(prepared.rows.has_face.sum())
                else:
                    summary.features_added += 1
                reporter.advance(prepared.item, prepared.record.status)

        last_commit = time.perf_counter()
        queue = iter(plan)
        in_flight: dict[Future, MediaItem] = {}
        ready: list[Prepared] = []
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="extract")
        try:
            while True:
                while len(in_flight) < 2 * self.workers + 1:
                    entry = next(queue, None)
                    if entry is None:
                        break
                    item, names, cached, twin = entry
                    members = [item] + ([twin] if twin is not None else [])
                    if cached is not None and self.can_use_crops(names):
                        ready.append(self.prepare_from_crops(cache_path, item, names, cached))
                        continue
                    if not item.exists:
                        for member in members:
                            record_failure(member, MediaError("file not found",
                                                              status="missing"))
                        continue
                    future = executor.submit(self.prepare, item, names, cached, twin)
                    in_flight[future] = members
                if not in_flight and not ready:
                    break
                t0 = time.perf_counter()
                done, _ = wait(in_flight, timeout=0 if ready else None,
                               return_when=FIRST_COMPLETED)
                seconds["main_wait"] += time.perf_counter() - t0  # high: workers limit the run
                for future in done:
                    members = in_flight.pop(future)
                    try:
                        ready.extend(future.result())
                    except MediaError as error:
                        for member in members:
                            record_failure(member, error)
                    except (OSError, ValueError, RuntimeError) as error:  # cv2.error is one
                        for member in members:
                            record_failure(member, MediaError(
                                f"{error.__class__.__name__}: {error}"))
                n_crops = sum(len(p.rows) for p in ready)
                if ready and (n_crops >= self.batch_size or not done or not in_flight):
                    finish(ready)
                    ready = []
                if time.perf_counter() - last_commit > self.commit_every:
                    summary.committed += self._commit(cache_path)
                    last_commit = time.perf_counter()
        except KeyboardInterrupt:
            summary.interrupted = True
            executor.shutdown(wait=True, cancel_futures=True)
            summary.committed += self._commit(cache_path)
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
            if not summary.interrupted:
                t0 = time.perf_counter()
                summary.committed += self._commit(cache_path)
                seconds["commit"] += time.perf_counter() - t0
            summary.seconds = time.perf_counter() - started
            summary.stage_seconds = dict(seconds)
        return summary

    def _commit(self, cache_path: Path) -> int:
        configs = {name: backbone.config() for name, backbone in self.backbones.items()}
        attrs = {"self_blend": self.self_blend.to_attr()} if self.self_blend else {}
        return fcache.commit(cache_path, self.config, configs, attrs)


def _pair_twins(plan: list[tuple[MediaItem, tuple[str, ...], _Cached | None]]
                ) -> list[tuple[MediaItem, tuple[str, ...], _Cached | None, MediaItem | None]]:
    """Plan entries with each new pseudo-fake joined to its new source real, so the two share
    one decode and one detection; the others stay alone."""
    fresh = {item.id: k for k, (item, _, cached) in enumerate(plan) if cached is None}
    twins: dict[int, MediaItem] = {}
    for item, names, cached in plan:
        source = fresh.get(item.blend_of) if item.blend_of and cached is None else None
        if source is not None and plan[source][1] == names:
            twins[source] = item
    joined = {twin.id for twin in twins.values()}
    return [(item, names, cached, twins.get(k)) for k, (item, names, cached) in enumerate(plan)
            if item.id not in joined]


def _check_feature_config(name: str, stored: dict, current: dict, path: Path) -> None:
    """A feature set must come from the same weights and crop in every row of a cache."""
    differences = fcache.feature_config_differences(stored, current)
    if differences:
        raise ConfigMismatch(
            f"{path}: feature set {name!r} was made otherwise than this run would make it "
            f"({'; '.join(differences)}; cache vs now); use another --out file")


def _plain(value):
    """A numpy scalar as the Python value (for JSON)."""
    return value.item() if hasattr(value, "item") else value


@dataclass(frozen=True)
class _Cached:
    """An item as the cache holds it: its record, its rows' position and their columns."""

    record: fcache.VideoRecord
    rows: slice
    frames: fcache.FrameRows


def _rows_by_id(reader: fcache.CacheReader, ids: set[str]) -> dict[str, _Cached]:
    videos = reader.videos()
    frames = reader.frames()
    labels = {"real": "real", "fake": "fake"}
    out = {}
    for position, rows in reader.iter_video_rows():
        vid = videos["id"][position]
        if vid in ids:
            record = fcache.VideoRecord(**{
                key: labels.get(videos[key][position]) if key == "label"
                else _plain(videos[key][position])
                for key in fcache.VideoRecord.__dataclass_fields__})
            out[vid] = _Cached(record, rows, fcache.FrameRows(
                **{k: v[rows] for k, v in frames.items() if k != "video"}))
    return out


def extract(inputs: Iterable[Path | str], cache_path: Path | str,
            config: ExtractorConfig | None = None, **options) -> ExtractSummary:
    """Extract ``inputs`` into ``cache_path`` (see :class:`Extractor` for the options)."""
    run_options = {k: options.pop(k) for k in ("frame_folders", "reporter", "log")
                   if k in options}
    try:
        extractor = Extractor(config or ExtractorConfig(), **options)
    except TypeError as exc:
        raise FakeprobeError(str(exc)) from None
    return extractor.run(inputs, cache_path, **run_options)
