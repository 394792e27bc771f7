"""Heads, grouped evaluation, model files and the head commands, on synthetic caches."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from typer.testing import CliRunner

from fakeprobe import app as api
from fakeprobe.classifiers.data import Selection, load_frames
from fakeprobe.classifiers.heads import AutoSVC, NystroemSVC, balanced_weights, new_head
from fakeprobe.classifiers.model import ModelIntegrityError, load_model
from fakeprobe.cli import app
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.features import cache as fcache
from fakeprobe.training.cv import cross_validate, grouped_folds, train_test

runner = CliRunner()


def _expected_failures(estimator):
    reason = ("weights are not repetitions here: the calibration folds (AutoSVC) and the "
              "Nystroem landmarks are drawn from the rows, so repeating a row changes them")
    return {"check_sample_weight_equivalence_on_dense_data": reason}


@parametrize_with_checks([AutoSVC(calibration_folds=2), NystroemSVC(n_components=20),
                          AutoSVC(exact_max=10, calibration_folds=2)],
                         expected_failed_checks=_expected_failures)
def test_custom_estimators_follow_scikit_learn(estimator, check):
    check(estimator)


def test_autosvc_switches_to_the_kernel_approximation_for_big_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    y = (X[:, 0] > 0).astype(int)
    small = AutoSVC(exact_max=1000).fit(X, y)
    big = AutoSVC(exact_max=100).fit(X, y)
    assert (small.kernel_, big.kernel_) == ("rbf", "nystroem")
    assert (big.predict(X) == y).mean() > 0.9
    proba = small.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_crossfit_calibration_fits_fold_svms_only_and_calibrates_as_well_as_cv():
    """The Nystroem SVM's default calibration keeps one SVM per calibration fold, each
    Platt-scaled on the fold it did not see, on one shared kernel map: no refit on all frames,
    and on held-out groups a log loss as good as scikit-learn's out-of-fold calibration."""
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    n_groups, per_group = 60, 40
    groups = np.repeat(np.arange(n_groups), per_group)
    centre = rng.normal(0, 0.5, (n_groups, 6))[groups]
    y = (groups % 2).astype(int)
    X = centre + rng.normal(size=(len(y), 6)) + 1.5 * y[:, None] * np.eye(6)[0]
    X[:, 1] += 0.8 * np.sin(2 * X[:, 0])  # something non-linear for the kernel
    test = groups >= 45
    fitted = {cal: AutoSVC(exact_max=100, calibration=cal).fit(X[~test], y[~test],
                                                               groups=groups[~test])
              for cal in ("cv", "crossfit", "auto")}
    auto = fitted["auto"]
    assert auto.kernel_ == "nystroem" and len(auto.members_) == 3
    assert not hasattr(auto, "calibrated_") and hasattr(fitted["cv"], "calibrated_")
    # every member shares the one map, and saw two thirds of the training groups
    assert all(svm.coef_.shape == (1, auto.map_.components_.shape[0])
               for svm, _ in auto.members_)
    loss = {cal: log_loss(y[test], model.predict_proba(X[test])[:, 1])
            for cal, model in fitted.items()}
    assert loss["auto"] == loss["crossfit"]
    assert loss["crossfit"] <= loss["cv"] + 0.01
    assert loss["crossfit"] < log_loss(y[test], np.full(test.sum(), 0.5)) - 0.05
    with pytest.raises(ValueError, match="calibration must be"):
        AutoSVC(calibration="isotonic").fit(X, y)
    with pytest.raises(ValueError, match="Nystroem"):
        AutoSVC(calibration="crossfit").fit(X[:200], y[:200])


def test_balanced_weights_make_videos_and_classes_count_equally():
    y = np.array([0, 0, 0, 0, 1, 1])
    video = np.array([0, 0, 0, 1, 2, 3])
    w = balanced_weights(y, video)
    assert w[:3].sum() == pytest.approx(w[3])  # a 3-frame video weighs as a 1-frame one
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())
    assert w.mean() == pytest.approx(1.0)


# --- a synthetic cache with a known signal ---------------------------------------------------

def make_cache(path: Path, n_groups: int = 8, shift: float = 2.0, seed: int = 0,
               dataset: str = "d", no_face: bool = True,
               config: ExtractorConfig | None = None) -> Path:
    """Per group 1 real and 2 fakes (8 frames each); fakes are shifted along feature 0. One
    extra real has no face at all."""
    rng = np.random.default_rng(seed)

    def rows(n: int, face: bool = True) -> fcache.FrameRows:
        return fcache.FrameRows(
            frame_index=np.arange(n), timestamp=np.arange(n) / 25.0,
            box=np.ones((n, 4), np.float32), landmarks=np.ones((n, 5, 2), np.float32),
            score=np.ones(n, np.float32), track=np.zeros(n, np.int32),
            has_face=np.full(n, face))

    for g in range(n_groups):
        for label, count in (("real", 1), ("fake", 2)):
            for k in range(count):
                vid = f"{dataset}/g{g}/{label}{k}"
                center = rng.normal(0, 0.5, 6) + (shift if label == "fake" else 0) * np.eye(6)[0]
                feats = (center + rng.normal(0, 1, (8, 6))).astype(np.float32)
                record = fcache.VideoRecord(id=vid, path=vid, kind="video", label=label,
                                            group=f"{dataset}:g{g}", dataset=dataset,
                                            method="A" if k == 0 else "B")
                fcache.stage(path, fcache.StagedItem(record, rows=rows(8),
                                                     features={"feat": feats}))
    if no_face:
        record = fcache.VideoRecord(id=f"{dataset}/faceless", path="x", kind="video",
                                    label="real", group=f"{dataset}:faceless", dataset=dataset,
                                    method="A", status="no_face")
        fcache.stage(path, fcache.StagedItem(record, rows=rows(8, face=False),
                                             features={"feat": np.full((8, 6), np.nan)}))
    fcache.commit(path, config or ExtractorConfig(frames=8, backbones=("feat",)),
                  {"feat": {"name": "feat", "dim": 6, "sha256": "abc"}})
    return path


@pytest.fixture()
def synthetic(tmp_path) -> Path:
    return make_cache(tmp_path / "syn.h5")


def test_grouped_folds_never_share_a_group(synthetic):
    data = load_frames(synthetic, ["feat"])
    for train, test in grouped_folds(data, 4):
        assert not set(data.videos["group"][train]) & set(data.videos["group"][test])
        assert set(data.video_labels[test]) == {0, 1}


@pytest.mark.parametrize("head", ["logreg", "svm", "xgb"])
def test_heads_find_the_signal_and_the_faceless_video_gets_no_score(synthetic, head):
    data = load_frames(synthetic, ["feat"])
    assert [e["id"] for e in data.excluded] == ["d/faceless"]
    report = cross_validate(data, head, n_splits=4)
    assert report.video["roc_auc"] > 0.9
    assert report.video["n"] == 24
    assert "d/faceless" not in {v["id"] for v in report.video_scores}
    assert all(0 < f.threshold < 1 for f in report.folds)


def test_a_shuffled_signal_scores_near_chance(tmp_path):
    data = load_frames(make_cache(tmp_path / "noise.h5", n_groups=10, shift=0.0), ["feat"])
    report = cross_validate(data, "logreg", n_splits=5)
    assert report.video["roc_auc"] < 0.8  # no leak across folds: nothing to learn


def test_cross_dataset_refuses_shared_groups(tmp_path, synthetic):
    other = make_cache(tmp_path / "other.h5", dataset="e", seed=3)
    train = load_frames(synthetic, ["feat"])
    test = load_frames(other, ["feat"])
    report = train_test(train, test, "logreg")
    assert report.video["n"] == 24 and report.video["roc_auc"] > 0.9
    with pytest.raises(FakeprobeError, match="both the training and the test"):
        train_test(train, load_frames(synthetic, ["feat"]), "logreg")


def test_filters_leave_one_method_out(synthetic):
    data = load_frames(synthetic, ["feat"], Selection(exclude_methods=("B",)))
    assert set(data.videos["method"]) == {"A"}


def test_fit_saves_provenance_and_evaluate_checks_it(synthetic, tmp_path):
    model_path = tmp_path / "m.fpm"
    result = api.fit(synthetic, "logreg", model_path)
    model = load_model(model_path)
    prov = model.provenance
    assert prov["features"] == ["feat"] and prov["head"] == "logreg"
    assert prov["feature_configs"]["feat"]["sha256"] == "abc"
    assert prov["training_cache"]["items"] == 25
    assert prov["cv_video"]["roc_auc"] == result.report.video["roc_auc"]
    assert 0 < prov["threshold"] < 1 and prov["versions"]["scikit-learn"]
    report, warnings = api.evaluate(model_path, synthetic)
    assert report.video["roc_auc"] > 0.9 and warnings == []

    # a cache extracted with other weights for the same feature set is refused
    other = tmp_path / "other.h5"
    make_cache(other, seed=5)
    import h5py

    with h5py.File(other, "r+") as h5:
        h5["features/feat"].attrs["config"] = json.dumps({"name": "feat", "sha256": "zzz"})
    with pytest.raises(ConfigMismatch, match="sha256"):
        api.evaluate(model_path, other)


def test_a_corrupt_model_file_is_refused_before_unpickling(synthetic, tmp_path):
    model_path = tmp_path / "m.fpm"
    api.fit(synthetic, "logreg", model_path)
    with zipfile.ZipFile(model_path) as archive:
        provenance = archive.read("provenance.json")
        payload = bytearray(archive.read("pipeline.skops"))
    payload[len(payload) // 2] ^= 0xFF
    bad = tmp_path / "bad.fpm"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("provenance.json", provenance)
        archive.writestr("pipeline.skops", bytes(payload))
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        load_model(bad)
    (tmp_path / "junk.fpm").write_text("nope")
    with pytest.raises(ModelIntegrityError, match="not a fakeprobe model"):
        load_model(tmp_path / "junk.fpm")


def test_compare_uses_identical_folds_and_sorts_by_auc(synthetic):
    result = api.compare(synthetic, ["logreg", "xgb"], [("feat",)],
                         protocol=api.Protocol(folds=4))
    reports = result.sorted()
    aucs = [r.video["roc_auc"] for r in reports]
    assert aucs == sorted(aucs, reverse=True)
    folds = [[(f.train_videos, f.test_videos) for f in r.folds] for r in reports]
    assert folds[0] == folds[1]
    # the two heads may tie on this easy signal: check the order on reports that differ,
    # handed over worst first, with an unscored one (a single class) in the middle
    from dataclasses import replace

    made = [replace(reports[0], head=head, video={**reports[0].video, "roc_auc": auc})
            for head, auc in (("worst", 0.55), ("unscored", None), ("best", 0.91),
                              ("middle", 0.72))]
    ordered = replace(result, reports=made).sorted()
    assert [r.head for r in ordered] == ["best", "middle", "worst", "unscored"]
    assert [r["head"] for r in replace(result, reports=made).to_dict()["reports"]] == \
        ["best", "middle", "worst", "unscored"]


def test_head_commands_end_to_end(synthetic, tmp_path):
    model_path = tmp_path / "m.fpm"
    fitted = runner.invoke(app, ["fit-logreg", str(synthetic), "--out", str(model_path),
                                 "--cv", "4", "--json"])
    assert fitted.exit_code == 0, fitted.output
    assert json.loads(fitted.stdout)["report"]["video"]["roc_auc"] > 0.9
    table = runner.invoke(app, ["compare", str(synthetic), "--head", "logreg", "--head", "svm",
                                "--cv", "3"])
    assert table.exit_code == 0, table.output
    assert "video AUC" in table.stdout and "svm" in table.stdout
    evaluated = runner.invoke(app, ["evaluate", str(model_path), str(synthetic), "--json"])
    assert evaluated.exit_code == 0
    missing = runner.invoke(app, ["fit-svm", str(synthetic), "--features", "nope"])
    assert missing.exit_code == 1 and "no feature set 'nope'" in missing.output


def test_smote_heads_resample_inside_the_training_folds(synthetic):
    data = load_frames(synthetic, ["feat"])
    head = new_head("logreg", smote=True)
    assert list(head.named_steps) == ["scale", "smote", "clf"]
    report = cross_validate(data, "logreg", n_splits=3, head_params={"smote": True})
    assert report.video["roc_auc"] > 0.9


def test_eval_on_another_cache_ignores_the_training_filters(synthetic, tmp_path):
    other = make_cache(tmp_path / "other.h5", dataset="e", seed=3)
    result = runner.invoke(app, ["fit-logreg", str(synthetic), "--dataset", "d", "--eval",
                                 str(other), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["report"]
    assert report["protocol"] == "train/test" and report["video"]["n"] == 24


def test_a_model_refuses_other_faces_and_warns_about_other_sampling(synthetic, tmp_path):
    model_path = tmp_path / "m.fpm"
    api.fit(synthetic, "logreg", model_path)
    sampled = make_cache(tmp_path / "s.h5", dataset="e", seed=4,
                         config=ExtractorConfig(frames=16, backbones=("feat",)))
    report, warnings = api.evaluate(model_path, sampled)
    assert report.video["n"] == 24
    assert warnings == ["extraction differs: frames: model 8 vs cache 16"]
    detected = make_cache(tmp_path / "d.h5", dataset="f", seed=5,
                          config=ExtractorConfig(frames=8, detector="dlib-hog",
                                                 backbones=("feat",)))
    with pytest.raises(ConfigMismatch, match="detector: model 'yunet' vs cache 'dlib-hog'"):
        api.evaluate(model_path, detected)
