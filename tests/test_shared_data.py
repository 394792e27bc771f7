"""The real pipeline (YuNet, the default backbone, real heads) on ../shared/data.

Small on purpose (a few videos, 8 frames each): the full-data run is a documented command in the
README. These tests fail, not skip, under CI=true when the data is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import FFPP_C40, write_ffpp_manifest, write_video
from fakeprobe import app as api
from fakeprobe.core.config import DEFAULT_BACKBONE, ExtractorConfig
from fakeprobe.features import cache as fcache
from fakeprobe.pipeline.run import extract

pytestmark = pytest.mark.shared_data

PORTRAIT = "dfdc/dfdc_train_part_0/brtujopkby.mp4"


@pytest.fixture(scope="module")
def small_cache(shared_data, tmp_path_factory) -> Path:
    """Six FF++ c40 videos (three groups, a real and a fake each), 8 frames, default backbone,
    crops kept."""
    folder = tmp_path_factory.mktemp("shared")
    manifest = write_ffpp_manifest(folder / "list.csv", FFPP_C40, shared_data)
    cache = folder / "ffpp.h5"
    summary = extract([manifest], cache, ExtractorConfig(frames=8, keep_crops=64))
    assert summary.extracted == 6 and summary.failed == 0
    return cache


def test_faces_are_found_in_ffpp_frames(small_cache):
    with fcache.CacheReader(small_cache) as cache:
        frames = cache.frames(("has_face", "box"))
        feats = cache.features(DEFAULT_BACKBONE)
        dim = cache.feature_sets[DEFAULT_BACKBONE]["dim"]
        crops = cache.crops(slice(0, cache.n_rows))
    assert frames["has_face"].mean() >= 0.95
    assert feats.shape[1] == dim == 128 and np.isfinite(feats[frames["has_face"]]).all()
    # a face crop is a face-sized bright-ish patch, not a black border
    assert crops[frames["has_face"]].mean() > 40


def test_portrait_videos_come_out_upright(shared_data, tmp_path):
    cache = tmp_path / "dfdc.h5"
    extract([shared_data / PORTRAIT], cache, ExtractorConfig(frames=4, backbones=("spectrum",)))
    with fcache.CacheReader(cache) as reader:
        videos = reader.videos()
        frames = reader.frames(("box", "landmarks", "has_face"))
    assert (videos["width"][0], videos["height"][0]) == (1080, 1920)
    assert frames["has_face"].all()
    marks = frames["landmarks"]
    # upright face: the eyes sit above the mouth in image coordinates
    assert np.all(marks[:, [0, 1], 1].mean(axis=1) < marks[:, [3, 4], 1].mean(axis=1))


def test_fit_then_predict_a_dfdc_video_and_a_faceless_clip(shared_data, small_cache, tmp_path):
    model = tmp_path / "m.fpm"
    result = api.fit(small_cache, "logreg", model, protocol=api.Protocol(folds=3))
    assert result.report.video["n"] == 6
    blank = write_video(tmp_path / "blank.mp4", n_frames=10, blobs=0)
    copy = tmp_path / "clip.mp4"
    shutil.copyfile(shared_data / PORTRAIT, copy)
    predicted = api.predict(model, [copy, blank])
    by_name = {Path(p.path).name: p for p in predicted.predictions}
    clip, faceless = by_name["clip.mp4"], by_name["blank.mp4"]
    assert clip.status == "ok" and 0.0 <= clip.score <= 1.0
    assert clip.label in ("real", "fake") and clip.frames_used == 8
    assert [t["frame"] for t in clip.timeline] == sorted(t["frame"] for t in clip.timeline)
    assert faceless.score is None and faceless.status == "no_face"
