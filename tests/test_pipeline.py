"""The extraction run with stub components: rows, failures, resume, interruption."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image, write_video
from fakeprobe.errors import ConfigMismatch
from fakeprobe.features import cache as fcache
from fakeprobe.pipeline.run import extract

TESTS = Path(__file__).resolve().parent


def test_rows_features_and_labels(media_tree, tmp_path, stub_config):
    path = tmp_path / "c.h5"
    summary = extract([media_tree], path, stub_config, workers=2)
    assert (summary.extracted, summary.failed) == (6, 0)
    with fcache.CacheReader(path) as cache:
        videos = cache.videos()
        assert sorted(videos["label"]) == ["fake"] * 3 + ["real"] * 3
        assert cache.n_rows == 4 * 6 + 2  # 6 frames per video, 1 per image
        frames = cache.frames()
        assert frames["has_face"].all()
        feats = cache.features("test-colour")
        assert feats.shape == (26, 6) and np.isfinite(feats).all()
        # a bright square on dark noise: the crop is bright in its middle
        # the first video (items are committed in the order they finish: maybe an image first)
        first = int(np.flatnonzero(videos["row_count"] == 6)[0])
        video0 = slice(int(videos["row_start"][first]), int(videos["row_start"][first] + 6))
        assert frames["frame_index"][video0].tolist() == [0, 2, 4, 7, 9, 11]
        assert np.all(frames["box"][video0][:, 2] == 16)


def test_no_face_frames_are_stored_as_such(tmp_path, stub_config):
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "empty.mp4", blobs=0)
    path = tmp_path / "c.h5"
    summary = extract([tmp_path / "in"], path, stub_config)
    assert summary.extracted == 1
    with fcache.CacheReader(path) as cache:
        assert cache.videos()["status"].tolist() == ["no_face"]
        frames = cache.frames()
        assert not frames["has_face"].any() and np.isnan(frames["box"]).all()
        assert np.isnan(cache.features("test-colour")).all()


def test_all_faces_are_linked_into_tracks(tmp_path, stub_config):
    (tmp_path / "in").mkdir()
    write_video(tmp_path / "in" / "two.mp4", blobs=2, size=(120, 80))
    path = tmp_path / "c.h5"
    extract([tmp_path / "in"], path, replace(stub_config, all_faces=True))
    with fcache.CacheReader(path) as cache:
        frames = cache.frames()
    assert len(frames["track"]) == 12  # 6 frames x 2 faces
    for track in (0, 1):
        xs = frames["box"][frames["track"] == track][:, 0]
        assert len(xs) == 6 and np.all(np.diff(xs) > 0)  # each track follows one blob


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path, stub_config):
    root = tmp_path / "in" / "real"
    root.mkdir(parents=True)
    write_video(root / "good.mp4")
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("not a video")
    (root / "broken.jpg").write_bytes(b"\xff\xd8garbage")
    write_image(root / "big.png", size=(400, 300))
    path = tmp_path / "c.h5"
    summary = extract([tmp_path / "in"], path, replace(stub_config, max_pixels=100_000))
    assert summary.extracted == 1 and summary.failed == 4 and summary.ok
    statuses = {Path(f["id"]).name: f["status"] for f in summary.failures}
    assert statuses == {"empty.mp4": "decode_error", "text.mp4": "decode_error",
                        "broken.jpg": "decode_error", "big.png": "too_large"}
    stored = fcache.summarize(path)
    assert stored["by_status"] == {"decode_error": 3, "ok": 1, "too_large": 1}
    assert all(f["error"] for f in stored["failures"])


def test_resume_skips_done_items_and_adds_new_ones(media_tree, tmp_path, stub_config):
    path = tmp_path / "c.h5"
    extract([media_tree], path, stub_config)
    again = extract([media_tree], path, stub_config)
    assert (again.extracted, again.already_done) == (0, 6)
    write_video(media_tree / "fake" / "new.mp4", seed=5)
    more = extract([media_tree], path, stub_config)
    assert (more.extracted, more.already_done) == (1, 6)
    with fcache.CacheReader(path) as cache:
        ids = cache.videos()["id"].tolist()
    assert len(ids) == len(set(ids)) == 7


def test_adding_a_backbone_fills_the_cached_rows(media_tree, tmp_path, stub_config):
    path = tmp_path / "c.h5"
    extract([media_tree], path, stub_config)
    with fcache.CacheReader(path) as cache:
        rows_before = cache.frames()
    summary = extract([media_tree], path,
                      replace(stub_config, backbones=("test-colour", "test-grey")))
    assert (summary.extracted, summary.features_added) == (0, 6)
    with fcache.CacheReader(path) as cache:
        for name, values in cache.frames().items():
            np.testing.assert_array_equal(values, rows_before[name])
        grey = cache.features("test-grey")
        assert grey.shape == (cache.n_rows, 1) and np.isfinite(grey).all()
        assert cache.config.backbones == ("test-colour", "test-grey")


def test_other_sampling_settings_are_refused(media_tree, tmp_path, stub_config):
    path = tmp_path / "c.h5"
    extract([media_tree], path, stub_config)
    with pytest.raises(ConfigMismatch, match="frames"):
        extract([media_tree], path, replace(stub_config, frames=9))


def test_keep_crops_are_stored_per_row(media_tree, tmp_path, stub_config):
    path = tmp_path / "c.h5"
    extract([media_tree], path, replace(stub_config, keep_crops=24))
    with fcache.CacheReader(path) as cache:
        crops = cache.crops(slice(0, cache.n_rows))
    assert crops.shape == (26, 24, 24, 3) and crops.max() > 200


def test_absent_listed_files_are_recorded_as_missing(tmp_path, stub_config):
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "a.mp4")
    (data / "list.csv").write_text("path,label\na.mp4,real\ngone.mp4,fake\n")
    path = tmp_path / "c.h5"
    summary = extract([data / "list.csv"], path, stub_config)
    assert summary.extracted == 1 and summary.failures[0]["status"] == "missing"
    write_video(data / "gone.mp4")  # it turns up later: the next run takes it
    again = extract([data / "list.csv"], path, stub_config)
    assert again.extracted == 1
    assert fcache.summarize(path)["by_status"] == {"ok": 2}


# --- interruption ----------------------------------------------------------------------------

RUNNER = textwrap.dedent("""
    import signal
    import sys
    sys.path.insert(0, {tests!r})
    import time
    # Ctrl-C raises KeyboardInterrupt even where the test runs with SIGINT ignored (a
    # background job), which the child would inherit
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import conftest  # registers the stub components
    from fakeprobe.core.config import ExtractorConfig
    detect = conftest.BlobDetector.detect
    def slow_detect(self, frame):  # 40 ms a frame: the run lasts seconds on any machine
        time.sleep(0.04)
        return detect(self, frame)
    conftest.BlobDetector.detect = slow_detect
    from fakeprobe.pipeline.run import extract
    config = ExtractorConfig(frames=6, detector="test-blob", backbones=("test-colour",))
    print("started", flush=True)
    extract([{root!r}], {cache!r}, config, workers=2, commit_every={commit_every})
""")


def _many_videos(root: Path, n: int) -> Path:
    """``n`` copies of one 90-frame clip: a few seconds of extraction to interrupt."""
    (root / "real").mkdir(parents=True)
    first = write_video(root / "real" / "v00.mp4", n_frames=90, size=(320, 240))
    for k in range(1, n):
        shutil.copyfile(first, root / "real" / f"v{k:02d}.mp4")
    return root


def _start(root: Path, cache: Path, commit_every: float, pause_at: str | None = None
           ) -> tuple[subprocess.Popen, queue.Queue]:
    """The run in a child process, and a queue of the lines it writes on stderr (``None`` at
    the end). With ``pause_at`` the child's commits stop at that point of their journal, say
    ``paused at <point>`` and wait (see ``fcache.PAUSE_VARIABLE``)."""
    script = RUNNER.format(tests=str(TESTS), root=str(root), cache=str(cache),
                           commit_every=commit_every)
    env = {k: v for k, v in os.environ.items() if k != fcache.PAUSE_VARIABLE}
    if pause_at is not None:
        env[fcache.PAUSE_VARIABLE] = pause_at
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "started"
    lines: queue.Queue = queue.Queue()

    def read_stderr() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_stderr, daemon=True).start()
    return process, lines


def _wait_for_line(lines: queue.Queue, wanted: str, timeout: float = 120.0) -> list[str]:
    """Block until the child writes ``wanted`` on stderr; fail if it ends or times out first."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no {wanted!r} from the run in {timeout:.0f} s:\n{''.join(seen)}")
        if line is None:
            pytest.fail(f"the run ended without saying {wanted!r}:\n{''.join(seen)}")
        seen.append(line)
        if line.strip() == wanted:
            return seen


def _wait_for_staged(process: subprocess.Popen, cache: Path, timeout: float = 120.0
                     ) -> list[Path]:
    """Block until at least one finished item is staged next to ``cache``; return them."""
    deadline = time.monotonic() + timeout
    while not (staged := fcache.staged_files(cache)):
        assert process.poll() is None, "the run ended before staging anything"
        assert time.monotonic() < deadline, f"nothing staged in {timeout:.0f} s"
        time.sleep(0.01)
    return staged


def _check_whole(cache: Path, n: int, stub_config) -> None:
    summary = extract([cache.parent / "data"], cache, stub_config)
    assert summary.failed == 0
    with fcache.CacheReader(cache) as reader:
        ids = reader.videos()["id"].tolist()
        frames = reader.frames()
        assert sorted(ids) == sorted(set(ids)) and len(ids) == n
        assert reader.n_rows == 6 * n
        feats = reader.features("test-colour")
    assert np.isfinite(feats).all()
    for position in range(n):  # every item's rows are contiguous and its own
        assert (frames["video"] == position).sum() == 6
    assert not fcache.staged_files(cache) and not fcache.journal_path(cache).exists()


@pytest.mark.slow
def test_kill_9_after_staging_loses_nothing_and_duplicates_nothing(tmp_path, stub_config):
    """``kill -9`` once items are staged but before any commit: the rerun commits the staged
    items first and extracts only the rest."""
    n = 40
    root = _many_videos(tmp_path / "data", n)
    cache = tmp_path / "c.h5"
    process, _ = _start(root, cache, commit_every=3600.0)  # no commit before the end
    try:
        _wait_for_staged(process, cache)
        assert process.poll() is None, "the run ended before the kill: give it more work"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not cache.exists()  # nothing was committed
    staged = {fcache.load_staged(f).record.id for f in fcache.staged_files(cache)}
    assert 0 < len(staged) < n
    _check_whole(cache, n, stub_config)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["journal-opened", "appended", "sealed", "overwriting",
                                   "overwritten"])
def test_kill_9_in_a_commit_loses_nothing_and_duplicates_nothing(tmp_path, stub_config,
                                                                 point):
    """``kill -9`` at each point of a commit into the existing cache (the child stops there
    and says so): the cache still opens with only whole items, and the rerun rolls the commit
    back and ends with every item once."""
    n = 40
    root = _many_videos(tmp_path / "data", n)
    cache = tmp_path / "c.h5"
    # commit all the time: the first commit makes the cache, the next ones go through its
    # journal and stop at the point
    process, lines = _start(root, cache, commit_every=0.0, pause_at=point)
    try:
        _wait_for_line(lines, f"paused at {point}")
        assert process.poll() is None, "the run ended before the kill"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert fcache.journal_path(cache).exists()  # killed inside a commit
    with fcache.CacheReader(cache) as reader:  # still opens, as before that commit
        ids = reader.videos()["id"].tolist()
        assert 0 < len(ids) < n and len(set(ids)) == len(ids)
        assert reader.n_rows == 6 * len(ids)
    staged = {fcache.load_staged(f).record.id for f in fcache.staged_files(cache)}
    assert staged and not staged & set(ids)  # the commit's items are still staged, only there
    _check_whole(cache, n, stub_config)


@pytest.mark.slow
def test_ctrl_c_commits_finished_items(tmp_path, stub_config):
    n = 40
    root = _many_videos(tmp_path / "data", n)
    cache = tmp_path / "c.h5"
    process, lines = _start(root, cache, commit_every=3600.0)  # no commit before the end
    try:
        finished = {fcache.load_staged(f).record.id for f in _wait_for_staged(process, cache)}
        assert process.poll() is None, "the run ended before Ctrl-C: give it more work"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()
    stderr = []
    while (line := lines.get(timeout=10)) is not None:
        stderr.append(line)
    assert process.returncode != 0 and "KeyboardInterrupt" in "".join(stderr)
    with fcache.CacheReader(cache) as reader:
        saved = set(reader.videos()["id"].tolist())
    assert finished <= saved and len(saved) < n  # what had finished is in, the rest is not
    assert not fcache.staged_files(cache)
    _check_whole(cache, n, stub_config)


def test_a_feature_set_made_with_other_weights_is_refused(media_tree, tmp_path, stub_config,
                                                          monkeypatch):
    from conftest import ColourStats

    def weights(digest):
        return lambda self: {"name": self.name, "dim": 6, "crop_size": 32, "crop_margin": 0.3,
                             "weights_sha256": digest}

    path = tmp_path / "c.h5"
    monkeypatch.setattr(ColourStats, "config", weights("one"))
    extract([media_tree], path, stub_config)
    write_video(media_tree / "real" / "later.mp4", seed=9)
    monkeypatch.setattr(ColourStats, "config", weights("other"))
    with pytest.raises(ConfigMismatch, match="weights_sha256: 'one' vs 'other'"):
        extract([media_tree], path, stub_config)


def test_recrop_matches_aligning_from_the_frame():
    import cv2

    from fakeprobe.core.geometry import CropSpec
    from fakeprobe.extractor.align import align_face, can_recrop, recrop

    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8), (9, 9), 3)
    marks = np.array([[140, 100], [180, 102], [160, 125], [145, 150], [176, 151]], np.float32)
    stored, wanted = CropSpec(128, 0.3), CropSpec(48, 0.1)
    assert can_recrop(stored, wanted)
    assert not can_recrop(stored, CropSpec(48, 0.4))  # would need pixels outside the crop
    assert not can_recrop(stored, CropSpec(256, 0.3))  # would need upsampling
    cut = recrop(align_face(frame, marks, stored)[None], stored, wanted)[0]
    direct = align_face(frame, marks, wanted)
    assert np.abs(cut.astype(int) - direct.astype(int)).mean() < 4


def test_stored_crops_feed_a_new_backbone_without_decoding(media_tree, tmp_path, stub_config,
                                                           monkeypatch):
    from fakeprobe.pipeline import run as pipeline

    path = tmp_path / "c.h5"
    extract([media_tree], path, replace(stub_config, keep_crops=64))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the crops were stored")

    monkeypatch.setattr(pipeline, "read_media", no_decoding)
    both = replace(stub_config, keep_crops=64, backbones=("test-colour", "test-grey"))
    summary = extract([media_tree], path, both)
    assert (summary.features_added, summary.failed) == (6, 0)
    monkeypatch.undo()
    direct = tmp_path / "direct.h5"
    extract([media_tree], direct, both)
    with fcache.CacheReader(path) as a, fcache.CacheReader(direct) as b:
        np.testing.assert_allclose(a.features("test-grey"), b.features("test-grey"), atol=0.03)
