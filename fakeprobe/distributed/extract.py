"""``extract --engine dask``: the items of a run as tasks on a Dask cluster.

The driver plans the run as a plain one does (what the cache lacks), holds the cache's writer
lock, and commits what the workers stage. Each task extracts one item (a real and its
pseudo-fake together) in a worker process that holds the networks once
(:class:`ExtractorPlugin`) and stages it through :func:`fakeprobe.features.cache.stage`, the
crash-safe path of a plain run; the staged files are the results, the task returns only a few
numbers. Faults:

* a worker that dies loses at most its running task, which Dask runs again elsewhere; a task
  whose item was already staged (it died after staging) finds the item's *claim*
  (``<cache>.staging/claims/``) and returns what it recorded instead of redoing the item;
* a killed driver leaves whole staged items beside the cache; the next run commits them first,
  then skips every item the cache holds, as a plain rerun does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable

from distributed import WorkerPlugin

from fakeprobe.datasets import Discovery, MediaItem, safe_text
from fakeprobe.errors import FakeprobeError, MediaError
from fakeprobe.features import cache as fcache
from fakeprobe.pipeline.progress import ExtractSummary, Reporter, Silent
from fakeprobe.pipeline.run import Extractor, _pair_twins
from fakeprobe.distributed.cluster import connect

#: Dask's name of the plugin that holds a worker's extractor, followed by its settings' digest.
PLUGIN_PREFIX = "fakeprobe-extractor-"


class ExtractorPlugin(WorkerPlugin):
    """Worker state: one :class:`Extractor` per worker process, made on first use (the
    networks load once per worker, in the task thread, not on the worker's event loop)."""

    def __init__(self, settings: dict[str, Any], stage_settings: dict[str, Any]) -> None:
        self.settings = settings
        self.stage_settings = stage_settings
        self._extractor: Extractor | None = None

    def setup(self, worker) -> None:  # noqa: D401  (distributed.WorkerPlugin hook)
        self._extractor = None

    def teardown(self, worker) -> None:
        self._extractor = None

    @property
    def extractor(self) -> Extractor:
        if self._extractor is None:
            extractor = Extractor(**self.settings, workers=1)
            extractor.stage_settings = self.stage_settings
            extractor._load_backbones(extractor.config.backbones)
            self._extractor = extractor
        return self._extractor


def claims_dir(cache_path: Path | str) -> Path:
    """Where tasks record the items they staged during a run (removed when it ends)."""
    return fcache.staging_dir(cache_path) / "claims"


def _claim_path(cache_path: Path | str, item_id: str) -> Path:
    return claims_dir(cache_path) / (hashlib.sha1(item_id.encode()).hexdigest() + ".json")


def extract_task(entry: tuple, plugin_name: str, cache_path: str) -> list[dict[str, Any]]:
    """One task: the item of ``entry`` (a plan entry) extracted and staged by this worker."""
    from distributed import get_worker

    return extract_entry(get_worker().plugins[plugin_name].extractor, Path(cache_path), entry)


def extract_entry(extractor: Extractor, cache_path: Path, entry: tuple
                  ) -> list[dict[str, Any]]:
    """Extract and stage one plan entry ``(item, backbones, cached, twin)``; return one outcome
    per staged item. An entry already claimed in this run returns its recorded outcomes."""
    item = entry[0]
    claim = _claim_path(cache_path, item.id)
    with contextlib.suppress(OSError, ValueError):
        outcomes = json.loads(claim.read_text(encoding="utf-8"))
        return [{**outcome, "reused": True} for outcome in outcomes]
    outcomes = _extract(extractor, cache_path, *entry)
    claim.parent.mkdir(parents=True, exist_ok=True)
    tmp = claim.with_name(f".{claim.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(outcomes), encoding="utf-8")
    os.replace(tmp, claim)
    return outcomes


def _extract(extractor: Extractor, cache_path: Path, item: MediaItem, names: tuple[str, ...],
             cached, twin: MediaItem | None) -> list[dict[str, Any]]:
    members = [item] + ([twin] if twin is not None else [])
    # the claims folder keeps the staging folder in place while tasks stage into it
    claims_dir(cache_path).mkdir(parents=True, exist_ok=True)
    if not item.exists:
        return [_failure(extractor, cache_path, m, MediaError("file not found",
                                                              status="missing"))
                for m in members]
    try:
        prepared = extractor.prepare(item, names, cached, twin)
    except MediaError as error:
        return [_failure(extractor, cache_path, m, error) for m in members]
    except (OSError, ValueError, RuntimeError) as error:  # cv2.error is one
        return [_failure(extractor, cache_path, m,
                         MediaError(f"{error.__class__.__name__}: {error}")) for m in members]
    seconds: dict[str, float] = defaultdict(float)
    features = extractor._embed(prepared, seconds)
    outcomes = []
    for prepared_item, vectors in zip(prepared, features):
        t0 = time.perf_counter()
        extractor._stage(cache_path, prepared_item, vectors)
        spent = {**prepared_item.seconds, "stage": time.perf_counter() - t0}
        if not outcomes:
            spent.update(seconds)  # the task's embedding, counted once
        outcomes.append({
            "id": prepared_item.item.id, "status": prepared_item.record.status,
            "kind": prepared_item.kind, "rows": len(prepared_item.rows),
            "faces": int(prepared_item.rows.has_face.sum()),
            "warning": prepared_item.record.error if prepared_item.kind == "video" else None,
            "error": None, "seconds": spent, "pid": os.getpid()})
    return outcomes


def _failure(extractor: Extractor, cache_path: Path, item: MediaItem, error: MediaError
             ) -> dict[str, Any]:
    message = safe_text(str(error))
    fcache.stage(cache_path, fcache.StagedItem(record=fcache.VideoRecord(
        id=item.id, path=safe_text(str(item.path)), kind=item.kind, label=item.label,
        group=item.group, dataset=item.dataset, method=item.method, status=error.status,
        error=message)), settings=extractor.stage_settings)
    return {"id": item.id, "status": error.status, "kind": "failure", "rows": 0, "faces": 0,
            "warning": None, "error": message, "seconds": {}, "pid": os.getpid()}


class ClusterExtractor(Extractor):
    """An :class:`Extractor` whose items run as tasks on a Dask cluster: ``address`` of a
    scheduler, or a local cluster of ``cluster_workers`` processes. Call :meth:`run`."""

    def __init__(self, config, *, address: str | None = None, cluster_workers: int = 2,
                 memory_limit: str | int | None = None, **options: Any) -> None:
        super().__init__(config, **options)
        self.address = address
        self.cluster_workers = max(1, cluster_workers)
        self.memory_limit = memory_limit

    def _settings(self) -> dict[str, Any]:
        return {"config": self.config, "device": self.device, "batch_size": self.batch_size,
                "weights": dict(self.weights), "detector_weights": self.detector_weights,
                "self_blend": self.self_blend}

    def _run(self, inputs: Iterable[Path | str] | Discovery, cache_path: Path | str, *,
             frame_folders: bool = False, reporter: Reporter | None = None,
             log: Callable[[str], None] | None = None) -> ExtractSummary:
        cache_path = Path(cache_path)
        reporter = reporter or Silent()
        log = log or (lambda message: None)
        started = time.perf_counter()
        seconds: dict[str, float] = defaultdict(float)
        # what a killed run left: its staged items are committed, its claims forgotten
        summary, found = self._begin(inputs, cache_path, frame_folders)
        shutil.rmtree(claims_dir(cache_path), ignore_errors=True)
        self._load_backbones(self.config.backbones)  # their configs go into every commit
        plan = _pair_twins(self._plan(cache_path, found.items, summary))
        reporter.start(sum(1 + (twin is not None) for _, _, _, twin in plan))
        items = {entry[0].id: entry for entry in plan}

        def account(outcomes: list[dict[str, Any]], members: list[MediaItem]) -> None:
            for outcome, member in zip(outcomes, members):
                if outcome.get("reused"):
                    log(f"{outcome['id']}: staged by a worker that died before it could say "
                        "so; not extracted again")
                for key, value in outcome["seconds"].items():
                    seconds[key] += value
                if outcome["kind"] == "failure":
                    summary.failed += 1
                    summary.failures.append({"id": outcome["id"], "status": outcome["status"],
                                             "error": outcome["error"]})
                    log(f"{outcome['id']}: {outcome['error']}")
                    reporter.advance(member, outcome["status"], outcome["error"])
                    continue
                if outcome["warning"]:
                    summary.warnings.append({"id": outcome["id"], "warning": outcome["warning"]})
                    log(f"{outcome['id']}: {outcome['warning']}")
                if outcome["kind"] == "video":
                    summary.extracted += 1
                    summary.rows += outcome["rows"]
                    summary.faces += outcome["faces"]
                else:
                    summary.features_added += 1
                reporter.advance(member, outcome["status"])

        # new feature sets cut from stored crops read the cache: the driver does those
        remote = []
        for entry in plan:
            item, names, cached, _ = entry
            if cached is not None and self.can_use_crops(names):
                prepared = self.prepare_from_crops(cache_path, item, names, cached)
                self._stage(cache_path, prepared, self._embed([prepared], seconds)[0])
                account([{"id": item.id, "status": prepared.record.status,
                          "kind": "features", "rows": 0, "faces": 0, "warning": None,
                          "error": None, "seconds": prepared.seconds}], [item])
            else:
                remote.append(entry)
        try:
            if remote:
                self._run_tasks(remote, cache_path, items, account, summary, seconds)
        except KeyboardInterrupt:
            summary.interrupted = True
            summary.committed += self._commit(cache_path)
            raise
        finally:
            if not summary.interrupted:
                t0 = time.perf_counter()
                summary.committed += self._commit(cache_path)
                seconds["commit"] += time.perf_counter() - t0
                shutil.rmtree(claims_dir(cache_path), ignore_errors=True)
                with contextlib.suppress(OSError):
                    fcache.staging_dir(cache_path).rmdir()
            summary.seconds = time.perf_counter() - started
            summary.stage_seconds = dict(seconds)
        return summary

    def _run_tasks(self, plan: list[tuple], cache_path: Path, items: dict[str, tuple],
                   account: Callable, summary: ExtractSummary,
                   seconds: dict[str, float]) -> None:
        from distributed import as_completed
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        settings = self._settings()
        digest = hashlib.sha1(repr(sorted(settings.items(), key=lambda kv: kv[0])).encode())
        plugin_name = PLUGIN_PREFIX + digest.hexdigest()[:12]
        claims_dir(cache_path).mkdir(parents=True, exist_ok=True)
        last_commit = time.perf_counter()
        with connect(self.address, self.cluster_workers, self.memory_limit) as client:
            attrs = {"self_blend": self.self_blend.to_attr()} if self.self_blend else {}
            stage_settings = fcache.run_settings(self.config, attrs)
            client.register_plugin(ExtractorPlugin(settings, stage_settings), name=plugin_name)
            futures = client.map(extract_task, plan, plugin_name=plugin_name,
                                 cache_path=str(cache_path), pure=False)
            first = {future.key: entry[0].id for future, entry in zip(futures, plan)}
            done = as_completed(futures)
            del futures  # each future is released once its outcomes are read
            try:
                t0 = time.perf_counter()
                for future in done:
                    seconds["main_wait"] += time.perf_counter() - t0
                    item, _, _, twin = items[first[future.key]]
                    try:
                        outcomes = future.result()
                    except KilledWorker as exc:
                        raise FakeprobeError(
                            f"{item.id}: every worker that ran it died ({exc}); the items "
                            "staged so far are committed: run the same command again to "
                            "resume") from None
                    future.release()
                    account(outcomes, [item] + ([twin] if twin is not None else []))
                    if time.perf_counter() - last_commit > self.commit_every:
                        t1 = time.perf_counter()
                        summary.committed += self._commit(cache_path)
                        seconds["commit"] += time.perf_counter() - t1
                        last_commit = time.perf_counter()
                    t0 = time.perf_counter()
            except (KeyboardInterrupt, FutureCancelledError):
                with contextlib.suppress(Exception):
                    client.cancel(list(done.futures))
                raise


def extract(inputs: Iterable[Path | str] | Discovery, cache_path: Path | str, config,
            **options: Any) -> ExtractSummary:
    """Extract ``inputs`` into ``cache_path`` on a Dask cluster (see
    :class:`ClusterExtractor`): ``workers`` is the number of local worker processes (each
    runs one item at a time); ``frame_folders``, ``reporter`` and ``log`` go to the run."""
    run_options = {k: options.pop(k) for k in ("frame_folders", "reporter", "log")
                   if k in options}
    options["cluster_workers"] = options.pop("workers", 2)
    extractor = ClusterExtractor(config, **options)
    return extractor.run(inputs, cache_path, **run_options)
