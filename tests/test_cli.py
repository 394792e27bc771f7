"""The command line through typer's CliRunner: exit codes, messages, JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from fakeprobe.cli import app

runner = CliRunner()
STUBS = ["--detector", "test-blob", "--backbone", "test-colour", "--frames", "4"]


def test_help_explains_extract():
    result = runner.invoke(app, ["extract", "--help"])
    assert result.exit_code == 0
    for option in ("--out", "--frames", "--fps", "--all-faces", "--backbone", "--keep-crops",
                   "--workers", "--device"):
        assert option in result.output


def test_extract_then_info(media_tree, tmp_path):
    cache = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                                 "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["extracted"] == 6 and summary["failed"] == 0
    info = runner.invoke(app, ["info", str(cache), "--json"])
    assert info.exit_code == 0
    data = json.loads(info.stdout)
    assert data["by_label"] == {"fake": 3, "real": 3}
    assert data["extractor_config"]["frames"] == 4
    table = runner.invoke(app, ["info", str(cache)])
    assert table.exit_code == 0 and "test-colour" in table.stdout


def test_nothing_extractable_exits_1(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_text("text, not video")
    result = runner.invoke(app, ["extract", str(folder), "--out", str(tmp_path / "c.h5"),
                                 *STUBS])
    assert result.exit_code == 1
    assert "no item could be extracted" in result.output
    assert "a.mp4" in result.output  # the failure is named


def test_known_errors_are_one_line(media_tree, tmp_path):
    cache = tmp_path / "c.h5"
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache),
                                 "--detector", "nope"])
    assert result.exit_code == 1
    assert "unknown detector 'nope'" in result.output
    assert "Traceback" not in result.output
    runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS])
    mismatch = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache),
                                   "--detector", "test-blob", "--backbone", "test-colour",
                                   "--frames", "5"])
    assert mismatch.exit_code == 1 and "frames: cache 4 vs asked 5" in mismatch.output


def test_bad_paths_are_rejected_by_the_parser(tmp_path):
    result = runner.invoke(app, ["extract", str(tmp_path / "absent"), "--out", "x.h5"])
    assert result.exit_code == 2
    info = runner.invoke(app, ["info", str(tmp_path / "absent.h5")])
    assert info.exit_code == 2
    junk = tmp_path / "junk.h5"
    junk.write_text("nope")
    bad = runner.invoke(app, ["info", str(junk)])
    assert bad.exit_code == 1 and "cannot open as HDF5" in bad.output


def test_bad_weights_option(media_tree, tmp_path):
    result = runner.invoke(app, ["extract", str(media_tree), "--out", str(tmp_path / "c.h5"),
                                 *STUBS, "--weights", "nonsense"])
    assert result.exit_code == 2 and "BACKBONE=PATH" in result.output


def test_components_lists_the_registries():
    result = runner.invoke(app, ["components", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    detectors = {d["name"] for d in data["detector"]}
    backbones = {b["name"] for b in data["backbone"]}
    assert {"yunet", "dlib-hog", "mtcnn"} <= detectors
    assert {"efficientnet-lite0", "mobilenet-v2"} <= backbones


def test_json_output_is_strict_json_even_for_images(tmp_path):
    from conftest import write_image

    folder = tmp_path / "in" / "real"
    folder.mkdir(parents=True)
    write_image(folder / "a.png")
    result = runner.invoke(app, ["extract", str(tmp_path / "in"), "--out",
                                 str(tmp_path / "c.h5"), *STUBS, "--json"])
    assert result.exit_code == 0
    json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    info = runner.invoke(app, ["info", str(tmp_path / "c.h5"), "--json"])
    json.loads(info.stdout, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


def test_extending_a_cache_takes_its_settings_for_options_not_given(media_tree, tmp_path):
    cache = tmp_path / "c.h5"
    first = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), *STUBS,
                                "--keep-crops", "32"])
    assert first.exit_code == 0, first.output
    # no option repeated: the cache's detector, frames, crops and backbones
    again = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache), "--json"])
    assert again.exit_code == 0, again.output
    assert "keep_crops 32" in again.stderr and "detector test-blob" in again.stderr
    summary = json.loads(again.stdout)
    assert summary["already_done"] == 6 and summary["extracted"] == 0
    info = json.loads(runner.invoke(app, ["info", str(cache), "--json"]).stdout)
    assert info["extractor_config"]["backbones"] == ["test-colour"]
    # an option given still has to match
    other = runner.invoke(app, ["extract", str(media_tree), "--out", str(cache),
                                "--frames", "8"])
    assert other.exit_code == 1 and "frames" in other.output
