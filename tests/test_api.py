"""The Python API (``import fakeprobe``) on real FF++ c40 clips from ../shared/data: extract,
compare, fit, predict, the result objects' JSON, and that the import itself stays cheap.

These tests fail, not skip, under CI=true when the data is missing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import fakeprobe
from conftest import FFPP_C40, write_ffpp_manifest


def strict_json(text: str) -> dict:
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON"))


@pytest.fixture(scope="module")
def ffpp_manifest(shared_data, tmp_path_factory) -> Path:
    """A CSV manifest of six FF++ c40 videos: three source groups, a real and a fake each."""
    return write_ffpp_manifest(tmp_path_factory.mktemp("api") / "ffpp.csv", FFPP_C40,
                               shared_data)


@pytest.fixture(scope="module")
def extracted(ffpp_manifest) -> fakeprobe.ExtractResult:
    """The six videos extracted through ``fakeprobe.extract`` (4 frames, default backbone)."""
    return fakeprobe.extract(ffpp_manifest, ffpp_manifest.with_suffix(".h5"), frames=4)


def test_import_is_cheap_and_names_resolve():
    code = ("import sys, fakeprobe\n"
            "heavy = [m for m in ('tensorflow', 'torch', 'xgboost', 'h5py', 'sklearn', 'cv2')"
            " if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "print(fakeprobe.fit.__module__, fakeprobe.predict.__module__)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fakeprobe.app.heads", "fakeprobe.app.scoring"]
    assert set(fakeprobe.app.EXPORTS) <= set(fakeprobe.__all__)
    # no module of the package is named like an export: importing it would shadow the name
    modules = {m.name for m in pkgutil.iter_modules(fakeprobe.app.__path__)}
    assert not modules & set(fakeprobe.app.EXPORTS)
    for name in fakeprobe.__all__:
        assert getattr(fakeprobe, name) is not None
    assert fakeprobe.FakeprobeError is fakeprobe.errors.FakeprobeError
    with pytest.raises(AttributeError):
        fakeprobe.no_such_function


@pytest.mark.shared_data
def test_extract_returns_a_result_and_reuses_the_cache_settings(extracted, ffpp_manifest):
    assert extracted.ok and extracted.summary.extracted == 6 and extracted.summary.failed == 0
    assert extracted.config.frames == 4 and extracted.inherited == {}
    data = strict_json(extracted.to_json())
    assert data["extracted"] == 6 and data["cache"] == str(ffpp_manifest.with_suffix(".h5"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        extracted.config = None
    notes = []
    again = fakeprobe.extract([ffpp_manifest], ffpp_manifest.with_suffix(".h5"), log=notes.append)
    assert again.summary.already_done == 6 and again.summary.extracted == 0
    assert again.inherited["frames"] == 4 and again.config.frames == 4
    assert any("frames 4" in n for n in notes)
    info = fakeprobe.info(ffpp_manifest.with_suffix(".h5"))
    assert info["by_label"] == {"fake": 3, "real": 3}
    assert strict_json(info.to_json())["extractor_config"]["frames"] == 4


@pytest.mark.shared_data
def test_compare_fit_and_predict(extracted, ffpp_manifest, shared_data, tmp_path):
    cache = ffpp_manifest.with_suffix(".h5")
    compared = fakeprobe.compare(cache, ["logreg", "svm"],
                                 protocol=fakeprobe.make_protocol(folds=3),
                                 save_run=tmp_path / "run.json")
    assert {r.head for r in compared.reports} == {"logreg", "svm"}
    assert all(r.video["n"] == 6 for r in compared.reports)
    data = strict_json(compared.to_json())
    assert [r["head"] for r in data["reports"]] == [r.head for r in compared.sorted()]
    assert compared.files.run == tmp_path / "run.json" and compared.files.run.is_file()

    model = tmp_path / "m.fpm"
    fitted = fakeprobe.fit(cache, "logreg", model, protocol=fakeprobe.Protocol(folds=3))
    assert model.is_file() and fitted.model_path == model
    assert strict_json(fitted.to_json())["model"] == str(model)

    clip = shared_data / FFPP_C40[1]
    predicted = fakeprobe.predict(model, clip, csv=tmp_path / "p.csv")
    (one,) = predicted.predictions
    assert one.status == "ok" and 0.0 <= one.score <= 1.0 and one.frames_used == 4
    assert one.label == ("fake" if one.score >= predicted.threshold else "real")
    assert predicted.files == {"csv": str(tmp_path / "p.csv")}
    with open(tmp_path / "p.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["id"] for r in rows] == [one.id]
    assert float(rows[0]["fake_probability"]) == pytest.approx(one.score, abs=1e-6)
    data = strict_json(predicted.to_json())
    assert data["predictions"][0]["score"] == pytest.approx(one.score)
    assert len(data["predictions"][0]["timeline"]) == 4


@pytest.mark.shared_data
def test_predict_with_the_bundled_detector(shared_data):
    predicted = fakeprobe.predict(None, [shared_data / FFPP_C40[0]])
    assert predicted.bundled and predicted.model_name
    assert predicted.predictions[0].status == "ok"
    assert 0.0 <= predicted.predictions[0].score <= 1.0


def test_typed_errors(tmp_path):
    with pytest.raises(fakeprobe.InvalidOption) as bad:
        fakeprobe.extract([tmp_path], tmp_path / "c.h5", frames=4, fps=1.0)
    assert bad.value.option == "--fps"
    with pytest.raises(fakeprobe.InvalidOption, match="BACKBONE=PATH"):
        fakeprobe.extract([tmp_path], tmp_path / "c.h5", weights=["nonsense"])
    with pytest.raises(fakeprobe.InvalidOption) as search:
        fakeprobe.make_protocol(search="exhaustive")
    assert search.value.option == "--search"
    with pytest.raises(fakeprobe.FakeprobeError):
        fakeprobe.info(tmp_path / "absent.h5")


def test_components_lists_heads_too():
    listed = fakeprobe.components()
    data = strict_json(listed.to_json())
    assert {"logreg", "svm", "xgb"} <= {h["name"] for h in data["head"]}
    assert {"yunet"} <= {d["name"] for d in data["detector"]}
