"""Pseudo-fakes end to end: ``extract --self-blend``, ``synth`` files, the offline sample, and
the train/test roles that keep pseudo-fakes out of the scores."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_image, write_video
from fakeprobe.app import Protocol
from fakeprobe.classifiers.data import load_frames
from fakeprobe.cli import app
from fakeprobe.datasets import SELF_BLEND_METHOD, SELF_BLEND_SUFFIX
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.features import cache as fcache
from fakeprobe.pipeline.run import extract
from fakeprobe.pipeline.steps import SelfBlend
from fakeprobe.synth.blend import BlendConfig
from fakeprobe.synth.media import item_params, synthesize

BLEND = SelfBlend(BlendConfig(), seed=3)


def _by_id(path: Path) -> dict[str, dict]:
    """Per item id: its record columns, rows, crops and features."""
    out = {}
    with fcache.CacheReader(path) as cache:
        videos, frames = cache.videos(), cache.frames()
        names = list(cache.feature_sets)
        for position, rows in cache.iter_video_rows():
            out[str(videos["id"][position])] = {
                **{k: v[position] for k, v in videos.items()},
                "frame_index": frames["frame_index"][rows],
                "landmarks": frames["landmarks"][rows],
                "crops": cache.crops(rows) if cache.has_crops else None,
                **{f"feature:{n}": cache.features(n, rows) for n in names},
            }
    return out


@pytest.fixture()
def blended_cache(media_tree, tmp_path, stub_config):
    path = tmp_path / "sb.h5"
    config = replace(stub_config, keep_crops=48)
    summary = extract([media_tree], path, config, self_blend=BLEND)
    assert summary.failed == 0
    return path, config


def test_every_real_gets_a_twin_in_its_group_with_the_same_rows(blended_cache):
    path, _ = blended_cache
    items = _by_id(path)
    reals = [i for i, v in items.items() if v["label"] == "real"]
    twins = [i for i, v in items.items() if v["method"] == SELF_BLEND_METHOD]
    assert len(reals) == 3 and sorted(twins) == sorted(r + SELF_BLEND_SUFFIX for r in reals)
    for real in reals:
        twin = items[real + SELF_BLEND_SUFFIX]
        assert twin["label"] == "fake" and twin["group"] == items[real]["group"]
        assert twin["path"] == items[real]["path"]
        # detection ran on the real frames: same frames, same landmarks
        np.testing.assert_array_equal(twin["frame_index"], items[real]["frame_index"])
        np.testing.assert_array_equal(twin["landmarks"], items[real]["landmarks"])
        # the crops were cut from blended frames
        assert np.abs(twin["crops"].astype(int) - items[real]["crops"].astype(int)).max() > 5
    # the true fakes got no twin
    fakes = [i for i, v in items.items() if v["label"] == "fake" and v["method"] != "self_blend"]
    assert len(fakes) == 3


def test_twins_are_reproducible_and_a_later_backbone_sees_the_same_blend(
        media_tree, tmp_path, stub_config, blended_cache):
    path, config = blended_cache
    # the same run into another cache: identical pseudo-fakes
    again = tmp_path / "again.h5"
    extract([media_tree], again, config, self_blend=BLEND)
    first, second = _by_id(path), _by_id(again)
    for vid in first:
        np.testing.assert_array_equal(first[vid]["feature:test-colour"],
                                      second[vid]["feature:test-colour"])
    # a backbone whose crop is wider than the stored crops re-decodes and re-blends: it must
    # equal the same backbone computed in one go with the first
    wide = replace(config, backbones=("test-colour", "test-grey"), keep_crops=0)
    one_go = tmp_path / "one_go.h5"
    extract([media_tree], one_go, wide, self_blend=BLEND)
    later = tmp_path / "later.h5"
    extract([media_tree], later, replace(wide, backbones=("test-colour",)), self_blend=BLEND)
    summary = extract([media_tree], later, wide, self_blend=BLEND)
    assert summary.features_added == 9  # 6 items + 3 twins
    a, b = _by_id(one_go), _by_id(later)
    for vid in a:
        np.testing.assert_allclose(a[vid]["feature:test-grey"], b[vid]["feature:test-grey"],
                                   atol=1e-6)


def test_other_blend_settings_are_refused_on_the_same_cache(media_tree, blended_cache):
    path, config = blended_cache
    with pytest.raises(ConfigMismatch, match="blended with other settings"):
        extract([media_tree], path, config, self_blend=SelfBlend(BlendConfig(), seed=4))


def test_pseudo_fakes_train_but_are_never_scored(blended_cache):
    path, config = blended_cache
    data = load_frames(path, config.backbones)
    methods = data.videos["method"]
    pseudo = methods == SELF_BLEND_METHOD
    true_fake = (data.video_labels == 1) & ~pseudo

    roles = Protocol().roles(data)
    assert roles.train.all() and not roles.test[pseudo].any() and roles.test[~pseudo].all()
    roles = Protocol(train_fakes="self-blend").roles(data)
    assert not roles.train[true_fake].any() and roles.train[pseudo].all()
    roles = Protocol(train_fakes="real").roles(data)
    assert not roles.train[pseudo].any() and roles.train[true_fake].all()
    roles = Protocol(score_self_blend=True).roles(data)
    assert roles.test.all()
    # with only pseudo-fakes to score, say so rather than score reals alone
    only_pseudo = data.subset_videos(np.flatnonzero(~true_fake))
    with pytest.raises(FakeprobeError, match="--score-self-blend"):
        Protocol().roles(only_pseudo)
    with pytest.raises(FakeprobeError, match="one of"):
        Protocol(train_fakes="some")


def test_synth_writes_pseudo_fakes_grouped_with_their_sources(media_tree, tmp_path):
    (media_tree / "real" / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "synth"
    summary = synthesize([media_tree], out, seed=1, detector="test-blob")
    assert summary.skipped_not_real == 3  # the fake folder's items
    assert summary.written == 3 and summary.failed == 1
    assert [r.status for r in summary.results if r.error][0] == "decode_error"
    with open(out / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    fakes = [r for r in rows if r["label"] == "fake"]
    reals = {r["path"]: r for r in rows if r["label"] == "real"}
    assert len(fakes) == 3 and len(reals) == 3
    for fake in fakes:
        assert fake["method"] == SELF_BLEND_METHOD
        source = next(r for r in reals.values() if r["group"] == fake["group"])
        assert (out / source["path"]).resolve().name == Path(fake["source"]).name
        written = out / fake["path"]
        assert written.is_file()
    # a written video keeps every frame and size, and changed where the face is
    video = out / "self_blend" / "data" / "real" / "a.mp4"
    got, want = _frames(video), _frames(media_tree / "real" / "a.mp4")
    assert len(got) == len(want) == 12 and got[0].shape == want[0].shape
    face = (slice(10, 30), slice(5, 21))  # the first frame's bright square
    assert np.abs(got[0][face].astype(int) - want[0][face].astype(int)).mean() > 3
    # and the manifest reads back as a grouped, labelled data set
    from fakeprobe.datasets import discover

    found = discover([out / "labels.csv"])
    groups = {}
    for item in found.items:
        groups.setdefault(item.group, set()).add(item.label)
    assert all(labels == {"real", "fake"} for labels in groups.values())


def test_synth_params_are_those_of_extract(media_tree, tmp_path):
    """synth and extract --self-blend draw a face's parameters from the same (seed, id)."""
    a = item_params(BlendConfig(), 7, "data/real/a.mp4")
    assert a == item_params(BlendConfig(), 7, "data/real/a.mp4")
    assert a != item_params(BlendConfig(), 8, "data/real/a.mp4")
    assert a != item_params(BlendConfig(), 7, "data/real/b.mp4")


def _frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    return frames


def test_the_offline_sample_is_labelled_grouped_and_has_faces(tmp_path):
    from fakeprobe.datasets import discover
    from fakeprobe.synth.sample import find_photos, make_sample

    assert find_photos(), "matplotlib ships a portrait; the sample needs it"
    summary = make_sample(tmp_path / "s", clips_per_photo=2, holdout_per_photo=1, seconds=0.4)
    assert summary.frames_with_face == summary.frames > 0
    for manifest, per_photo in ((summary.labels_csv, 2), (summary.holdout_csv, 1)):
        found = discover([Path(manifest)])
        assert not found.problems and not found.missing
        assert len(found.items) == 2 * per_photo * len(summary.photos)
        groups = {}
        for item in found.items:
            groups.setdefault(item.group, []).append((item.label, item.method))
        assert all(sorted(v) == [("fake", SELF_BLEND_METHOD), ("real", "virtual_camera")]
                   for v in groups.values())
        for item in found.items:
            assert len(_frames(item.path)) == 6  # 0.4 s at 15 fps


def test_synth_cli(media_tree, tmp_path):
    runner = CliRunner()
    shown = runner.invoke(app, ["synth", "--show-config"])
    assert shown.exit_code == 0
    assert BlendConfig.from_dict(json.loads(shown.stdout)) == BlendConfig()
    result = runner.invoke(app, ["synth", str(media_tree / "real"), "--out",
                                 str(tmp_path / "o"), "--detector", "test-blob",
                                 "--blend-mask", "ellipse", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["written"] == 3
    assert all(item["params"]["mask"] == "ellipse" for item in data["items"])
    bad = runner.invoke(app, ["synth", "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 1 and "give real INPUTS" in bad.output
    config = tmp_path / "blend.json"
    config.write_text(json.dumps({"mask": "star"}))
    bad = runner.invoke(app, ["synth", str(media_tree), "--out", str(tmp_path / "o3"),
                              "--blend-config", str(config)])
    assert bad.exit_code == 1 and "mask" in bad.output


def test_image_twins(tmp_path, stub_config):
    root = tmp_path / "d"
    (root / "real").mkdir(parents=True)
    (root / "fake").mkdir(parents=True)
    write_image(root / "real" / "x.png")
    write_video(root / "fake" / "y.mp4", seed=2)
    path = tmp_path / "i.h5"
    extract([root], path, stub_config, self_blend=BLEND)
    items = _by_id(path)
    assert set(items) == {"d/real/x.png", "d/real/x.png#self_blend", "d/fake/y.mp4"}


def test_every_face_track_is_blended_with_its_own_draw(tmp_path, stub_config):
    """With --all-faces each track gets its own parameters (from the source id and the
    track), the same in every frame of it."""
    root = tmp_path / "d" / "real"
    root.mkdir(parents=True)
    write_video(root / "two.mp4", blobs=2, seed=4)
    path = tmp_path / "two.h5"
    config = replace(stub_config, all_faces=True, keep_crops=48)
    extract([tmp_path / "d"], path, config, self_blend=BLEND)
    items = _by_id(path)
    real, twin = items["d/real/two.mp4"], items["d/real/two.mp4" + SELF_BLEND_SUFFIX]
    np.testing.assert_array_equal(real["landmarks"], twin["landmarks"])
    with fcache.CacheReader(path) as cache:
        tracks = cache.frames()["track"]
    rows = slice(int(twin["row_start"]), int(twin["row_start"] + twin["row_count"]))
    assert set(tracks[rows].tolist()) == {0, 1}
    changed = np.abs(twin["crops"].astype(int) - real["crops"].astype(int)).reshape(
        len(real["crops"]), -1).max(axis=1)
    assert (changed > 5).all()  # every face of every frame was blended
    params = {t: item_params(BLEND.config, BLEND.seed, "d/real/two.mp4", t) for t in (0, 1)}
    assert params[0] != params[1]
