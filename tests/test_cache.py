"""The HDF5 cache: round trips, commits, schema and config checks, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from fakeprobe.core.config import ExtractorConfig
from fakeprobe.errors import CacheError, ConfigMismatch, SchemaMismatch
from fakeprobe.features import cache as fcache


def make_rows(n: int, seed: int = 0, faces: bool = True) -> fcache.FrameRows:
    rng = np.random.default_rng(seed)
    has_face = np.ones(n, bool) if faces else np.zeros(n, bool)
    if faces and n > 1:
        has_face[1] = False
    return fcache.FrameRows(
        frame_index=np.arange(n) * 3, timestamp=np.arange(n) / 10.0,
        box=rng.random((n, 4)).astype(np.float32),
        landmarks=rng.random((n, 5, 2)).astype(np.float32),
        score=rng.random(n).astype(np.float32), track=np.zeros(n, np.int32), has_face=has_face,
    )


def record(vid: str, label: str | None = "real", status: str = "ok") -> fcache.VideoRecord:
    return fcache.VideoRecord(id=vid, path=f"/x/{vid}", kind="video", label=label,
                              group=f"g-{vid}", dataset="d", method="m", fps=25.0, width=64,
                              height=48, n_frames=100, status=status)


CONFIG = ExtractorConfig(frames=4, backbones=("a",))
TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("n_rows,dim,dtype", [(1, 1, np.float32), (4, 7, np.float64),
                                              (33, 1280, np.float32), (0, 3, np.float32)])
def test_round_trip(tmp_path, n_rows, dim, dtype):
    path = tmp_path / "c.h5"
    rows = make_rows(n_rows, seed=n_rows)
    feats = np.random.default_rng(1).random((n_rows, dim)).astype(dtype)
    item = fcache.StagedItem(record(f"v{n_rows}", status="ok" if n_rows else "no_face"),
                             rows=rows, features={"a": feats})
    fcache.stage(path, item)
    assert fcache.commit(path, CONFIG, {"a": {"name": "a", "sha256": "abc"}}) == 1
    with fcache.CacheReader(path) as cache:
        videos = cache.videos()
        assert videos["id"].tolist() == [f"v{n_rows}"]
        assert videos["label"].tolist() == ["real"]
        assert int(videos["row_count"][0]) == n_rows
        frames = cache.frames()
        for name, values in rows.columns().items():
            np.testing.assert_array_equal(frames[name], values)
        assert np.all(frames["video"] == 0)
        np.testing.assert_allclose(cache.features("a"), feats.astype(np.float32))
        assert cache.feature_sets["a"] == {"name": "a", "sha256": "abc", "dim": dim}
        assert cache.config == CONFIG
        assert cache.feature_done("a").tolist() == [True]


def test_commit_appends_dedupes_and_fills_missing_features_with_nan(tmp_path):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(3),
                                         features={"a": np.ones((3, 2))}))
    fcache.commit(path, CONFIG)
    # the same id again (a repeat after a crash) and a new item with a new feature set
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(3),
                                         features={"a": np.ones((3, 2))}))
    fcache.stage(path, fcache.StagedItem(record("v2", label="fake"), rows=make_rows(2),
                                         features={"a": np.zeros((2, 2)),
                                                   "b": np.full((2, 4), 5.0)}))
    assert fcache.commit(path, CONFIG) == 1
    with fcache.CacheReader(path) as cache:
        assert cache.videos()["id"].tolist() == ["v1", "v2"]
        assert cache.n_rows == 5
        b = cache.features("b")
        assert np.isnan(b[:3]).all() and (b[3:] == 5).all()
        assert cache.feature_done("b").tolist() == [False, True]
        assert cache.frames(("video",))["video"].tolist() == [0, 0, 0, 1, 1]
    assert not fcache.staging_dir(path).exists()


def test_feature_items_fill_cached_rows(tmp_path):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(3),
                                         features={"a": np.ones((3, 2))}))
    fcache.stage(path, fcache.StagedItem(record("v2"), rows=make_rows(2),
                                         features={"a": np.ones((2, 2))}))
    fcache.commit(path, CONFIG)
    fcache.stage(path, fcache.StagedItem(record("v2"), kind="features",
                                         features={"b": np.arange(2.0)[:, None]}))
    fcache.commit(path, CONFIG)
    with fcache.CacheReader(path) as cache:
        b = cache.features("b")[:, 0]
        assert np.isnan(b[:3]).all() and b[3:].tolist() == [0.0, 1.0]
        assert cache.state()["v2"] == ("ok", {"a", "b"})
        assert cache.state()["v1"] == ("ok", {"a"})


def test_missing_items_are_retried_and_replaced(tmp_path):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1", status="missing")))
    fcache.commit(path, CONFIG)
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(2),
                                         features={"a": np.ones((2, 2))}))
    assert fcache.commit(path, CONFIG) == 1
    with fcache.CacheReader(path) as cache:
        assert cache.videos()["status"].tolist() == ["ok"]
        assert cache.n_videos == 1 and cache.n_rows == 2


def test_schema_and_config_mismatch_are_typed_errors(tmp_path):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(1),
                                         features={"a": np.ones((1, 2))}))
    fcache.commit(path, CONFIG)
    other = ExtractorConfig(frames=8, backbones=("a",))
    fcache.stage(path, fcache.StagedItem(record("v2"), rows=make_rows(1),
                                         features={"a": np.ones((1, 2))}))
    with pytest.raises(ConfigMismatch, match="frames: cache 4 vs asked 8"):
        fcache.commit(path, other)
    # a new backbone is not a mismatch: the stored config learns it
    fcache.commit(path, ExtractorConfig(frames=4, backbones=("b",)))
    with fcache.CacheReader(path) as cache:
        assert cache.config.backbones == ("a", "b")
    with h5py.File(path, "r+") as h5:
        h5.attrs["schema_version"] = 99
    with pytest.raises(SchemaMismatch, match="version 99"):
        fcache.CacheReader(path)


def test_not_a_cache(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("nope")
    with pytest.raises(CacheError, match="cannot open"):
        fcache.CacheReader(junk)
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = 1
    with pytest.raises(SchemaMismatch, match="not a fakeprobe cache"):
        fcache.CacheReader(tmp_path / "other.h5")


def test_a_crash_during_commit_leaves_the_cache_and_staged_items_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(2),
                                         features={"a": np.ones((2, 2))}))
    fcache.commit(path, CONFIG)
    before = path.read_bytes()
    fcache.stage(path, fcache.StagedItem(record("v2"), rows=make_rows(2),
                                         features={"a": np.ones((2, 2))}))

    def boom(self, items):
        raise KeyboardInterrupt

    monkeypatch.setattr(fcache.Merger, "merge", boom)
    with pytest.raises(KeyboardInterrupt):
        fcache.commit(path, CONFIG)
    assert path.read_bytes() == before  # rolled back, appended bytes cut off
    assert len(fcache.staged_files(path)) == 1
    assert not fcache.journal_path(path).exists()
    assert not list(tmp_path.glob(".*.tmp*"))
    monkeypatch.undo()
    assert fcache.commit(path, CONFIG) == 1


def test_half_written_staged_files_are_ignored(tmp_path):
    path = tmp_path / "c.h5"
    folder = fcache.staging_dir(path)
    folder.mkdir()
    (folder / ".20260101-dead.tmp").write_bytes(b"half")
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(1),
                                         features={"a": np.ones((1, 2))}))
    (folder / f".20260101-dead.{2**22 + 1}.tmp").write_bytes(b"half")  # no such pid
    live = folder / f".20260101-live.{os.getpid()}.tmp"
    live.write_bytes(b"being written")
    assert len(fcache.staged_files(path)) == 1
    with fcache.writer(path):  # leftovers are cleared only by the lock's holder
        assert not (folder / ".20260101-dead.tmp").exists()
        assert not (folder / f".20260101-dead.{2**22 + 1}.tmp").exists()
        assert live.exists()  # a live process's file is never touched


def test_crops_are_stored_compressed(tmp_path):
    path = tmp_path / "c.h5"
    config = ExtractorConfig(frames=4, backbones=("a",), keep_crops=8)
    crops = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(3),
                                         features={"a": np.ones((3, 2))}, crops=crops))
    fcache.commit(path, config)
    with fcache.CacheReader(path) as cache:
        np.testing.assert_array_equal(cache.crops(slice(0, 3)), crops)
    with h5py.File(path, "r") as h5:
        assert h5["crops"].compression == "gzip"


def test_summarize_counts(tmp_path):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(2),
                                         features={"a": np.ones((2, 2))}))
    fcache.stage(path, fcache.StagedItem(record("v2", "fake", status="decode_error")))
    fcache.commit(path, CONFIG)
    summary = fcache.summarize(path)
    assert summary["by_label"] == {"fake": 1, "real": 1}
    assert summary["by_status"] == {"decode_error": 1, "ok": 1}
    assert summary["failures"][0]["id"] == "v2"
    assert summary["feature_sets"]["a"]["items_done"] == 1
    json.dumps(summary)


# --- in-place commits under a journal --------------------------------------------------------

def one_committed_one_staged(path) -> bytes:
    """``path`` holding item v1 committed and v2 staged; return the cache's bytes."""
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(3),
                                         features={"a": np.ones((3, 2))}))
    fcache.commit(path, CONFIG)
    before = path.read_bytes()
    fcache.stage(path, fcache.StagedItem(record("v2"), rows=make_rows(2, seed=2),
                                         features={"a": np.zeros((2, 2))}))
    return before


COMMIT_IN_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_cache import CONFIG
    from fakeprobe.features import cache as fcache
    fcache.commit({path!r}, CONFIG)
    print("committed", file=sys.stderr, flush=True)
""")


@pytest.mark.parametrize("point", ["journal-opened", "appended", "sealed", "overwriting",
                                   "overwritten"])
def test_kill_9_at_each_point_of_a_commit_rolls_back_to_the_old_cache(tmp_path, point):
    path = tmp_path / "c.h5"
    before = one_committed_one_staged(path)
    child = subprocess.Popen(
        [sys.executable, "-c", COMMIT_IN_CHILD.format(tests=str(TESTS), path=str(path))],
        env={**os.environ, fcache.PAUSE_VARIABLE: point}, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in child.stderr:  # the child says when it reaches the point, then waits
            lines.append(line)
            if line.strip() == f"paused at {point}":
                break
        assert lines and lines[-1].strip() == f"paused at {point}", "".join(lines)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert fcache.journal_path(path).exists()
    with fcache.CacheReader(path) as cache:  # read as before the commit, nothing written
        assert cache.videos()["id"].tolist() == ["v1"]
        np.testing.assert_array_equal(cache.features("a"), np.ones((3, 2)))
    assert "interrupted_commit" in fcache.summarize(path)
    assert len(fcache.staged_files(path)) == 1
    notes: list[str] = []
    with fcache.writer(path, log=notes.append):  # the next writer rolls it back
        assert path.read_bytes() == before
    assert any("rolled back a commit that was interrupted" in n for n in notes)
    assert not fcache.journal_path(path).exists()
    assert fcache.commit(path, CONFIG) == 1
    with fcache.CacheReader(path) as cache:
        assert cache.videos()["id"].tolist() == ["v1", "v2"]
        assert cache.n_rows == 5 and cache.n_commits == 2


def test_a_commit_appends_in_place_and_its_cost_does_not_grow_with_the_cache(tmp_path,
                                                                             monkeypatch):
    from fakeprobe.features.cache.journal import JournaledFile

    path = tmp_path / "c.h5"
    seen = []
    finish = JournaledFile.finish

    def spy(self, wait):
        seen.append((len(self.blocks), self.size - self.base))  # blocks rewritten, appended
        return finish(self, wait)

    monkeypatch.setattr(JournaledFile, "finish", spy)

    def add(first: int, n: int, rows: int = 20) -> None:
        for k in range(first, first + n):
            fcache.stage(path, fcache.StagedItem(record(f"v{k}"), rows=make_rows(rows, k),
                                                 features={"a": np.ones((rows, 2))}))
        fcache.commit(path, CONFIG)

    add(0, 5)
    inode = path.stat().st_ino
    add(5, 1)
    small = seen[-1]
    for first in range(6, 606, 200):
        add(first, 200)
    add(606, 1)
    large = seen[-1]
    assert path.stat().st_ino == inode  # written in place, never copied
    assert large[0] <= 1.5 * small[0], (small, large)  # the cache grew a hundredfold
    assert large[1] <= 2 * small[1] + (64 << 10), (small, large)
    with fcache.CacheReader(path) as cache:
        assert cache.n_videos == 607 and cache.n_rows == 607 * 20


def test_a_version_1_cache_is_read_and_upgraded_by_its_next_commit(tmp_path):
    path = tmp_path / "c.h5"
    fcache.stage(path, fcache.StagedItem(record("v1"), rows=make_rows(3),
                                         features={"a": np.ones((3, 2))}))
    fcache.commit(path, CONFIG)
    with h5py.File(path, "r+") as h5:  # the version 1 layout: no /commits
        del h5["commits"]
        h5.attrs["schema_version"] = 1
    with fcache.CacheReader(path) as cache:
        assert cache.attrs["schema_version"] == 1 and cache.n_commits is None
        assert cache.videos()["id"].tolist() == ["v1"]
    assert fcache.summarize(path)["schema_version"] == 1
    fcache.stage(path, fcache.StagedItem(record("v2"), rows=make_rows(2),
                                         features={"a": np.zeros((2, 2))}))
    assert fcache.commit(path, CONFIG) == 1
    with fcache.CacheReader(path) as cache:
        assert cache.attrs["schema_version"] == fcache.SCHEMA_VERSION >= 2
        assert cache.videos()["id"].tolist() == ["v1", "v2"] and cache.n_commits == 1
    assert {1, 2} <= set(fcache.compatible_versions(1))
    assert fcache.compatible_versions(99) == (99,)


def test_a_commit_refuses_a_reader_its_own_thread_holds_open(tmp_path):
    path = tmp_path / "c.h5"
    one_committed_one_staged(path)
    with fcache.CacheReader(path) as cache:
        with pytest.raises(CacheError, match="close it before committing"):
            fcache.commit(path, CONFIG)
        assert cache.videos()["id"].tolist() == ["v1"]
    assert not fcache.journal_path(path).exists()
    assert fcache.commit(path, CONFIG) == 1


READER_IN_CHILD = textwrap.dedent("""
    import sys
    from fakeprobe.features import cache as fcache
    with fcache.CacheReader({path!r}) as cache:
        print(cache.n_videos, flush=True)
        sys.stdin.readline()
        print(cache.videos()["id"].tolist(), cache.n_rows, flush=True)
""")


def test_a_commit_waits_for_the_readers_of_other_processes(tmp_path):
    path = tmp_path / "c.h5"
    one_committed_one_staged(path)
    reader = subprocess.Popen([sys.executable, "-c", READER_IN_CHILD.format(path=str(path))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "1"
        waiting = threading.Event()
        result = {}

        def note(line: str) -> None:
            if "waiting for the programs reading it" in line:
                waiting.set()

        def run() -> None:
            with fcache.writer(path, log=note):
                result["merged"] = fcache.commit(path, CONFIG)

        committer = threading.Thread(target=run)
        committer.start()
        assert waiting.wait(60)  # the commit is held at its point of no return
        assert "merged" not in result
        reader.stdin.write("go on\n")
        reader.stdin.flush()
        assert reader.stdout.readline().strip() == "['v1'] 3"  # its view never changed
        committer.join(60)
        assert result == {"merged": 1}
    finally:
        reader.kill()
        reader.wait()
    with fcache.CacheReader(path) as cache:
        assert cache.videos()["id"].tolist() == ["v1", "v2"]
