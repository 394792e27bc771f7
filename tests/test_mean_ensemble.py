"""The mean of several saved models: ``evaluate_mean`` and ``fakeprobe evaluate A B CACHE``."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from fakeprobe import app as api
from fakeprobe.cli import app
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from tests.test_heads import make_cache

runner = CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small cache and two models of other heads fitted on it."""
    root = tmp_path_factory.mktemp("mean")
    cache = make_cache(root / "syn.h5")
    models = [root / "lr.fpm", root / "svm.fpm"]
    api.fit(cache, "logreg", models[0], protocol=api.Protocol(folds=3))
    api.fit(cache, "svm", models[1], protocol=api.Protocol(folds=3))
    return {"root": root, "cache": cache, "models": models}


def test_the_ensemble_is_the_mean_of_the_members(world):
    result = api.evaluate_mean(world["models"], world["cache"])
    alone = [api.evaluate(m, world["cache"]).report for m in world["models"]]
    member_scores = [{v["id"]: v["score"] for v in r.video_scores} for r in alone]
    ensemble = {v["id"]: v["score"] for v in result.ensemble.video_scores}
    assert set(ensemble) == set(member_scores[0]) == set(member_scores[1])
    assert len(ensemble) == 24
    for video, score in ensemble.items():
        assert score == (member_scores[0][video] + member_scores[1][video]) / 2
    # the two members differ, so the mean is not one of them
    assert any(member_scores[0][v] != member_scores[1][v] for v in ensemble)
    assert result.ensemble.threshold == pytest.approx(np.mean([r.threshold for r in alone]))
    assert result.ensemble.video["threshold"] == result.ensemble.threshold
    # frames: the mean of the members' frame probabilities, row by row
    frames = [r.frame_scores["score"] for r in alone]
    assert result.ensemble.n_frames == len(frames[0]) == 24 * 8
    assert sorted(result.ensemble.frame_scores["score"]) == \
        sorted((a + b) / 2 for a, b in zip(*frames))
    assert result.ensemble.frame["roc_auc"] > 0.9
    assert [r.report.video for r in result.members] == [r.video for r in alone]


def test_the_command_shows_members_and_ensemble_side_by_side(world):
    args = ["evaluate", *map(str, world["models"]), str(world["cache"])]
    table = runner.invoke(app, args)
    assert table.exit_code == 0, table.output
    for name in ("lr.fpm (logreg)", "svm.fpm (svm)", "mean of 2"):
        assert name in table.stdout
    assert "the mean of the member thresholds" in table.stdout
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [m["model"] for m in data["members"]] == list(map(str, world["models"]))
    assert [m["report"]["head"] for m in data["members"]] == ["logreg", "svm"]
    assert data["ensemble"]["report"]["head"] == "mean of 2"
    thresholds = [m["report"]["threshold"] for m in data["members"]]
    assert data["ensemble"]["report"]["threshold"] == pytest.approx(np.mean(thresholds))
    assert data["ensemble"]["threshold_rule"] == "mean of the member thresholds"
    # one model: the evaluation of before
    single = runner.invoke(app, ["evaluate", str(world["models"][0]), str(world["cache"]),
                                 "--json"])
    assert single.exit_code == 0 and "members" not in json.loads(single.stdout)


def test_a_member_the_cache_does_not_suit_is_refused(world, tmp_path):
    other = make_cache(tmp_path / "other.h5", seed=5)
    with h5py.File(other, "r+") as h5:  # the same feature set, made with other weights
        h5["features/feat"].attrs["config"] = json.dumps({"name": "feat", "sha256": "zzz"})
    refit = tmp_path / "refit.fpm"
    api.fit(other, "logreg", refit, protocol=api.Protocol(folds=3))
    with pytest.raises(ConfigMismatch, match="sha256"):
        api.evaluate_mean([world["models"][0], refit], world["cache"])
    refused = runner.invoke(app, ["evaluate", str(world["models"][0]), str(refit),
                                  str(world["cache"])])
    assert refused.exit_code == 1
    assert refused.output.strip().startswith("error:") and "sha256" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    with pytest.raises(FakeprobeError, match="at least two"):
        api.evaluate_mean(world["models"][:1], world["cache"])
