"""The Dask engine on real FF++ c40 clips from ../shared/data: a cluster run gives the cache a
plain run gives, item for item, also when a worker or the driver is killed mid-run; the XGBoost
head through ``xgboost.dask`` on features read in chunks scores as the in-memory one.

These tests fail, not skip, under CI=true when the data or Dask is missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fakeprobe
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.features.cache import CacheReader, run_settings, staging_dir

from conftest import FFPP_C40, skip_unless_ci, write_ffpp_manifest

pytestmark = pytest.mark.shared_data

FRAMES = 4


def require_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        skip_unless_ci("dask is not installed", 'the dev install has "fakeprobe[dask]"')


@pytest.fixture(scope="module")
def manifest(shared_data, tmp_path_factory) -> Path:
    """A CSV manifest of the six FF++ c40 clips of :data:`FFPP_C40`."""
    require_dask()
    return write_ffpp_manifest(tmp_path_factory.mktemp("dist") / "ffpp.csv", FFPP_C40, shared_data)


@pytest.fixture(scope="module")
def plain_cache(manifest) -> Path:
    """The six clips extracted by a plain (one-process) run: what every engine must give."""
    out = manifest.with_name("plain.h5")
    assert fakeprobe.extract(manifest, out, frames=FRAMES).summary.extracted == 6
    return out


def cache_by_id(path: Path) -> dict[str, dict]:
    """Every item of a cache keyed by id: its record, its rows' columns and its features."""
    out = {}
    with CacheReader(path) as reader:
        videos, frames = reader.videos(), reader.frames()
        sets = sorted(reader.feature_sets)
        for position, rows in reader.iter_video_rows():
            out[str(videos["id"][position])] = {
                "record": {k: videos[k][position] for k in videos
                           if k not in ("row_start", "row_count")},
                "rows": {k: v[rows] for k, v in frames.items() if k != "video"},
                "features": {name: reader.features(name, rows) for name in sets},
            }
    return out


def assert_same_cache(got: Path, want: Path) -> None:
    a, b = cache_by_id(got), cache_by_id(want)
    assert sorted(a) == sorted(b)
    for vid in b:
        for key, value in b[vid]["record"].items():
            assert a[vid]["record"][key] == value or (value != value and a[vid]["record"][key]
                                                       != a[vid]["record"][key]), (vid, key)
        for key, value in b[vid]["rows"].items():
            if np.issubdtype(np.asarray(value).dtype, np.number):
                np.testing.assert_allclose(a[vid]["rows"][key], value, rtol=0, atol=1e-6,
                                           err_msg=f"{vid} {key}")
            else:
                np.testing.assert_array_equal(a[vid]["rows"][key], value,
                                              err_msg=f"{vid} {key}")
        assert sorted(a[vid]["features"]) == sorted(b[vid]["features"])
        for name, value in b[vid]["features"].items():
            np.testing.assert_allclose(a[vid]["features"][name], value, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{vid} {name}")


def test_a_local_cluster_gives_the_plain_cache(manifest, plain_cache, tmp_path):
    out = tmp_path / "dask.h5"
    result = fakeprobe.extract(manifest, out, frames=FRAMES, engine="dask", workers=2)
    assert result.summary.extracted == 6 and result.summary.failed == 0
    assert_same_cache(out, plain_cache)
    assert not staging_dir(out).exists()
    again = fakeprobe.extract(manifest, out, engine="dask", workers=2)
    assert again.summary.already_done == 6 and again.summary.extracted == 0


class KillOnce:
    """A worker plugin that kills its own worker process (SIGKILL: no goodbye to the
    scheduler) when an extraction task finishes executing there, once per ``marker`` file: the
    item is staged but its result never leaves the worker."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def setup(self, worker) -> None:
        pass

    def teardown(self, worker) -> None:
        pass

    def transition(self, key, start, finish, **kwargs) -> None:
        name = key if isinstance(key, str) else str(key)
        if "extract_task" in name and start == "executing" and finish == "memory":
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_loses_nothing_and_redoes_nothing(manifest, plain_cache, tmp_path):
    from distributed import Client, LocalCluster, WorkerPlugin

    plugin = type("KillOncePlugin", (KillOnce, WorkerPlugin), {})(str(tmp_path / "killed"))
    out = tmp_path / "dask.h5"
    notes: list[str] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        client.register_plugin(plugin, name="kill-once")
        result = fakeprobe.extract(manifest, out, frames=FRAMES, engine="dask",
                                   address=cluster.scheduler_address, log=notes.append)
    killed = int((tmp_path / "killed").read_text())
    assert killed > 0
    assert result.summary.extracted == 6 and result.summary.failed == 0
    # the item the dead worker staged is taken from its claim, not extracted again
    reused = [n for n in notes if "not extracted again" in n]
    assert len(reused) == 1, notes
    assert_same_cache(out, plain_cache)


def test_a_killed_driver_resumes_into_the_same_cache(manifest, plain_cache, tmp_path):
    out = tmp_path / "dask.h5"
    command = [sys.executable, "-m", "fakeprobe", "extract", str(manifest), "--out", str(out),
               "--frames", str(FRAMES), "--engine", "dask", "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(staging_dir(out).glob("*.npz")):
            assert proc.poll() is None, "the run ended before it staged an item"
            assert time.monotonic() < deadline, "no item staged in 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local cluster, at once
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    staged = sorted(staging_dir(out).glob("*.npz"))
    assert staged
    # what the workers staged carries the run's settings, as a plain run's items do
    made = json.loads(str(np.load(staged[0])["meta"]))["settings"]
    assert made == run_settings(ExtractorConfig(frames=FRAMES))
    left = len(staged)
    rerun = fakeprobe.extract(manifest, out, frames=FRAMES, engine="dask", workers=2)
    summary = rerun.summary
    assert summary.committed >= left + summary.extracted
    assert summary.extracted < 6 and summary.extracted + summary.already_done == 6
    assert_same_cache(out, plain_cache)


@pytest.mark.slow
def test_every_ffpp_c40_clip_on_a_local_cluster(shared_data, tmp_path):
    require_dask()
    rels = sorted(str(p.relative_to(shared_data))
                  for p in (shared_data / "ffpp").rglob("c40/videos/*.mp4"))
    listing = write_ffpp_manifest(tmp_path / "all.csv", rels, shared_data)
    plain, dask = tmp_path / "plain.h5", tmp_path / "dask.h5"
    assert fakeprobe.extract(listing, plain, frames=FRAMES).summary.extracted == len(rels)
    fakeprobe.extract(listing, dask, frames=FRAMES, engine="dask", workers=2)
    assert_same_cache(dask, plain)


def test_a_missing_extra_is_one_line_with_the_install_command(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from fakeprobe.cli import app

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"")
    result = CliRunner().invoke(app, ["extract", str(media), "--out", str(tmp_path / "c.h5"),
                                      "--engine", "dask"])
    assert result.exit_code == 1
    assert 'pip install "fakeprobe[dask]"' in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "c.h5").exists()


def test_xgb_on_a_cluster_reads_chunks_and_scores_as_in_memory(tmp_path):
    """fit-xgb --engine dask on a cache read 100 rows at a time (a tenth of its feature
    matrix per chunk): the same grouped folds and, to sampling noise, the same AUCs as the
    in-memory fit."""
    require_dask()
    from test_heads import make_cache
    from typer.testing import CliRunner

    from fakeprobe.cli import app

    cache = make_cache(tmp_path / "syn.h5", n_groups=40, shift=0.6, seed=1)
    memory = fakeprobe.fit(cache, "xgb", features=["feat"]).report
    run = CliRunner().invoke(app, ["fit-xgb", str(cache), "--features", "feat", "--engine",
                                   "dask", "--workers", "2", "--chunk-rows", "100", "--json"])
    assert run.exit_code == 0, run.output
    got = json.loads(run.output[run.output.index("{"):])
    assert got["n_rows"] == memory.n_frames == 960 and got["chunk_rows"] * 9 < got["n_rows"]
    assert [(f["train_items"], f["test_items"]) for f in got["folds"]] == [
        (f.train_videos, f.test_videos) for f in memory.folds]
    assert got["excluded"] == [{"id": "d/faceless", "reason":
                                "no_face: no face in any sampled frame"}]
    assert 0.65 < memory.video["roc_auc"] < 0.9  # a signal, but no trivial 1.0
    assert got["video_auc"] == pytest.approx(memory.video["roc_auc"], abs=0.03)
    assert got["frame_auc"] == pytest.approx(memory.frame["roc_auc"], abs=0.03)


def test_logreg_out_of_core_scores_close_to_lbfgs(tmp_path):
    """fit-logreg --engine dask: SGD's log loss over 100-row chunks, on the in-memory fit's
    folds and with its regularisation, lands near the lbfgs head's AUC (another optimiser:
    close, not equal)."""
    require_dask()
    from test_heads import make_cache

    from fakeprobe.app.cluster import fit_on_cluster

    cache = make_cache(tmp_path / "syn.h5", n_groups=40, shift=0.6, seed=1)
    memory = fakeprobe.fit(cache, "logreg", features=["feat"]).report
    got = fit_on_cluster(cache, "logreg", features=["feat"], workers=1, chunk_rows=100)
    assert got.head == "logreg" and got.n_rows == 960
    assert [(f["train_items"], f["test_items"]) for f in got.folds] == [
        (f.train_videos, f.test_videos) for f in memory.folds]
    assert 0.65 < memory.video["roc_auc"] < 0.9
    assert got.video_auc == pytest.approx(memory.video["roc_auc"], abs=0.03)
    assert got.frame_auc == pytest.approx(memory.frame["roc_auc"], abs=0.03)
    with pytest.raises(fakeprobe.errors.InvalidOption, match="xgb and logreg only"):
        fit_on_cluster(cache, "svm", features=["feat"])


@pytest.mark.parametrize("head", ["xgb", "logreg"])
def test_a_cluster_fit_saves_a_model_that_scores_as_its_cv_said(head, tmp_path):
    """fit-<head> --engine dask --out: the final model, fitted through the engine on every
    labelled row, is a plain model file with the cluster CV's threshold and scores; on a
    fresh cache ``evaluate`` scores it as it scores the in-memory fit's model."""
    require_dask()
    from test_heads import make_cache
    from typer.testing import CliRunner

    from fakeprobe.classifiers.model import load_model
    from fakeprobe.cli import app

    cache = make_cache(tmp_path / "syn.h5", n_groups=40, shift=0.6, seed=1)
    fresh = make_cache(tmp_path / "fresh.h5", n_groups=40, shift=0.6, seed=3)
    model_path = tmp_path / f"{head}.fpm"
    run = CliRunner().invoke(app, [f"fit-{head}", str(cache), "--features", "feat",
                                   "--engine", "dask", "--workers", "1", "--chunk-rows", "100",
                                   "--out", str(model_path), "--json"])
    assert run.exit_code == 0, run.output
    cv = json.loads(run.output[run.output.index("{"):])
    model = load_model(model_path)
    saved = model.provenance
    assert saved["head"] == head and saved["engine"] == "dask" and saved["features"] == ["feat"]
    assert saved["protocol"] == "cv-5" and saved["training_frames"] == 960
    assert saved["threshold"] == cv["threshold"] and 0.0 < cv["threshold"] < 1.0
    assert saved["cv_video"]["roc_auc"] == pytest.approx(cv["video_auc"])
    assert saved["cv_frame"]["roc_auc"] == pytest.approx(cv["frame_auc"])
    # the pipeline is of the in-memory head's kind
    assert type(model.pipeline.named_steps["clf"]).__name__ == (
        "XGBClassifier" if head == "xgb" else "SGDClassifier")
    memory_path = tmp_path / "memory.fpm"
    memory = fakeprobe.fit(cache, head, memory_path, features=["feat"]).report
    assert cv["threshold"] == pytest.approx(memory.threshold, abs=0.01)
    got, warnings = fakeprobe.evaluate(model_path, fresh)
    want, _ = fakeprobe.evaluate(memory_path, fresh)
    assert warnings == [] and got.threshold == cv["threshold"] and got.n_frames == 960
    assert got.video["roc_auc"] > 0.6  # the fresh cache's signal, not chance
    for key in ("roc_auc", "balanced_accuracy"):
        assert got.video[key] == pytest.approx(want.video[key], abs=0.01), key
        assert got.frame[key] == pytest.approx(want.frame[key], abs=0.01), key
    # on its own training rows the final model scores above its CV (it has seen them)
    seen, _ = fakeprobe.evaluate(model_path, cache)
    assert seen.frame["roc_auc"] > cv["frame_auc"]


def test_predict_runs_with_a_model_fitted_on_a_cluster(manifest, plain_cache, shared_data,
                                                       tmp_path):
    """A model that fit-xgb --engine dask saved from the FF++ clips' features scores a clip
    through ``predict`` (its extractor settings and feature set are the cache's), and the
    score is the one ``evaluate`` gives that clip in the cache."""
    from fakeprobe.app.cluster import fit_on_cluster
    from fakeprobe.app.protocol import Protocol

    model_path = tmp_path / "ffpp.fpm"
    fit_on_cluster(plain_cache, "xgb", protocol=Protocol(folds=3), workers=1, out=model_path)
    clip = shared_data / FFPP_C40[1]
    got = fakeprobe.predict(model_path, [clip]).predictions
    assert len(got) == 1 and got[0].status == "ok" and got[0].frames_used > 0
    scores = {s["id"]: s["score"] for s in fakeprobe.evaluate(model_path, plain_cache
                                                              ).report.video_scores}
    assert got[0].score == pytest.approx(scores[next(k for k in scores if "183_253" in k)],
                                         abs=1e-4)


def test_compare_on_a_cluster_gives_compares_table_on_its_folds(tmp_path):
    """compare --engine dask: xgb and logreg on the folds the in-memory compare makes (every
    item in the same fold), with its numbers; a head the engine does not train is one line."""
    require_dask()
    from test_heads import make_cache
    from typer.testing import CliRunner

    from fakeprobe.cli import app

    cache = make_cache(tmp_path / "syn.h5", n_groups=40, shift=0.6, seed=1)
    memory = {r.head: r for r in fakeprobe.compare(cache, ["xgb", "logreg"], ["feat"]).reports}
    run = CliRunner().invoke(app, ["compare", str(cache), "--features", "feat", "--head",
                                   "xgb", "--head", "logreg", "--engine", "dask", "--workers",
                                   "1", "--chunk-rows", "100", "--save-run",
                                   str(tmp_path / "run.json"), "--json"])
    assert run.exit_code == 0, run.output
    got = {r["head"]: r for r in json.loads(run.output[run.output.index("{"):])["reports"]}
    assert sorted(got) == ["logreg", "xgb"] and (tmp_path / "run.json").exists()
    for head, want in memory.items():
        report = got[head]
        assert report["protocol"] == "cv-5" and report["n_frames"] == want.n_frames == 960
        assert ({s["id"]: s["fold"] for s in report["video_scores"]} ==
                {s["id"]: s["fold"] for s in want.video_scores})
        assert [(f["train_videos"], f["test_videos"]) for f in report["folds"]] == [
            (f.train_videos, f.test_videos) for f in want.folds]
        for level in ("video", "frame"):
            assert report[level]["roc_auc"] == pytest.approx(want_auc := getattr(
                want, level)["roc_auc"], abs=0.03), (head, level, want_auc)
        assert report["video"]["balanced_accuracy"] == pytest.approx(
            want.video["balanced_accuracy"], abs=0.1)
        assert report["excluded"] == [{"id": "d/faceless", "reason":
                                       "no_face: no face in any sampled frame"}]
    refused = CliRunner().invoke(app, ["compare", str(cache), "--features", "feat", "--head",
                                       "svm", "--engine", "dask"])
    # a usage error, as fit-svm --engine dask is: one line in the error box
    message = [line for line in refused.output.splitlines() if "Invalid value" in line]
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert len(message) == 1 and "--head: --engine dask: xgb and logreg only, not svm" in (
        message[0])
