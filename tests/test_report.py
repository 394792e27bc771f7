"""The HTML report (`fakeprobe report`), rendered in headless Chromium.

Reports are built from run records made here: a synthetic cache with stored face crops, two
datasets (one trained on) and every kind of failure, compared through the library; and a small
cache of real FaceForensics++ c40 videos from ../shared/data. Chromium loads each page from disk
with no network, runs the page's own image check (``data-images-ok`` / ``data-images-broken`` on
``<body>``) and dumps the DOM, which is checked section by section; a screenshot must not be
blank. Without Chromium these tests skip, except under ``CI=true`` where they fail
(``apt-get install -y --no-install-recommends chromium`` on Debian).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_video
from typer.testing import CliRunner

from fakeprobe import app as api
from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.data import Selection
from fakeprobe.cli import app
from fakeprobe.core.config import ExtractorConfig
from fakeprobe.evaluation.plots import face_thumbnails
from fakeprobe.evaluation.report import SECTIONS, in_domain, write_report
from fakeprobe.evaluation.runs import run_record, save_run
from fakeprobe.features import cache as fcache

runner = CliRunner()
SECTION_IDS = [sid for sid, _ in SECTIONS]


# --- headless Chromium -------------------------------------------------------------------------

def chromium() -> str:
    """The Chromium executable; skips when absent, fails under CI=true."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    message = ("headless Chromium not found (Debian: apt-get install -y "
               "--no-install-recommends chromium)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: it must be there)")
    pytest.skip(message)


def _browser(page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra,
               page.resolve().as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def dump_dom(page: Path, tmp_path: Path) -> str:
    return _browser(page, tmp_path / "chrome-dom", "--dump-dom").stdout


def screenshot(page: Path, tmp_path: Path, name: str = "shot.png") -> np.ndarray:
    target = tmp_path / name
    _browser(page, tmp_path / "chrome-shot", f"--screenshot={target}", "--window-size=1280,4000")
    image = cv2.imread(str(target))
    assert image is not None, "no screenshot written"
    return image


class _Sections(HTMLParser):
    """Per ``data-section``: its text and its images; plus the ``<body>`` attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.text: dict[str, str] = {}
        self.images: dict[str, list[dict[str, str]]] = {}
        self.all_images: list[dict[str, str]] = []
        self.current: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body":
            self.body = attrs
        elif tag == "section" and "data-section" in attrs:
            self.current = attrs["data-section"]
            self.text.setdefault(self.current, "")
            self.images.setdefault(self.current, [])
        elif tag == "img":
            self.all_images.append(attrs)
            if self.current:
                self.images[self.current].append(attrs)

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current:
            self.text[self.current] += data


def parse(dom: str) -> _Sections:
    parser = _Sections()
    parser.feed(dom)
    return parser


def check_page(written, tmp_path: Path, min_images: int) -> _Sections:
    """Render the report in Chromium and check what every report must hold."""
    chromium()  # skip (or fail under CI) before any work
    source = written.html.read_text(encoding="utf-8")
    assert not re.search(r"https?:|(src|href)\s*=\s*[\"']?//|url\(", source), \
        "the report must name no URL (it has to open offline)"
    page = parse(dump_dom(written.html, tmp_path))
    assert list(page.text) == SECTION_IDS
    for sid in SECTION_IDS:
        assert len(page.text[sid].split()) > 5, f"section {sid} is empty"
    ok, broken = int(page.body["data-images-ok"]), int(page.body["data-images-broken"])
    assert broken == 0
    assert ok == len(page.all_images) == written.images >= min_images
    files = sorted(p.name for p in written.figures.glob("*.png"))
    assert sorted(img["data-file"] for img in page.all_images) == files
    markdown = written.markdown.read_text(encoding="utf-8")
    targets = re.findall(r"!\[[^]]*\]\(<?([^)>]+)>?\)", markdown)
    assert targets
    for target in targets:  # CommonMark's <...> form keeps odd characters in a name safe
        assert (written.markdown.parent / target).is_file(), target
    assert "| head | features |" in markdown and "## Provenance" in markdown
    shot = screenshot(written.html, tmp_path)
    assert shot.shape[:2] == (4000, 1280)
    assert shot.std() > 10 and (shot.min(axis=2) < 245).mean() > 0.02, "blank screenshot"
    return page


# --- a synthetic run ---------------------------------------------------------------------------

def _rows(n: int, tracks: int = 1, image: bool = False) -> fcache.FrameRows:
    frame_index = np.repeat(np.arange(n), tracks)
    return fcache.FrameRows(
        frame_index=frame_index,
        timestamp=np.full(len(frame_index), np.nan) if image else frame_index / 25.0,
        box=np.tile(np.array([4, 4, 24, 24], np.float32), (len(frame_index), 1)),
        landmarks=np.tile(np.array([[10, 12], [18, 12], [14, 16], [11, 21], [17, 21]],
                                   np.float32), (len(frame_index), 1, 1)),
        score=np.ones(len(frame_index), np.float32),
        track=np.tile(np.arange(tracks, dtype=np.int32), n),
        has_face=np.ones(len(frame_index), bool))


def make_run_cache(path: Path, crops: bool = True, seed: int = 0) -> Path:
    """Datasets ``alpha`` (6 groups: a real, an ``A`` and a ``B`` fake each, plus a real and a
    fake image), ``beta`` (3 groups, out-of-domain, weaker signal) and ``gamma`` (fakes only:
    one-class cells). Feature sets ``feat`` (6-d) and ``colour`` (3-d); 8 frames per video, one
    video with two face tracks; 32 px crops (reddish for fakes) when ``crops``. One faceless
    video and one that failed to decode."""
    rng = np.random.default_rng(seed)
    size = 32

    def stage(vid, label, group, dataset, method, shift, rows, kind="video"):
        n = len(rows)
        y = 1.0 if label == "fake" else 0.0
        feat = (rng.normal(0, 1, (n, 6)) + shift * y * np.eye(6)[0]).astype(np.float32)
        colour = (rng.normal(0, 1, (n, 3)) + 0.5 * shift * y).astype(np.float32)
        crop = None
        if crops:
            crop = np.zeros((n, size, size, 3), np.uint8)
            if kind == "video":
                crop[..., 0] = 120 + 100 * y
                crop[..., 1] = 110
                crop[..., 2] = 200 - 100 * y
                crop[:, 8:12, 8:24] = 30  # "eyes"
        record = fcache.VideoRecord(id=vid, path=f"/nonexistent/{vid}", kind=kind, label=label,
                                    group=group, dataset=dataset, method=method)
        fcache.stage(path, fcache.StagedItem(record, rows=rows,
                                             features={"feat": feat, "colour": colour},
                                             crops=crop))

    for dataset, groups, shift in (("alpha", 6, 2.5), ("beta", 3, 1.0)):
        for g in range(groups):
            group = f"{dataset}:g{g}"
            stage(f"{dataset}/g{g}/real.mp4", "real", group, dataset, "orig", shift,
                  _rows(8, tracks=2 if (dataset, g) == ("alpha", 0) else 1))
            stage(f"{dataset}/g{g}/A.mp4", "fake", group, dataset, "A", shift, _rows(8))
            stage(f"{dataset}/g{g}/B.mp4", "fake", group, dataset, "B", shift, _rows(8))
    stage("alpha/img/real.png", "real", "alpha:img", "alpha", "orig", 2.5, _rows(1, image=True),
          kind="image")
    stage("alpha/img/fake.png", "fake", "alpha:img", "alpha", "A", 2.5, _rows(1, image=True),
          kind="image")
    stage("gamma/g0/A.mp4", "fake", "gamma:g0", "gamma", "A", 2.5, _rows(8))
    faceless = _rows(8)
    faceless.has_face[:] = False
    record = fcache.VideoRecord(id="alpha/faceless.mp4", path="x", kind="video", label="real",
                                group="alpha:faceless", dataset="alpha", method="orig",
                                status="no_face")
    fcache.stage(path, fcache.StagedItem(record, rows=faceless, features={
        "feat": np.full((8, 6), np.nan, np.float32),
        "colour": np.full((8, 3), np.nan, np.float32)},
        crops=np.zeros((8, size, size, 3), np.uint8) if crops else None))
    broken = fcache.VideoRecord(id="alpha/broken.mp4", path="x", kind="video", label="fake",
                                group="alpha:broken", dataset="alpha", method="A",
                                status="decode_error", error="moov atom not found")
    fcache.stage(path, fcache.StagedItem(broken))
    config = ExtractorConfig(frames=8, keep_crops=size if crops else 0,
                             backbones=("feat", "colour"))
    fcache.commit(path, config, {"feat": {"name": "feat", "dim": 6},
                                 "colour": {"name": "colour", "dim": 3}})
    return path


def compare_record(cache: Path, heads=("logreg", "xgb"), features=(("feat",), ("colour",)),
                   train: tuple[str, ...] = ("alpha",), folds: int = 3) -> dict:
    """A run record of ``compare`` on ``cache``, trained on the ``train`` datasets."""
    protocol = api.Protocol(folds=folds, train_selection=Selection(
        datasets=train, real_any_method=True) if train else None)
    result = api.compare(cache, list(heads), [tuple(f) for f in features], protocol=protocol)
    return run_record("compare", result.reports, cache=cache, protocol=protocol,
                      selection=Selection(), aggregation=Aggregation(),
                      excluded=result.excluded, command=["fakeprobe", "compare", "test"])


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory) -> tuple[Path, dict]:
    """(cache, run record): the synthetic cache with crops, 2 heads x 2 feature sets compared
    by 3-fold grouped CV, trained on dataset ``alpha`` only."""
    folder = tmp_path_factory.mktemp("run")
    cache = make_run_cache(folder / "run.h5")
    return cache, compare_record(cache)


def _png(colour: tuple[int, int, int]) -> bytes:
    image = np.zeros((60, 90, 3), np.uint8)
    image[:] = colour
    return cv2.imencode(".png", image)[1].tobytes()


def test_report_renders_every_section_in_chromium(synthetic_run, tmp_path):
    _, record = synthetic_run
    written = write_report(record, tmp_path / "out" / "report.html", timelines=3,
                           explanations=[("explained item", _png((0, 0, 200)))])
    # 2 ROC/PR + calibration + distributions + 4 confusion + cross bars + 6 timelines + 1
    page = check_page(written, tmp_path, min_images=16)
    assert len(page.images["timelines"]) == 6
    assert len(page.images["confusion"]) == 4
    assert len(page.images["explanations"]) == 1
    assert len(page.images["cross-dataset"]) == 1
    timelines = page.text["timelines"]
    found = re.search(r"(\d+) of (\d+) faces: (\d+) stored crops", timelines)
    assert found and int(found.group(1)) == int(found.group(2)) == int(found.group(3)) > 0
    cross = page.text["cross-dataset"]
    assert "in-domain" in cross and "out-of-domain" in cross and "n/a" in cross  # gamma: fakes
    failures = page.text["failures"]
    assert "decode_error" in failures and "moov atom not found" in failures
    assert "alpha/faceless.mp4" in failures
    metrics = page.text["metrics"]
    for name in ("ROC-AUC", "PR-AUC", "log loss", "EER", "bal. acc.", "FPR", "FNR",
                 "fit s", "peak MiB", "TN / FP"):
        assert name in metrics
    for name in ("fakeprobe compare test", "Extractor config", "Environment", "numpy"):
        assert name in page.text["provenance"]
    assert "explained item" in page.text["explanations"]


def test_best_values_are_marked_per_column(synthetic_run, tmp_path):
    _, record = synthetic_run
    written = write_report(record, tmp_path / "r.html", timelines=0)
    source = written.html.read_text(encoding="utf-8")
    video_table = source.split("<h3>Video level")[1].split("</table>")[0]
    rows = re.findall(r"<tr><td class=l>.*?</tr>", video_table)
    assert len(rows) == 4
    cells = [re.findall(r"<td( class=best)?>([^<]*)", row) for row in rows]

    def column(k):  # after head, features: n, then the metrics in order
        return [(bool(c[k][0]), c[k][1]) for c in cells]

    auc = column(1)  # ROC-AUC
    best_auc = max(float(v) for _, v in auc)
    assert [m for m, v in auc] == [float(v) == best_auc for _, v in auc]
    log_loss = column(3)  # lower is better
    lowest = min(float(v) for _, v in log_loss)
    assert [m for m, v in log_loss] == [float(v) == lowest for _, v in log_loss]
    assert "Timelines were turned off" in source


def test_in_domain_follows_the_train_selection():
    datasets = ["FaceForensics++ c40", "FaceForensics++ c23", "DFDC"]
    record = {"protocol": {"train_selection": {"datasets": ["FaceForensics++ c4*"]}}}
    assert in_domain(record, datasets) == {"FaceForensics++ c40": True,
                                           "FaceForensics++ c23": False, "DFDC": False}
    assert all(in_domain({"protocol": {"train_selection": None}}, datasets).values())
    assert all(in_domain({}, datasets).values())
    cross = {"protocol": {"eval_cache": "other.h5"}, "cache": {"by_dataset": {"DFDC": 3}}}
    assert in_domain(cross, datasets) == {"FaceForensics++ c40": False,
                                          "FaceForensics++ c23": False, "DFDC": True}


def test_a_single_report_with_no_cache_left_still_renders(synthetic_run, tmp_path):
    _, record = synthetic_run
    record = json.loads(json.dumps(record))
    record["reports"] = record["reports"][:1]
    record["cache"]["path"] = str(tmp_path / "gone.h5")
    record["excluded"], record["cache"]["failures"] = [], []
    written = write_report(record, tmp_path / "single.html", timelines=2)
    page = check_page(written, tmp_path, min_images=4 + 1 + 1 + 4)
    assert "none could be made" in page.text["timelines"] and "not found" in page.text[
        "timelines"]
    assert "No failure" in page.text["failures"]
    assert "fakeprobe explain MODEL CACHE" in page.text["explanations"]


def test_thumbnails_are_realigned_from_the_media_without_stored_crops(tmp_path):
    """No crops in the cache: faces come from the videos re-read at the cached frames."""
    media = write_video(tmp_path / "v.mp4", n_frames=12, size=(96, 72))
    n = 4
    frame_index = np.array([0, 3, 6, 9])
    box = np.array([[5 + i, 10, 16, 20] for i in frame_index], np.float32)
    unit = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    marks = np.stack([unit * b[2:] + b[:2] for b in box]).astype(np.float32)
    rows = fcache.FrameRows(frame_index=frame_index, timestamp=frame_index / 25.0, box=box,
                            landmarks=marks, score=np.ones(n, np.float32),
                            track=np.zeros(n, np.int32), has_face=np.ones(n, bool))
    cache = tmp_path / "c.h5"
    record = fcache.VideoRecord(id="v", path=str(media), kind="video", label="fake", group="v")
    fcache.stage(cache, fcache.StagedItem(record, rows=rows,
                                          features={"f": np.zeros((n, 2), np.float32)}))
    fcache.commit(cache, ExtractorConfig(frames=4, backbones=("f",)), {"f": {"dim": 2}})
    found, source = face_thumbnails({"cache": {"path": str(cache)}},
                                    {"v": [(3, 0), (9, 0)], "unknown": [(0, 0)]}, 48)
    assert set(found) == {"v"} and set(found["v"]) == {(3, 0), (9, 0)}
    for crop in found["v"].values():
        assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
        assert crop[14:34, 14:34].mean() > 200  # the bright blob "face" is in the middle
        assert crop.mean() < 200  # with the dark frame around it (the crop's margin)
    assert "2 re-aligned" in source and "0 stored" in source


def test_report_command(synthetic_run, tmp_path):
    cache, record = synthetic_run
    run = save_run(tmp_path / "run.json", record)
    result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "r" / "x.html"),
                                 "--timelines", "1", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert Path(data["html"]).is_file() and Path(data["markdown"]).is_file()
    assert data["images"] == len(list(Path(data["figures"]).glob("*.png"))) >= 10
    plain = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "y.html"),
                                "--timelines", "0"])
    assert plain.exit_code == 0 and "report written to" in plain.output
    model = tmp_path / "m.fpm"
    api.fit(cache, "logreg", model, features=["feat"], protocol=api.Protocol(folds=3))
    from_model = runner.invoke(app, ["report", str(model), "--out", str(tmp_path / "m.html"),
                                     "--timelines", "1"])
    assert from_model.exit_code == 0, from_model.output
    assert (tmp_path / "m.html").is_file()


@pytest.mark.parametrize("content, message", [
    ("not json at all", "not JSON"),
    ('{"format": "something else"}', "not a fakeprobe run record"),
])
def test_report_command_rejects_bad_input_in_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = runner.invoke(app, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.html").exists()


def test_report_command_rejects_a_file_that_is_no_model(tmp_path):
    bad = tmp_path / "x.fpm"
    bad.write_bytes(b"\x00garbage")
    result = runner.invoke(app, ["report", str(bad), "--out", str(tmp_path / "x.html")])
    assert result.exit_code == 1 and "not a fakeprobe model file" in result.output


# --- real FaceForensics++ c40 videos ----------------------------------------------------------

#: Groups of ../shared/data/manifest.csv: their first original and one fake each.
FFPP_GROUPS = {"ffpp:183-253": "Deepfakes", "ffpp:469-481": "FaceSwap",
               "ffpp:585-599": "Face2Face", "ffpp:672-720": "NeuralTextures",
               "ffpp:866-878": "Deepfakes"}


@pytest.fixture(scope="module")
def ffpp_c40_cache(shared_data, tmp_path_factory) -> Path:
    """Ten FaceForensics++ c40 videos of ../shared/data (five groups, an original and a fake of
    a different method each), 6 frames, YuNet faces, the spectrum feature set, 64 px crops
    kept. About 15 s on two cores."""
    with open(shared_data / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["dataset"] == "FaceForensics++ c40"]
    folder = tmp_path_factory.mktemp("ffpp")
    manifest = folder / "list.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "dataset", "method"])
        for group, method in FFPP_GROUPS.items():
            real = next(r for r in rows if r["group"] == group and r["label"] == "real")
            fake = next(r for r in rows if r["group"] == group and r["method"] == method)
            for r in (real, fake):
                writer.writerow([shared_data / r["path"], r["label"], group, r["dataset"],
                                 r["method"]])
    from fakeprobe.pipeline.run import extract

    cache = folder / "ffpp.h5"
    summary = extract([manifest], cache, ExtractorConfig(frames=6, keep_crops=64,
                                                         backbones=("spectrum",)))
    assert summary.extracted == 10 and summary.failed == 0
    return cache


@pytest.mark.shared_data
def test_report_of_real_ffpp_videos(ffpp_c40_cache, tmp_path):
    record = compare_record(ffpp_c40_cache, heads=("logreg", "xgb"),
                            features=(("spectrum",),), train=(), folds=5)
    assert {r["video"]["n"] for r in record["reports"]} == {10}
    written = write_report(record, tmp_path / "ffpp.html", timelines=2)
    # 2 ROC/PR + calibration + distributions + 2 confusion + 4 timelines (no cross bars: one
    # dataset)
    page = check_page(written, tmp_path, min_images=10)
    assert len(page.images["timelines"]) == 4
    found = re.search(r"(\d+) of (\d+) faces: (\d+) stored crops", page.text["timelines"])
    assert found and int(found.group(1)) == int(found.group(2)) == int(found.group(3)) > 0
    cross = page.text["cross-dataset"]
    assert "single dataset" in cross
    for method in FFPP_GROUPS.values():
        assert method in cross
    assert "FaceForensics++ c40" in page.text["provenance"]


def test_timelines_draw_the_series_the_run_smoothed():
    """A run that smoothed before aggregating shows that smoothed series (values worked out by
    hand from the record's settings, or the aggregation defaults: window 5, alpha 0.3); one
    that did not, the raw frame scores only."""
    from fakeprobe.evaluation import plots
    from fakeprobe.evaluation.report_figures import _smoothed

    scores = np.array([0.1, 0.9, 0.1, 0.9, 0.1])
    assert _smoothed(scores, {"aggregation": {"smoothing": "none"}}) is None
    assert _smoothed(scores, {}) is None
    moving = _smoothed(scores, {"aggregation": {"smoothing": "moving", "window": 3}})
    # centred mean of 3, shrinking at the ends: (.1+.9)/2, (.1+.9+.1)/3, (.9+.1+.9)/3, ...
    np.testing.assert_allclose(moving, [0.5, 1.1 / 3, 1.9 / 3, 1.1 / 3, 0.5])
    np.testing.assert_allclose(  # window 5 when the record names none
        _smoothed(scores, {"aggregation": {"smoothing": "moving"}}),
        [1.1 / 3, 2.0 / 4, 2.1 / 5, 2.0 / 4, 1.1 / 3])
    # s_t = alpha p_t + (1 - alpha) s_{t-1}, s_0 = p_0
    np.testing.assert_allclose(
        _smoothed(scores, {"aggregation": {"smoothing": "exponential", "alpha": 0.5}}),
        [0.1, 0.5, 0.3, 0.6, 0.35])
    np.testing.assert_allclose(  # alpha 0.3 when the record names none
        _smoothed(scores, {"aggregation": {"smoothing": "exponential"}}),
        [0.1, 0.34, 0.268, 0.4576, 0.35032])
    info = {"id": "v", "label": "fake", "score": 0.5, "threshold": 0.4}
    x = np.arange(5, dtype=float)
    pngs = [plots.timeline(info, {0: (x, scores, smoothed)}, "frame index", 0.4, [])
            for smoothed in (None, moving)]
    assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in pngs)
    assert pngs[0] != pngs[1]  # the smoothed line is drawn
