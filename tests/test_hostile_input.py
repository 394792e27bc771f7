"""Hostile and careless input: each case one clear line, a status in the cache, the run goes on.

One test (or one parametrized case) per input-side failure of the hostile-input review: file
names that are not UTF-8, image headers claiming giant sizes, bad DFDC ``metadata.json``, bad
CSV manifests, truncated videos, options out of range, tiny caches under cross-validation,
GIFs, and spreadsheet formulas in CSV output. The listing readers are fuzzed with hypothesis.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import require_shared_data, write_image, write_video
from fakeprobe.app.outputs import csv_text as _csv_text
from fakeprobe.cli import app
from fakeprobe.core.config import MAX_SAMPLED_FRAMES, ExtractorConfig
from fakeprobe.datasets import discover, safe_text
from fakeprobe.errors import FakeprobeError, MediaError
from fakeprobe.extractor import frames as frames_module
from fakeprobe.extractor.frames import read_media, sample_indices
from fakeprobe.features.cache import CacheReader

runner = CliRunner()
STUBS = ["--detector", "test-blob", "--backbone", "test-colour", "--frames", "4"]


def records(cache: Path) -> dict[str, tuple[str, str]]:
    """id -> (status, error) of every item in a cache."""
    with CacheReader(cache) as reader:
        videos = reader.videos()
    return {str(i): (str(s), str(e))
            for i, s, e in zip(videos["id"], videos["status"], videos["error"])}


def assert_clean(result, code: int) -> None:
    """The exit code, and no traceback in what was printed."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code in (0, 1):  # exit 2 is the parser's own refusal (a typer.BadParameter)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            repr(result.exception)


def bytes_name(folder: Path, name: bytes, source: Path) -> Path:
    """``source`` moved to a file whose name is the raw ``name`` bytes (not UTF-8)."""
    target = os.path.join(os.fsencode(folder), name)
    try:
        os.rename(os.fsencode(source), target)
    except OSError as exc:  # e.g. a file system that insists on UTF-8 names
        pytest.skip(f"this file system refuses non-UTF-8 names ({exc})")
    return Path(os.fsdecode(target))


def giant_png(path: Path, width: int, height: int) -> Path:
    """A PNG of one pixel whose header claims ``width`` x ``height``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 4)) + chunk(b"IEND", b""))
    return path


# --- item 3: file names that are not valid UTF-8 -------------------------------------------

def test_non_utf8_names_are_read(tmp_path):
    video = bytes_name(tmp_path, b"bad\xff.mp4", write_video(tmp_path / "v.mp4", n_frames=10))
    image = bytes_name(tmp_path, b"img\xfe.png", write_image(tmp_path / "i.png"))
    info, frames = read_media(video, "video", count=4)
    assert info.n_frames == 10 and len(frames) == 4 and not info.warning
    assert read_media(image, "image")[1][0].image.shape == (60, 80, 3)


@pytest.mark.parametrize("source", ["synthetic",
                                    pytest.param("ffpp", marks=pytest.mark.shared_data)])
def test_non_utf8_names_extract_and_rerun(tmp_path, source):
    folder = tmp_path / "in" / "real"
    folder.mkdir(parents=True)
    if source == "ffpp":  # a real FF++ c40 clip under a name that is not UTF-8
        clip = require_shared_data() / "ffpp/original_sequences/youtube/c40/videos/183.mp4"
        shutil.copy(clip, folder / "v.mp4")
    else:
        write_video(folder / "v.mp4", n_frames=10)
    bytes_name(folder, b"bad\xff.mp4", folder / "v.mp4")
    bytes_name(folder, b"img\xfe.png", write_image(folder / "i.png"))
    cache = tmp_path / "c.h5"
    for _ in range(2):  # the rerun finds both cached
        result = runner.invoke(app, ["extract", str(tmp_path / "in"), "--out", str(cache),
                                     *STUBS])
        assert_clean(result, 0)
    stored = records(cache)
    assert stored["in/real/bad\\xff.mp4"][0] == "ok"
    assert stored["in/real/img\\xfe.png"][0] == "ok"


def test_an_os_error_naming_a_non_utf8_file_is_recorded(tmp_path, monkeypatch, stub_config):
    from fakeprobe.pipeline import run as pipeline

    folder = tmp_path / "in"
    folder.mkdir()
    bytes_name(folder, b"bad\xff.mp4", write_video(tmp_path / "v.mp4", n_frames=6))
    write_video(folder / "good.mp4", n_frames=6)
    real_read = pipeline.read_media

    def refuse_bad(path, *args, **kwargs):
        if "bad" in path.name:
            raise PermissionError(13, "Permission denied", str(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(pipeline, "read_media", refuse_bad)
    summary = pipeline.extract([folder], tmp_path / "c.h5", stub_config)
    assert summary.extracted == 1 and summary.failed == 1
    stored = records(tmp_path / "c.h5")
    status, error = stored["in/bad\\xff.mp4"]
    assert status == "decode_error" and "Permission denied" in error


def test_safe_text_keeps_names_apart_and_printable():
    assert safe_text(os.fsdecode(b"a\xff.mp4")) == "a\\xff.mp4"
    assert safe_text("d\u00e9j\u00e0.mp4") == "d\u00e9j\u00e0.mp4"  # real UTF-8 is untouched
    assert safe_text("x\ud800.mp4").encode("utf-8")  # a stray surrogate from JSON


# --- item 5: image headers that claim giant sizes -------------------------------------------

@pytest.mark.parametrize("width,height", [(50_000, 50_000), (10_000, 10_000)],
                         ids=["pil-bomb-error", "over-max-pixels"])
def test_giant_image_headers_are_refused_before_decoding(tmp_path, width, height):
    path = giant_png(tmp_path / "giant.png", width, height)
    with pytest.raises(MediaError) as caught:
        read_media(path, "image")
    assert caught.value.status == "too_large"


def test_giant_image_in_extract_is_one_line_and_a_status(tmp_path):
    folder = tmp_path / "in" / "fake"
    folder.mkdir(parents=True)
    giant_png(folder / "giant.png", 50_000, 50_000)
    write_video(folder / "v.mp4", n_frames=8)
    cache = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract", str(tmp_path / "in"), "--out", str(cache), *STUBS])
    assert_clean(result, 0)
    assert len([line for line in result.output.splitlines() if "giant.png:" in line]) == 1
    stored = records(cache)
    assert stored["in/fake/giant.png"][0] == "too_large"
    assert stored["in/fake/v.mp4"][0] == "ok"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A logistic-regression model fitted on 8 stub-extracted synthetic videos."""
    root = tmp_path_factory.mktemp("model")
    for label, seed in (("real", 0), ("fake", 50)):
        (root / "in" / label).mkdir(parents=True)
        for k in range(4):
            write_video(root / "in" / label / f"v{k}.mp4", n_frames=6, seed=seed + k,
                        blobs=1 + (label == "fake"))
    cache, model = root / "c.h5", root / "m.fpm"
    assert runner.invoke(app, ["extract", str(root / "in"), "--out", str(cache),
                               *STUBS]).exit_code == 0
    fitted = runner.invoke(app, ["fit-logreg", str(cache), "--out", str(model), "--cv", "2"])
    assert fitted.exit_code == 0, fitted.output
    return model


def test_predict_with_a_giant_image_goes_on_and_escapes_csv_formulas(tmp_path, model_file):
    giant = giant_png(tmp_path / "giant.png", 50_000, 50_000)
    video = write_video(tmp_path / "=HYPERLINK(1).mp4", n_frames=6)
    table = tmp_path / "out.csv"
    timeline = tmp_path / "timeline.csv"
    result = runner.invoke(app, ["predict", str(model_file), str(giant), str(video),
                                 "--csv", str(table), "--timeline-csv", str(timeline)])
    assert_clean(result, 0)
    rows = table.read_text().splitlines()
    giant_row = next(r for r in rows if r.startswith("giant.png"))
    assert ",too_large," in giant_row
    assert any(r.startswith("'=HYPERLINK(1).mp4") for r in rows)
    assert not any(r.startswith("=") for r in rows + timeline.read_text().splitlines())
    alone = runner.invoke(app, ["predict", str(model_file), str(giant)])
    assert_clean(alone, 1)  # nothing readable: one line, exit 1


@pytest.mark.parametrize("cell,written", [("=1+1", "'=1+1"), ("+A1", "'+A1"), ("-2", "'-2"),
                                          ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
                                          ("in/a.mp4", "in/a.mp4"), ("", "")])
def test_csv_text_cells_cannot_start_a_formula(cell, written):
    assert _csv_text(cell) == written


# --- item 6: bad DFDC metadata.json ---------------------------------------------------------

DEEP = "[" * 100_000 + "]" * 100_000

@pytest.mark.parametrize("metadata,problem", [
    (json.dumps({"a.mp4": "FAKE"}), "'a.mp4': a JSON str"),
    (json.dumps({"a.mp4": {"label": "MAYBE"}}), "'a.mp4': unknown label 'MAYBE'"),
    (json.dumps({"a.mp4": {"label": "FAKE", "original": 123}}), "'original' is 123"),
    (json.dumps({"gone.mp4": {"label": "MAYBE"}}), "'gone.mp4': unknown label"),
    (json.dumps({"../../escape.mp4": {"label": "FAKE"}}), "not a plain file name"),
    ('{"a.mp4": ' + DEEP + "}", "nested too deeply"),
    ("this is not JSON", "unreadable DFDC metadata"),
    (json.dumps([{"a.mp4": {"label": "FAKE"}}]), "a JSON list"),
    (b'{"a.mp4": {"label": "\xff"}}', "unreadable DFDC metadata"),
], ids=["entry-is-a-string", "label-maybe", "original-123", "absent-bad-label", "path-key",
        "deeply-nested", "not-json", "top-level-list", "not-utf8"])
def test_bad_dfdc_metadata_is_one_line_and_the_rest_goes_on(tmp_path, metadata, problem):
    part = tmp_path / "dfdc" / "part"
    part.mkdir(parents=True)
    write_video(part / "a.mp4", n_frames=4)
    write_video(part / "b.mp4", n_frames=4)
    entries = {"b.mp4": {"label": "REAL"}}
    meta = part / "metadata.json"
    if isinstance(metadata, bytes):
        meta.write_bytes(metadata)
    elif metadata.startswith("{") and metadata.endswith("}") and "[[[" not in metadata:
        meta.write_text(json.dumps({**json.loads(metadata), **entries}))
    else:
        meta.write_text(metadata)
    found = discover([tmp_path / "dfdc"])
    lines = [p for p in found.problems if str(meta) in p]
    assert len(lines) == 1 and problem in lines[0], found.problems
    ids = {i.id: i for i in found.items}
    assert all(".." not in i for i in ids)
    assert "dfdc/part/b.mp4" in ids  # the good entry (or the folder's file) is still there
    if "unreadable" in problem or "JSON list" in problem or "nested" in problem:
        assert ids["dfdc/part/a.mp4"].label is None  # the file is unlabelled, not lost
    else:
        assert ids["dfdc/part/b.mp4"].label == "real"
        # a bad entry is skipped, not guessed at; a file it does not name is unaffected
        assert ("dfdc/part/a.mp4" in ids) == ('"a.mp4"' not in str(metadata))


def test_bad_dfdc_metadata_through_extract(tmp_path):
    part = tmp_path / "dfdc"
    part.mkdir()
    write_video(part / "a.mp4", n_frames=4)
    write_video(part / "b.mp4", n_frames=4)
    (part / "metadata.json").write_text(json.dumps({"a.mp4": {"label": "MAYBE"},
                                                    "b.mp4": {"label": "FAKE"}}))
    cache = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract", str(part), "--out", str(cache), *STUBS])
    assert_clean(result, 0)
    assert "'a.mp4': unknown label 'MAYBE'" in result.output
    assert set(records(cache)) == {"dfdc/b.mp4"}


# --- item 7: bad CSV manifests --------------------------------------------------------------

def manifest_case(tmp_path: Path, body: bytes) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "clips").mkdir(parents=True)
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        write_video(data / "clips" / name, n_frames=4)
    manifest = data / "m.csv"
    manifest.write_bytes(b"path,label,group\nclips/a.mp4,real,g1\n" + body
                         + b"clips/c.mp4,fake,g2\n")
    return data, manifest


@pytest.mark.parametrize("body,problem", [
    (b"clips/b\xe9.mp4,fake,g1\n", ":3: not valid UTF-8"),
    (b"clips/b.mp4,fake," + b"x" * 200_000 + b"\n", ":3: field larger than field limit"),
    (b"clips/b.mp4,fake,g1,extra,more\n", ":3: 5 fields but the header has 3"),
    (b"clips/b\x00.mp4,fake,g1\n", ":3: the path holds a NUL byte"),
    (b"clips/" + b"b" * 300 + b".mp4,fake,g1\n", ":3:"),
    (b"clips/b.mp4,MAYBE,g1\n", ":3: unknown label 'MAYBE'"),
], ids=["latin-1", "field-over-128k", "extra-columns", "nul-byte", "name-too-long",
        "bad-label"])
def test_bad_manifest_rows_are_one_line_each(tmp_path, body, problem):
    _, manifest = manifest_case(tmp_path, body)
    found = discover([manifest])
    lines = [p for p in found.problems if str(manifest) in p]
    assert len(lines) == 1 and problem in lines[0], found.problems
    assert {i.id for i in found.items} == {"data/clips/a.mp4", "data/clips/c.mp4"}


def test_short_rows_are_read_with_empty_fields(tmp_path):
    _, manifest = manifest_case(tmp_path, b"clips/b.mp4\n")
    found = discover([manifest])
    assert not found.problems
    assert {i.id: i.label for i in found.items}["data/clips/b.mp4"] is None


@pytest.mark.parametrize("content,message", [
    (b"", "empty manifest"),
    (b"file,label\nx.mp4,real\n", "'path' column"),
    (b'pa\x00th,label\nx.mp4,real\n', "'path' column"),
], ids=["empty-file", "no-path-column", "nul-in-header"])
def test_unusable_manifests_are_one_line_exit_1(tmp_path, content, message):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(content)
    result = runner.invoke(app, ["extract", str(manifest), "--out", str(tmp_path / "c.h5"),
                                 *STUBS])
    assert_clean(result, 1)
    assert message in result.output and str(manifest.name) in result.output


def test_conflicting_duplicate_rows_are_refused_naming_both(tmp_path):
    _, manifest = manifest_case(tmp_path, b"clips/b.mp4,real,g1\nclips/b.mp4,fake,g1\n"
                                          b"clips/a.mp4,real,g1\n")
    found = discover([manifest])
    ids = {i.id for i in found.items}
    assert "data/clips/b.mp4" not in ids  # neither row is trusted
    assert "data/clips/a.mp4" in ids  # an identical repeat is harmless
    conflict = [p for p in found.problems if "b.mp4" in p]
    assert len(conflict) == 1
    assert ":3 and line 4" in conflict[0] and "label real vs fake" in conflict[0]


def test_the_same_file_real_in_one_listing_and_fake_in_another_is_refused(tmp_path):
    data, manifest = manifest_case(tmp_path, b"")
    other = data / "other.csv"
    other.write_text("path,label,group\nclips/a.mp4,fake,g1\n")
    found = discover([manifest, other])
    assert "data/clips/a.mp4" not in {i.id for i in found.items}
    assert any("listed twice with different fields" in p for p in found.problems)


@pytest.mark.parametrize("row_path", ["../../outside/x.mp4", "../outside/x.mp4", "ABSOLUTE"])
def test_manifest_paths_outside_its_folder_get_ids_without_dotdot(tmp_path, row_path):
    manifest_dir = tmp_path / "a" / "b" / "lists"
    manifest_dir.mkdir(parents=True)
    target = (manifest_dir / row_path).resolve() if row_path != "ABSOLUTE" else (
        tmp_path / "elsewhere" / "x.mp4")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_video(target, n_frames=4)
    listed = str(target) if row_path == "ABSOLUTE" else row_path
    (manifest_dir / "m.csv").write_text(f"path,label\n{listed},real\n")
    found = discover([manifest_dir / "m.csv"])
    assert not found.problems
    [item] = found.items
    assert ".." not in item.id.split("/") and not item.id.startswith("/")
    assert item.id.endswith("x.mp4") and item.path == target


# --- item 8: truncated and corrupt videos ---------------------------------------------------

@pytest.fixture(scope="module")
def faststart(tmp_path_factory) -> Path:
    """A 60-frame MP4 with its index (moov) at the front, as web videos are."""
    ffmpeg = pytest.importorskip("imageio_ffmpeg").get_ffmpeg_exe()
    folder = tmp_path_factory.mktemp("faststart")
    source = write_video(folder / "src.mp4", n_frames=60, size=(96, 72))
    out = folder / "fast.mp4"
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(source), "-c", "copy",
                    "-movflags", "+faststart", str(out)], check=True)
    return out


def damage(data: bytes, how: str) -> bytes:
    middle = len(data) // 2
    if how == "cut-10":
        return data[: len(data) // 10]
    if how == "cut-50":
        return data[:middle]
    return data[:middle] + bytes(range(256)) * 80 + data[middle + 20_480:]  # 20 KB garbage


@pytest.mark.parametrize("how", ["cut-10", "cut-50", "garbage-20k"])
def test_truncated_videos_are_flagged_not_silently_ok(tmp_path, faststart, how):
    path = tmp_path / "v.mp4"
    path.write_bytes(damage(faststart.read_bytes(), how))
    info, frames = read_media(path, "video", count=8)
    assert 0 < len(frames) < 8
    assert info.warning.startswith("truncated or corrupt") and f"{len(frames)} of 8" in \
        info.warning
    whole_info, whole = read_media(faststart, "video", count=8)
    assert len(whole) == 8 and whole_info.warning == ""


def test_a_truncated_video_is_kept_with_a_warning_line_and_an_error_text(tmp_path, faststart):
    folder = tmp_path / "in" / "fake"
    folder.mkdir(parents=True)
    (folder / "cut.mp4").write_bytes(damage(faststart.read_bytes(), "cut-50"))
    shutil.copy(faststart, folder / "whole.mp4")
    cache = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract", str(tmp_path / "in"), "--out", str(cache),
                                 "--detector", "test-blob", "--backbone", "test-colour",
                                 "--frames", "8", "--json"])
    assert_clean(result, 0)
    warned = [line for line in result.output.splitlines() if line.startswith("warning")]
    assert len(warned) == 1 and "in/fake/cut.mp4: truncated or corrupt" in warned[0]
    summary = json.loads(result.stdout)
    assert [w["id"] for w in summary["warnings"]] == ["in/fake/cut.mp4"]
    stored = records(cache)
    assert stored["in/fake/cut.mp4"][0] in ("ok", "no_face")
    assert stored["in/fake/cut.mp4"][1].startswith("truncated or corrupt")
    assert stored["in/fake/whole.mp4"][1] == ""
    info = runner.invoke(app, ["info", str(cache), "--json"])
    assert_clean(info, 0)
    assert [w["id"] for w in json.loads(info.stdout)["warnings"]] == ["in/fake/cut.mp4"]
    table = runner.invoke(app, ["info", str(cache)])
    assert "read with a caveat (1)" in table.output and "in/fake/cut.mp4" in table.output


# --- item 12: tiny caches under cross-validation, option ranges -----------------------------

@pytest.fixture(scope="module")
def six_video_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("six")
    for label, seed in (("real", 0), ("fake", 10)):
        (root / "in" / label).mkdir(parents=True)
        for k in range(3):
            write_video(root / "in" / label / f"v{k}.mp4", n_frames=6, seed=seed + k)
    cache = root / "c.h5"
    assert runner.invoke(app, ["extract", str(root / "in"), "--out", str(cache),
                               *STUBS]).exit_code == 0
    return cache


@pytest.mark.parametrize("command", [["fit-svm"], ["compare", "--head", "svm"],
                                     ["fit-xgb"], ["fit-logreg"]])
def test_two_fold_cv_on_a_six_video_cache(six_video_cache, command):
    result = runner.invoke(app, [command[0], str(six_video_cache), *command[1:], "--cv", "2"])
    assert_clean(result, 0)


def test_a_class_of_one_item_cannot_be_cross_validated(tmp_path):
    for label, count in (("real", 1), ("fake", 3)):
        (tmp_path / "in" / label).mkdir(parents=True)
        for k in range(count):
            write_video(tmp_path / "in" / label / f"v{k}.mp4", n_frames=6, seed=k)
    cache = tmp_path / "c.h5"
    assert runner.invoke(app, ["extract", str(tmp_path / "in"), "--out", str(cache),
                               *STUBS]).exit_code == 0
    for command in (["fit-svm", "--cv", "2"], ["compare", "--holdout", "0.5"]):
        result = runner.invoke(app, [command[0], str(cache), *command[1:]])
        assert_clean(result, 1)
        assert "needs at least 2 real and 2 fake items; the selection has 1 real and 3 fake" \
            in " ".join(result.output.split())


@pytest.mark.parametrize("option,value,message", [
    ("--min-face-score", "nan", "min_face_score must be a number"),
    ("--min-face-score", "-1", "between 0 and 1"),
    ("--min-face-score", "5", "between 0 and 1"),
    ("--max-pixels", "-1", "--max-pixels"),
    ("--frames", str(MAX_SAMPLED_FRAMES + 1), "--frames"),
    ("--max-frames", "1000000", "--max-frames"),
    ("--fps", "nan", "--fps"),
], ids=["score-nan", "score-negative", "score-5", "max-pixels", "frames", "max-frames",
        "fps-nan"])
def test_extract_options_out_of_range_are_refused(media_tree, tmp_path, option, value,
                                                   message):
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(tmp_path / "c.h5"),
                                 "--detector", "test-blob", "--backbone", "test-colour",
                                 option, value])
    assert_clean(result, 2)
    assert message in result.output
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize("stored", [[1, 2], {"frames": 10**12}, {"backbones": 5},
                                    {"min_face_score": "high"}, {"fps": float("nan")}])
def test_a_stored_config_out_of_range_is_a_typed_error(stored):
    from fakeprobe.core.config import InvalidConfig

    with pytest.raises(InvalidConfig) as caught:  # a FakeprobeError: one line in the CLI
        ExtractorConfig.from_dict(stored)
    assert isinstance(caught.value, FakeprobeError) and isinstance(caught.value, ValueError)


def test_dlib_scores_are_not_probabilities():
    assert ExtractorConfig(detector="dlib-hog", min_face_score=-0.5).min_face_score == -0.5
    with pytest.raises(ValueError, match="between 0 and 1"):
        ExtractorConfig(detector="yunet", min_face_score=1.5)


# --- item 13: sampling bounds and memory ----------------------------------------------------

def test_frames_with_fps_is_refused(media_tree, tmp_path):
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(tmp_path / "c.h5"),
                                 *STUBS, "--fps", "5"])
    assert_clean(result, 2)
    assert "--frames and --fps" in result.output


def test_holdout_with_eval_is_refused(six_video_cache):
    result = runner.invoke(app, ["fit-logreg", str(six_video_cache), "--holdout", "0.3",
                                 "--eval", str(six_video_cache)])
    assert_clean(result, 2)
    assert "--holdout and --eval" in result.output


def test_a_claimed_billion_frames_builds_no_giant_index():
    indices = sample_indices(10**12, count=32, fps=1.0, video_fps=30.0, max_frames=300)
    assert len(indices) == 300 and indices[-1] == 299 * 30
    assert len(sample_indices(10**12, count=32)) == 32


def test_sampled_frames_over_the_memory_budget_are_refused(tmp_path, monkeypatch):
    video = write_video(tmp_path / "v.mp4", n_frames=20, size=(96, 72))
    monkeypatch.setattr(frames_module, "MAX_DECODE_BYTES", 96 * 72 * 3 * 5)
    assert len(read_media(video, "video", count=5)[1]) == 5
    with pytest.raises(MediaError, match="GiB one item may use") as caught:
        read_media(video, "video", count=6)
    assert caught.value.status == "too_large"


# --- GIFs -----------------------------------------------------------------------------------

def test_gifs_are_read_as_videos(tmp_path):
    from PIL import Image

    folder = tmp_path / "in" / "real"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    clip = [Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
            for _ in range(5)]
    clip[0].save(folder / "clip.gif", save_all=True, append_images=clip[1:], duration=40)
    found = discover([tmp_path / "in"])
    assert [(i.id, i.kind) for i in found.items] == [("in/real/clip.gif", "video")]
    info, frames = read_media(folder / "clip.gif", "video", count=8)
    assert info.n_frames == 5 and len(frames) == 5 and not info.warning


# --- fuzz: the listing readers raise only fakeprobe's typed errors --------------------------

FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(body=st.binary(max_size=2000))
def test_fuzz_manifest_bytes(tmp_path, body):
    manifest = tmp_path / "fuzz.csv"
    manifest.write_bytes(body)
    try:
        found = discover([manifest])
    except FakeprobeError:
        return
    assert all(".." not in i.id.split("/") for i in found.items)
    assert all(safe_text(i.id) == i.id for i in found.items)


@FUZZ
@given(rows=st.lists(st.lists(st.text(max_size=30), max_size=6), max_size=8),
       header=st.sampled_from(["path,label,group", "path", "label,path,method,extra"]))
def test_fuzz_manifest_rows(tmp_path, rows, header):
    manifest = tmp_path / "rows.csv"
    import csv
    import io

    text = io.StringIO()
    csv.writer(text).writerows(rows)
    manifest.write_bytes(header.encode() + b"\n"
                         + text.getvalue().encode("utf-8", "surrogatepass"))
    found = discover([manifest])
    assert all(".." not in i.id.split("/") for i in found.items)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=20)


@FUZZ
@given(metadata=st.dictionaries(st.text(max_size=16), JSON, max_size=6) | JSON)
def test_fuzz_dfdc_metadata_json(tmp_path, metadata):
    folder = tmp_path / "dfdc"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8",
                                          errors="surrogatepass")
    found = discover([folder])
    assert all(".." not in i.id.split("/") for i in found.items)
    assert all(i.path.parent == folder for i in found.items)


@FUZZ
@given(raw=st.binary(max_size=500))
def test_fuzz_dfdc_metadata_bytes(tmp_path, raw):
    folder = tmp_path / "dfdc_bytes"
    folder.mkdir(exist_ok=True)
    (folder / "metadata.json").write_bytes(raw)
    discover([folder])


def test_predict_scores_a_truncated_video_and_says_so(tmp_path, faststart, model_file):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(damage(faststart.read_bytes(), "cut-50"))
    table = tmp_path / "out.csv"
    result = runner.invoke(app, ["predict", str(model_file), str(cut), "--csv", str(table)])
    assert_clean(result, 0)
    [row] = table.read_text().splitlines()[1:]
    assert row.startswith("cut.mp4,") and "truncated or corrupt" in row


def test_names_that_look_like_terminal_markup_are_printed_as_they_are(tmp_path, model_file):
    folder = tmp_path / "in" / "real"
    folder.mkdir(parents=True)
    (folder / "[").mkdir()  # the id "in/real/[/]ok.mp4" holds a closing markup tag
    write_video(folder / "[" / "]ok.mp4", n_frames=6)
    (folder / "[bold]broken.mp4").write_text("not a video")
    cache = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract", str(tmp_path / "in"), "--out", str(cache), *STUBS])
    assert_clean(result, 0)
    assert "[bold]broken.mp4" in result.output  # the skip line and the failures table
    info = runner.invoke(app, ["info", str(cache)])
    assert_clean(info, 0)
    assert "[bold]broken.mp4" in info.output
    scored = runner.invoke(app, ["predict", str(model_file), str(tmp_path / "in")])
    assert_clean(scored, 0)
    assert "[/]ok.mp4" in scored.output and "[bold]broken.mp4" in scored.output
    missing = runner.invoke(app, ["extract", str(tmp_path / "in" / "[red]absent.csv"),
                                  "--out", str(cache), *STUBS])
    assert missing.exit_code == 2 and "Traceback" not in missing.output


def test_a_failed_item_is_tried_again_on_the_next_run(tmp_path, stub_config):
    """An unreadable file is cached with its failure, and extracted when a later run finds it
    readable (a repaired or replaced file); a read item is never extracted twice."""
    from fakeprobe.features.cache import CacheReader
    from fakeprobe.pipeline.run import extract

    folder = tmp_path / "in" / "real"
    folder.mkdir(parents=True)
    write_video(folder / "good.mp4", seed=1)
    (folder / "broken.mp4").write_bytes(b"not a video at all" * 10)
    cache = tmp_path / "c.h5"
    first = extract([tmp_path / "in"], cache, stub_config)
    assert (first.extracted, first.failed) == (1, 1)
    with CacheReader(cache) as reader:
        status = dict(zip(reader.videos()["id"], reader.videos()["status"]))
    assert status["in/real/broken.mp4"] not in ("ok", "no_face")
    write_video(folder / "broken.mp4", seed=2)  # repaired
    second = extract([tmp_path / "in"], cache, stub_config)
    assert (second.extracted, second.failed) == (1, 0)
    with CacheReader(cache) as reader:
        videos = reader.videos()
        status = dict(zip(videos["id"], videos["status"]))
        assert status == {"in/real/good.mp4": "ok", "in/real/broken.mp4": "ok"}
        assert reader.n_videos == 2 and all(videos["row_count"] > 0)
