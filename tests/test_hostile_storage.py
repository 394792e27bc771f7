"""Hostile and careless use of what fakeprobe writes and reads back: caches, staged items, output
paths, model files. One case per failure of the reliability issue's storage half; each checks
the exit code, the one line, and that no item is lost and no file overwritten."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fakeprobe import app as api
from fakeprobe.classifiers import model as fmodel
from fakeprobe.classifiers.heads import fit_head, new_head
from fakeprobe.cli import app
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.errors import CacheCorrupt, CacheError, CacheLocked, OutputError
from fakeprobe.features import cache as fcache
from fakeprobe.fileio import check_output, file_kind

from test_heads import make_cache

runner = CliRunner()
STUBS = ["--detector", "test-blob", "--backbone", "test-colour"]
REPO = Path(__file__).resolve().parents[1]


def one_line_error(result) -> str:
    """The output of a refused command: exit 1, one ``error:`` line, no traceback."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def record(vid: str, label: str = "real") -> fcache.VideoRecord:
    return fcache.VideoRecord(id=vid, path=vid, kind="video", label=label, group=vid)


def rows(n: int) -> fcache.FrameRows:
    return fcache.FrameRows(frame_index=np.arange(n), timestamp=np.arange(n) / 25.0,
                            box=np.ones((n, 4), np.float32),
                            landmarks=np.ones((n, 5, 2), np.float32),
                            score=np.ones(n, np.float32), track=np.zeros(n, np.int32),
                            has_face=np.ones(n, bool))


def stage_video(path: Path, vid: str, n: int) -> Path:
    return fcache.stage(path, fcache.StagedItem(record(vid), rows=rows(n),
                                                features={"a": np.ones((n, 2))}))


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Made once: a cache of 25 items (8 groups of 1 real + 2 fakes, one faceless, 6-d
    'feat'), a logistic-regression model fitted on it, its run record, a video, a CSV."""
    from conftest import write_video

    folder = tmp_path_factory.mktemp("originals")
    cache = make_cache(folder / "synthetic.h5")
    model = folder / "m.fpm"
    api.fit(cache, "logreg", model, protocol=api.Protocol(folds=3))
    run = folder / "run.json"
    assert runner.invoke(app, ["compare", str(cache), "--head", "logreg", "--cv", "3",
                               "--save-run", str(run)]).exit_code == 0
    video = write_video(folder / "v.mp4")
    csv = folder / "old.csv"
    csv.write_text("id,score\nx,0.5\n")
    return {"cache": cache, "model": model, "run": run, "video": video, "csv": csv}


@pytest.fixture()
def world(originals, tmp_path) -> dict[str, Path]:
    """This test's own copies of :func:`originals`, in ``tmp_path``."""
    import shutil

    return {name: Path(shutil.copyfile(path, tmp_path / path.name))
            for name, path in originals.items()}


@pytest.fixture()
def synthetic(world) -> Path:
    return world["cache"]


@pytest.fixture()
def model_file(world) -> Path:
    return world["model"]


HOLDER = ("import sys, time\n"
          "from fakeprobe.features.cache import writer\n"
          "with writer(sys.argv[1]):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(120)\n")


@pytest.fixture()
def lock_holder():
    """Start a process that holds a cache's writer lock; yields ``start(cache) -> Popen``."""
    started = []

    def start(cache: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(cache)],
                                   stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


# --- 1. one writer at a time -----------------------------------------------------------------

def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, lock_holder):
    cache = tmp_path / "c.h5"
    holder = lock_holder(cache)
    stage_video(cache, "v1", 3)
    with pytest.raises(CacheLocked, match=rf"pid {holder.pid} on .*since .*writer"):
        with fcache.writer(cache):
            pass
    with pytest.raises(CacheLocked, match="staged item.* are kept"):
        fcache.commit(cache, ExtractorConfig(backbones=("a",)))
    assert len(fcache.staged_files(cache)) == 1  # refused, nothing lost
    # the holder is killed: its flock dies with it, the lock file left behind blocks nothing
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert fcache.lock_path(cache).exists()
    assert fcache.commit(cache, ExtractorConfig(backbones=("a",))) == 1
    assert not fcache.lock_path(cache).exists()


def test_extract_and_derive_are_refused_with_one_line_while_another_writes(
        media_tree, tmp_path, lock_holder):
    cache = tmp_path / "c.h5"
    assert runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                               "--frames", "4"]).exit_code == 0
    before = cache.read_bytes()
    holder = lock_holder(cache)
    for command in (["extract", str(media_tree), "--out", str(cache), "-b", "test-grey"],
                    ["derive", str(cache), "--landmarks"]):
        line = one_line_error(runner.invoke(app, command))
        assert f"pid {holder.pid}" in line and "being written by another fakeprobe" in line
    assert cache.read_bytes() == before


def test_a_staged_file_of_a_live_writer_is_never_removed(tmp_path):
    cache = tmp_path / "c.h5"
    folder = fcache.staging_dir(cache)
    folder.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = folder / f".20260101T000000-abcdef12.{sleeper.pid}.tmp"
        live.write_bytes(b"half written by a live process")
        stage_video(cache, "v1", 2)
        assert fcache.commit(cache, ExtractorConfig(backbones=("a",))) == 1
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def _extract_command(folder: str) -> list[str]:
    exe = Path(sys.executable).with_name("fakeprobe")
    return [str(exe), "extract", folder, "--out", "c.h5", "--commit-every", "0",
            "-b", "spectrum", "--frames", "4", "--workers", "1"]


def _concurrent_trial(root: Path) -> None:
    env = {**os.environ, "FAKEPROBE_DEBUG": ""}
    runs = [subprocess.Popen(_extract_command(f"in/{label}"), cwd=root, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for label in ("real", "fake")]
    results = [(p, p.communicate(timeout=300)[1]) for p in runs]
    with fcache.CacheReader(root / "c.h5") as reader:
        ids = set(reader.videos()["id"])
    for (process, stderr), label in zip(results, ("real", "fake")):
        assert "Traceback" not in stderr
        mine = {f"{label}/{name}" for name in os.listdir(root / "in" / label)}
        if process.returncode == 0:
            assert mine <= ids, f"{label} exited 0 but lost {mine - ids}"
        else:
            assert process.returncode == 1 and "being written by another" in stderr, stderr
    assert not fcache.staged_files(root / "c.h5")


@pytest.fixture()
def two_inputs(tmp_path) -> Path:
    from conftest import write_video

    for label, seed in (("real", 0), ("fake", 1)):
        (tmp_path / "in" / label).mkdir(parents=True)
        write_video(tmp_path / "in" / label / "a.mp4", n_frames=8, seed=seed)
    return tmp_path


def test_two_concurrent_extract_processes_lose_nothing(two_inputs):
    """Two real ``fakeprobe extract`` processes on one cache: refused or both complete."""
    _concurrent_trial(two_inputs)


EXTRACT_IN_CHILD = ("import sys\n"
                    "sys.path.insert(0, {tests!r})\n"
                    "import conftest  # registers the stub components\n"
                    "from fakeprobe.cli import app\n"
                    "app({args!r})\n")


@pytest.mark.parametrize("point", ["appended", "overwriting"])
def test_extract_killed_in_its_commit_loses_nothing_and_duplicates_nothing(media_tree,
                                                                           tmp_path, point):
    """``kill -9`` when the commit has appended its items, or is overwriting the old bytes
    (the child stops there and says so; see ``fcache.PAUSE_VARIABLE``): the cache reads as
    before, and the next run rolls it back and commits every staged item once."""
    from conftest import write_video

    cache = tmp_path / "c.h5"
    args = ["extract", str(media_tree), "--out", str(cache), *STUBS, "--frames", "4"]
    assert runner.invoke(app, args).exit_code == 0
    before = cache.read_bytes()
    with fcache.CacheReader(cache) as reader:
        first = sorted(reader.videos()["id"])
    write_video(media_tree / "fake" / "d.mp4", seed=7)  # the second run adds one item
    script = EXTRACT_IN_CHILD.format(tests=str(REPO / "tests"), args=args)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, text=True,
                             env={**os.environ, fcache.PAUSE_VARIABLE: point})
    try:
        said = next((line for line in child.stderr if line.startswith("paused at")), "")
        assert said.strip() == f"paused at {point}"  # then it waits there to be killed
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    with fcache.CacheReader(cache) as reader:
        assert sorted(reader.videos()["id"]) == first and len(first) == 6
    staged = [fcache.load_staged(f).record.id for f in fcache.staged_files(cache)]
    assert staged == ["data/fake/d.mp4"]
    with fcache.writer(cache):
        assert cache.read_bytes() == before
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    with fcache.CacheReader(cache) as reader:
        ids = list(reader.videos()["id"])
        assert sorted(ids) == sorted(first + staged) and reader.n_commits == 2
    assert not fcache.staged_files(cache) and not fcache.journal_path(cache).exists()


@pytest.mark.slow
@pytest.mark.shared_data
def test_twenty_concurrent_trials_on_real_clips(shared_data):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks/concurrent_extract.py"),
                             "--data", str(shared_data), "--trials", "20", "--clips", "1",
                             "--frames", "4"],
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["held"] == 20


# --- 4. staged items carry their settings ----------------------------------------------------

def test_items_staged_with_other_settings_are_discarded_on_commit(tmp_path):
    cache = tmp_path / "c.h5"
    notes: list[str] = []
    eight = ExtractorConfig(frames=8, backbones=("a",))
    with fcache.writer(cache, eight):
        stage_video(cache, "old", 8)  # then the run is killed: staged, never committed
    sixteen = ExtractorConfig(frames=16, backbones=("a",))
    with fcache.writer(cache, sixteen, log=notes.append):
        stage_video(cache, "new", 16)
        assert fcache.commit(cache, sixteen) == 1
    assert len(notes) == 1 and "discarded 1 staged item" in notes[0] and "frames 8" in notes[0]
    with fcache.CacheReader(cache) as reader:
        assert reader.config.frames == 16
        videos = reader.videos()
        assert list(videos["id"]) == ["new"] and list(videos["row_count"]) == [16]
    assert not fcache.staged_files(cache)


def test_a_killed_frames_8_run_never_leaves_8_rows_in_a_frames_16_cache(media_tree, tmp_path,
                                                                       monkeypatch):
    cache = tmp_path / "c.h5"

    def killed(*args, **kwargs):
        raise SystemExit(137)  # as if killed before its commit

    monkeypatch.setattr(fcache, "commit", killed)
    first = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                                "--frames", "8"])
    assert first.exit_code == 137 and len(fcache.staged_files(cache)) == 6
    monkeypatch.undo()
    second = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                                 "--frames", "16", "--json"])
    assert second.exit_code == 0, second.output
    assert "discarded 6 staged item(s) made with other settings" in second.output
    with fcache.CacheReader(cache) as reader:
        assert reader.config.frames == 16
        videos = reader.videos()
    counts = dict(zip(videos["id"], videos["row_count"]))
    assert len(counts) == 6 and 8 not in counts.values()
    assert max(counts.values()) == 12  # all 12 frames of a clip, as asked by --frames 16


# --- 11. leftovers: garbage staged files, hidden copies, Ctrl-C ------------------------------

def _garbage_npz(folder: Path, kind: str) -> Path:
    path = folder / f"20260101T000000000000-{kind[:8]:0<8}.npz"
    if kind == "random":
        path.write_bytes(os.urandom(300))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "no-meta":
        np.savez(path, x=np.ones(3))
    elif kind == "bad-json":
        np.savez(path, meta=np.array("{not json"))
    elif kind == "wrong-shapes":
        meta = {"kind": "video", "record": {"id": "x", "path": "x", "kind": "video",
                                            "label": "real", "group": "x"}, "features": ["a"]}
        np.savez(path, meta=np.array(json.dumps(meta)), feat__a=np.ones(3),
                 **{f"rows__{k}": v for k, v in rows(4).columns().items()})
    elif kind == "pickle":
        np.savez(path, meta=np.array([{"kind": "video"}], dtype=object))
    return path


@pytest.mark.parametrize("kind", ["random", "empty", "no-meta", "bad-json", "wrong-shapes",
                                  "pickle"])
def test_a_garbage_staged_file_is_set_aside_and_never_blocks(tmp_path, kind):
    cache = tmp_path / "c.h5"
    folder = fcache.staging_dir(cache)
    folder.mkdir()
    garbage = _garbage_npz(folder, kind)
    stage_video(cache, "good", 3)
    notes: list[str] = []
    with fcache.writer(cache, log=notes.append):
        assert fcache.commit(cache, ExtractorConfig(backbones=("a",))) == 1
    assert not garbage.exists() and (folder / "rejected" / garbage.name).exists()
    assert len(notes) == 1 and "set aside a staged file that does not read" in notes[0]
    assert not fcache.staged_files(cache)
    with fcache.CacheReader(cache) as reader:
        assert list(reader.videos()["id"]) == ["good"]


def test_extract_into_a_folder_that_does_not_exist_yet(media_tree, tmp_path):
    cache = tmp_path / "new" / "deeper" / "c.h5"
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                                 "--frames", "4"])
    assert result.exit_code == 0, result.output
    assert fcache.summarize(cache)["items"] == 6 and not fcache.lock_path(cache).exists()


def test_extract_goes_on_past_a_garbage_staged_file(media_tree, tmp_path):
    cache = tmp_path / "c.h5"
    fcache.staging_dir(cache).mkdir()
    _garbage_npz(fcache.staging_dir(cache), "random")
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                                 "--frames", "4"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "set aside" in result.output
    assert fcache.summarize(cache)["items"] == 6


def test_a_hidden_copy_left_by_a_kill_during_commit_is_cleared_only_by_the_lock_holder(
        tmp_path):
    cache = tmp_path / "c.h5"
    dead = tmp_path / f".c.{2**22 + 1}.tmp.h5"  # no process has that pid
    dead.write_bytes(b"\0" * 4096)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = tmp_path / f".c.{sleeper.pid}.tmp.h5"  # a live process's commit in progress
        live.write_bytes(b"\0" * 4096)
        other = tmp_path / f".c.other.{2**22 + 1}.tmp.h5"  # another cache's ('c.other.h5')
        other.write_bytes(b"")
        stage_video(cache, "v", 2)
        assert dead.exists()  # staging alone touches nothing
        notes: list[str] = []
        with fcache.writer(cache, log=notes.append):
            pass
        assert not dead.exists() and live.exists() and other.exists()
        assert any("unfinished copy of a commit that was killed" in n for n in notes)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_ctrl_c_says_what_is_committed_and_what_is_staged(media_tree, tmp_path, monkeypatch):
    from fakeprobe.pipeline import run as pipeline

    cache = tmp_path / "c.h5"

    def interrupted(inputs, out, config, **kwargs):
        stage_video(out, "first", 2)
        fcache.commit(out, config)
        stage_video(out, "second", 2)
        stage_video(out, "third", 2)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "extract", interrupted)
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS])
    assert result.exit_code == 130
    assert "holds 1 committed item(s); 2 finished item(s) are staged" in result.output
    assert "the next run commits them" in result.output


# --- 9. a cache with a broken structure ------------------------------------------------------

def _break(path: Path, how: str) -> None:
    if how == "not-hdf5":
        path.write_bytes(b"id,label\nx,real\n")
        return
    if how == "foreign-hdf5":
        path.unlink()
        with h5py.File(path, "w") as h5:
            h5["x"] = np.arange(3)
        return
    with h5py.File(path, "r+") as h5:
        if how == "deleted-dataset":
            del h5["videos/label"]
        elif how == "non-json-config":
            h5.attrs["extractor_config"] = "{frames: 8"
        elif how == "config-not-an-object":
            h5.attrs["extractor_config"] = "[1, 2]"
        elif how == "labels-as-strings":
            n = h5["videos/label"].shape[0]
            del h5["videos/label"]
            h5["videos"].create_dataset("label", data=np.array(["real"] * n, dtype=object),
                                        dtype=h5py.string_dtype())
        elif how == "short-id-column":
            h5["videos/id"].resize((h5["videos/id"].shape[0] - 1,))
        elif how == "feature-without-done":
            del h5["features/feat/done"]
        elif how == "rows-out-of-range":
            h5["videos/row_start"][0] = 10**6
        elif how == "bad-schema-version":
            h5.attrs["schema_version"] = "one"
        elif how == "bad-label-codes":
            h5["videos/label"][0] = 7


BREAKS = ["not-hdf5", "foreign-hdf5", "deleted-dataset", "non-json-config",
          "config-not-an-object", "labels-as-strings", "short-id-column",
          "feature-without-done", "rows-out-of-range", "bad-schema-version", "bad-label-codes"]


@pytest.mark.parametrize("how", BREAKS)
def test_a_broken_cache_is_one_line_from_every_command(how, synthetic, model_file, media_tree):
    _break(synthetic, how)
    with pytest.raises(CacheError):
        fcache.CacheReader(synthetic)
    commands = {
        "info": ["info", str(synthetic)],
        "compare": ["compare", str(synthetic), "--head", "logreg", "--cv", "3"],
        "evaluate": ["evaluate", str(model_file), str(synthetic)],
        "derive": ["derive", str(synthetic), "--landmarks"],
        "fit": ["fit-logreg", str(synthetic), "--cv", "3"],
        "extract": ["extract", str(media_tree), "--out", str(synthetic), *STUBS],
    }
    before = synthetic.read_bytes()
    for name, args in commands.items():
        line = one_line_error(runner.invoke(app, args))
        assert str(synthetic.name) in line, (name, line)
    assert synthetic.read_bytes() == before  # nothing was written over it


@pytest.fixture(scope="module")
def small_cache_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("fuzz") / "c.h5"
    make_cache(path, n_groups=2)
    return path.read_bytes()


def _read_everything(path: Path) -> None:
    with fcache.CacheReader(path) as reader:
        reader.videos()
        reader.frames()
        reader.state()
        list(reader.iter_video_rows())
        for name in reader.feature_sets:
            reader.features(name)
            reader.feature_done(name)
    fcache.summarize(path)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
                      min_size=1, max_size=8),
       truncate=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)))
def test_fuzz_the_cache_reader_raises_only_the_typed_error(small_cache_bytes, flips, truncate):
    data = bytearray(small_cache_bytes)
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if truncate is not None:
        data = data[: int(truncate * len(data))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.h5"
        path.write_bytes(bytes(data))
        try:
            _read_everything(path)
        except CacheError:
            pass


# --- 2. outputs never overwrite inputs or files of another kind ------------------------------

OVERWRITES = [
    ("fit-logreg {cache} --out {cache}", "cache"),
    ("compare {cache} --head logreg --report {cache}", "cache"),
    ("compare {cache} --head logreg --save-run {cache}", "cache"),
    ("predict {model} {video} --csv {model}", "model"),
    ("predict {model} {video} --timeline-csv {video}", "video"),
    ("report {run} --out {run}", "run"),
    ("report {model} --out {model}", "model"),
]


@pytest.mark.parametrize("command,victim", OVERWRITES)
def test_an_output_that_is_an_input_is_refused(world, command, victim):
    before = world[victim].read_bytes()
    args = [part.format(**world) for part in command.split()]
    line = one_line_error(runner.invoke(app, args))
    assert "is one of the inputs" in line
    assert world[victim].read_bytes() == before


KINDS = [
    ("fit-logreg {cache} --cv 3 --out {model2}", "model2", "an HDF5 file"),
    ("compare {cache} --head logreg --cv 3 --save-run {video}", "video", "a video"),
    ("compare {cache} --head logreg --cv 3 --report {model2}", "model2", "an HDF5 file"),
    ("report {run} --out {csv}", "csv", "a text file"),
    ("extract {video} --out {csv}", "csv", "a text file"),
]


@pytest.mark.parametrize("command,victim,found", KINDS)
def test_an_existing_file_of_another_kind_is_refused_unless_force(world, tmp_path, command,
                                                                  victim, found):
    import shutil

    world = {**world, "model2": tmp_path / "other.h5"}
    shutil.copyfile(world["cache"], world["model2"])
    before = world[victim].read_bytes()
    args = [part.format(**world) for part in command.split()]
    line = one_line_error(runner.invoke(app, args))
    assert f"exists and is {found}" in line
    assert world[victim].read_bytes() == before
    if "extract" in command:  # extract never replaces a file that is not a cache
        assert "--force" not in line
    else:
        assert "--force" in line
        forced = runner.invoke(app, [*args, "--force"])
        assert forced.exit_code == 0, forced.output


def test_predict_csv_onto_an_existing_video_is_refused(world, tmp_path):
    other = tmp_path / "clip.mp4"
    other.write_bytes(world["video"].read_bytes())
    line = one_line_error(runner.invoke(app, ["predict", str(world["model"]),
                                              str(world["video"]), "--csv", str(other)]))
    assert "is a video, not a CSV file" in line


@pytest.mark.parametrize("content,kind", [
    (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "hdf5"), (b"<!DOCTYPE html><html></html>", "html"),
    (b'{"format": "fakeprobe-run"}', "run"), (b'{"a": 1}', "json"), (b"a,b\n1,2\n", "text"),
    (b"\0\0\0\x18ftypmp42" + b"\0" * 16, "video"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image"),
    (b"", "empty"), (b"\x00\x01\x02", "binary")])
def test_file_kinds_are_told_by_their_first_bytes(tmp_path, content, kind):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    assert file_kind(path) == kind


# --- 10. disk full, read-only folder, long names ---------------------------------------------

def test_disk_full_while_saving_a_model_is_one_line_and_keeps_the_old_file(world, monkeypatch):
    before = world["model"].read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    line = one_line_error(runner.invoke(app, ["fit-logreg", str(world["cache"]), "--cv", "3",
                                              "--out", str(world["model"])]))
    assert "No space left on device" in line and "old file is left as it was" in line
    monkeypatch.undo()
    assert world["model"].read_bytes() == before
    assert not [p for p in world["model"].parent.iterdir() if ".tmp" in p.name]


def one_committed_one_staged(tmp_path: Path) -> tuple[Path, ExtractorConfig, bytes]:
    """A cache holding one committed item and one staged beside it, its config, and its bytes
    before the second commit."""
    cache = tmp_path / "c.h5"
    config = ExtractorConfig(backbones=("a",))
    stage_video(cache, "v1", 2)
    fcache.commit(cache, config)
    before = cache.read_bytes()
    stage_video(cache, "v2", 2)
    return cache, config, before


@pytest.mark.parametrize("where", ["_append", "_write_journal"])
def test_disk_full_during_a_commit_keeps_the_cache_and_the_staged_items(tmp_path, monkeypatch,
                                                                        where):
    """The disk fills while the commit appends its items (HDF5 writing), or while it saves the
    bytes it is about to overwrite in its journal: rolled back, byte for byte."""
    from fakeprobe.features.cache.journal import JournaledFile

    cache, config, before = one_committed_one_staged(tmp_path)
    calls = []

    def full(self, *args, **kwargs):
        calls.append(where)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(JournaledFile, where, full)
    with pytest.raises(OutputError, match="No space left.*cache is left as it was"):
        fcache.commit(cache, config)
    monkeypatch.undo()
    assert calls
    assert cache.read_bytes() == before and len(fcache.staged_files(cache)) == 1
    assert not fcache.journal_path(cache).exists()
    assert fcache.commit(cache, config) == 1


def test_disk_full_while_extracting_is_one_line_and_keeps_the_cache(media_tree, tmp_path,
                                                                   monkeypatch):
    cache = tmp_path / "c.h5"
    assert runner.invoke(app, ["extract", str(media_tree / "real"), "--out", str(cache),
                               *STUBS, "--frames", "4"]).exit_code == 0
    before = cache.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fcache.np, "savez", full)
    line = one_line_error(runner.invoke(app, ["extract", str(media_tree), "--out", str(cache),
                                              *STUBS]))
    assert "No space left on device" in line and "cache is left as it was" in line
    assert cache.read_bytes() == before


def test_a_commit_that_would_fill_the_disk_is_refused_first(tmp_path, monkeypatch):
    cache, config, before = one_committed_one_staged(tmp_path)
    usage = fcache.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(fcache.shutil, "disk_usage",
                        lambda path: usage._replace(free=cache.stat().st_size))
    with pytest.raises(OutputError, match="not enough free space to commit"):
        fcache.commit(cache, config)
    assert cache.read_bytes() == before and len(fcache.staged_files(cache)) == 1


def test_fit_onto_a_read_only_folder_fails_before_fitting(world, tmp_path, monkeypatch):
    from fakeprobe import fileio
    from fakeprobe import app as fapi

    calls = []
    monkeypatch.setattr(fapi, "fit", lambda *a, **k: calls.append(a))

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(fileio.tempfile, "NamedTemporaryFile", read_only)
    line = one_line_error(runner.invoke(app, ["fit-logreg", str(world["cache"]), "--out",
                                              str(tmp_path / "ro" / "m.fpm")]))
    assert "Read-only file system" in line and calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_chmod_read_only_folder_is_refused_before_the_work(world, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = one_line_error(runner.invoke(app, ["compare", str(world["cache"]), "--head",
                                                  "logreg", "--report",
                                                  str(folder / "r.html")]))
        assert "cannot write in" in line
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("command,suffix", [
    ("fit-logreg {cache} --out {long}", ".fpm"),
    ("compare {cache} --head logreg --report {long}", ".html"),
    ("extract {video} --out {long}", ".h5"), ("predict {model} {video} --csv {long}", ".csv")])
def test_a_252_character_name_is_refused_before_the_work(world, tmp_path, command, suffix):
    long = str(tmp_path / ("n" * (252 - len(suffix)) + suffix))
    args = [part.format(**world, long=long) for part in command.split()]
    line = one_line_error(runner.invoke(app, args))
    assert "the name is 252 bytes long" in line
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("n" * 200)]


def test_check_output_refuses_a_folder_and_the_same_file_by_another_name(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("x\n")
    link = tmp_path / "b.csv"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="one of the inputs"):
        check_output(link, "csv", inputs=[target])
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, "csv")
    assert check_output(target, "csv") == target


# --- 14. model files are data, not code ------------------------------------------------------

class Trap:
    """Creates its ``marker`` file when rebuilt, by unpickling or by setting its state."""

    marker = ""

    def __init__(self, marker: str = "") -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))

    def __setstate__(self, state):
        Path(state["marker"]).write_text("ran")


def _model_with(path: Path, member: str, payload: bytes, fmt: int, template: Path) -> Path:
    """A copy of ``template`` whose pipeline is ``payload`` with a recomputed checksum."""
    with zipfile.ZipFile(template) as archive:
        meta = json.loads(archive.read("provenance.json"))
    meta.update(format=fmt, pipeline_sha256=hashlib.sha256(payload).hexdigest())
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("provenance.json", json.dumps(meta))
        archive.writestr(member, payload)
    return path


@pytest.mark.parametrize("member,fmt,refusal", [
    ("pipeline.joblib", 1, "format 1, which holds a pickle"),
    ("pipeline.skops", 2, "not a skops file"),
])
def test_a_model_file_carrying_a_malicious_pickle_is_refused_without_running_it(
        model_file, tmp_path, member, fmt, refusal):
    marker = tmp_path / "ran.txt"
    evil = _model_with(tmp_path / "evil.fpm", member, pickle.dumps(Trap(str(marker))), fmt,
                       model_file)
    with pytest.raises(fmodel.ModelIntegrityError, match=refusal):
        fmodel.load_model(evil)
    with pytest.raises(fmodel.ModelIntegrityError, match=refusal):
        api.predict(evil, [tmp_path / "v.mp4"])
    for command in (["evaluate", str(evil), str(tmp_path / "synthetic.h5")],
                    ["predict", str(evil), str(tmp_path / "v.mp4")]):
        line = one_line_error(runner.invoke(app, command))
        assert refusal.split(",")[0] in line
    assert not marker.exists()


def test_a_format_1_model_still_shows_its_json_but_never_loads(model_file, tmp_path):
    marker = tmp_path / "ran.txt"
    old = _model_with(tmp_path / "old.fpm", "pipeline.joblib", pickle.dumps(Trap(str(marker))),
                      1, model_file)
    with zipfile.ZipFile(old, "a") as archive, zipfile.ZipFile(model_file) as source:
        archive.writestr("report.json", source.read("report.json"))
    assert fmodel.read_provenance(old)["format"] == 1
    assert fmodel.read_report(old)["head"] == "logreg"
    with pytest.raises(fmodel.ModelIntegrityError, match="fit the model again"):
        fmodel.load_model(old)
    assert not marker.exists()


def test_a_skops_file_naming_an_untrusted_type_is_refused_before_building_it(model_file,
                                                                            tmp_path):
    import skops.io as sio

    marker = tmp_path / "ran.txt"
    payload = sio.dumps({"pipeline": Trap(str(marker))})
    evil = _model_with(tmp_path / "evil.fpm", "pipeline.skops", payload, 2, model_file)
    with pytest.raises(fmodel.ModelIntegrityError, match=r"names types fakeprobe never writes "
                                                          r"\(.*Trap\)"):
        fmodel.load_model(evil)
    assert not marker.exists()


def test_a_pipeline_of_an_untrusted_type_is_not_saved(tmp_path):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    pipeline = Pipeline([("f", FunctionTransformer(func=print))])
    with pytest.raises(fmodel.ModelIntegrityError, match="builtins.print"):
        fmodel.save_model(tmp_path / "m.fpm", pipeline, {})
    assert not (tmp_path / "m.fpm").exists()


def test_a_small_zip_holding_a_1_gib_member_is_refused_before_inflating(model_file,
                                                                       tmp_path):
    with zipfile.ZipFile(model_file) as archive:
        provenance = archive.read("provenance.json")
    bomb = tmp_path / "bomb.fpm"
    zeros = b"\0" * (1 << 20)
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED,
                         compresslevel=9) as archive:
        archive.writestr("provenance.json", provenance)
        with archive.open("pipeline.skops", "w", force_zip64=True) as member:
            for _ in range(1024):
                member.write(zeros)
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(fmodel.ModelIntegrityError, match="would inflate to 1,073,741,824"):
            fmodel.load_model(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("head,params", [("logreg", {}), ("svm", {}),
                                         ("svm", {"exact_max": 50}), ("xgb", {}),
                                         ("logreg", {"smote": True})])
def test_every_head_round_trips_through_a_model_file(tmp_path, head, params):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 5))
    y = (X[:, 0] + rng.normal(0, 0.5, 120) > 0).astype(int)
    video = np.arange(120) // 6
    pipeline = fit_head(new_head(head, **params), X, y, video, groups=video % 5)
    path = fmodel.save_model(tmp_path / "m.fpm", pipeline, {"features": ["f"]})
    loaded = fmodel.load_model(path)
    assert loaded.provenance["format"] == fmodel.MODEL_FORMAT == 2
    np.testing.assert_allclose(loaded.pipeline.predict_proba(X), pipeline.predict_proba(X))


# --- questionable: the markdown summary ------------------------------------------------------

def test_the_markdown_summary_escapes_names():
    from fakeprobe.evaluation.report import _markdown, _Figures

    hostile = "x|y <script>alert(1)</script> [a](javascript:b) `c`\nd"
    report = {"head": "logreg", "features": [hostile], "video": {"n": 3}, "frame": {}}
    record = {"kind": "compare", "command": "fakeprobe compare `rm -rf` c.h5",
              "cache": {"path": hostile, "items": 3, "by_dataset": {hostile: 3}},
              "reports": [report]}
    text = _markdown(record, [report], _Figures("r_files"))
    row = next(line for line in text.splitlines() if line.startswith("| logreg"))
    assert row.count("|") - row.count("\\|") == 16  # the table keeps its 15 columns
    assert "<script>" not in row and "](javascript" not in row
    assert "\\<script\\>" in row and "\\[a\\]\\(javascript" in row
    # commands, paths and JSON go in code spans (inert) whose fence outlasts any backtick run
    assert "`` fakeprobe compare `rm -rf` c.h5 ``" in text
    cache_line = next(line for line in text.splitlines() if line.startswith("- cache:"))
    assert cache_line.startswith("- cache: `` x|y <script>")
