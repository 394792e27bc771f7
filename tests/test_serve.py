"""`fakeprobe serve`: the REST API through FastAPI's TestClient, and the page in headless
Chromium against a real server.

The API tests score clips of the offline sample (``fakeprobe.synth.sample``: real faces, no data
set needed) with the bundled detector, loaded once for the module: every kind of bad upload gets
its 4xx and leaves no file behind; a token is required on every request when set; 20 uploads
sent at once all complete, with the scores `predict` gives, while the queue never holds more
than its bound. The page test starts `fakeprobe serve` for real, drops a DFDC video of
../shared/data on the page in Chromium (driven by Playwright) and checks what it shows; it skips
without Chromium, Playwright or the data, and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_video
from typer.testing import CliRunner

from fakeprobe.app import Predictor, predict
from fakeprobe.cli import app as cli_app
from fakeprobe.errors import FakeprobeError
from fakeprobe.weights import bundled_model_path

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from fakeprobe.serve import ServeConfig, check_host, create_app, load_predictors  # noqa: E402

#: Scores of one clip through the server and through `predict` may differ by float rounding
#: when the server embeds several uploads in one batch.
SCORE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    """Four 0.6 s clips of the offline sample (two real faces, two self-blended)."""
    from fakeprobe.synth.sample import make_sample

    root = tmp_path_factory.mktemp("sample")
    make_sample(root, clips_per_photo=1, holdout_per_photo=0, seconds=0.6)
    found = sorted((root / "train").glob("*/*.mp4"))
    assert len(found) == 4
    return found


@pytest.fixture(scope="module")
def predictors():
    """The bundled detector, loaded and warmed once for every app of this module."""
    loaded = load_predictors(ServeConfig(device="cpu"))
    for predictor in loaded.values():
        predictor.warm_up()
    return loaded


@pytest.fixture(scope="module")
def reference_result(clips):
    """`predict` of the clips: what the server must answer."""
    return predict(None, clips, device="cpu")


@pytest.fixture(scope="module")
def reference(reference_result):
    """`predict`'s prediction of each clip, by file name."""
    return {Path(p.path).name: p for p in reference_result.predictions}


def make_client(predictors, tmp_path, **options) -> TestClient:
    config = ServeConfig(device="cpu", warm=False, work_dir=tmp_path, **options)
    return TestClient(create_app(config, predictors=predictors))


def upload(client, data: bytes, name: str = "clip.mp4", **fields):
    return client.post("/api/jobs", files={"file": (name, data)}, data=fields)


def leftovers(client) -> list[Path]:
    return sorted(client.app.state.uploads.iterdir())


# --- bad uploads -----------------------------------------------------------------------------

def test_every_bad_upload_gets_its_4xx_and_leaves_nothing(predictors, clips, tmp_path):
    clip = clips[0].read_bytes()
    jpeg = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
    cases = [
        ("empty", b"", "clip.mp4", 400, "empty"),
        ("text", b"just some words\n" * 20, "clip.mp4", 415, "not a video or an image"),
        ("model file named .mp4", bundled_model_path().read_bytes()[:200_000], "clip.mp4",
         415, "not a video or an image"),
        ("truncated video", clip[: len(clip) // 2], "clip.mp4", 422, "does not decode"),
        ("truncated image", jpeg[: len(jpeg) // 2], "photo.jpg", 422, "truncated"),
        ("too large", clip + b"\0" * 600_000, "clip.mp4", 413, "over the limit"),
    ]
    with make_client(predictors, tmp_path, max_upload_mb=0.5) as client:
        for what, data, name, status, words in cases:
            response = upload(client, data, name)
            assert response.status_code == status, (what, response.text)
            body = response.json()
            assert body["status"] == status and words in body["error"], (what, body)
        # not multipart, no file field, two files, an unknown model
        assert client.post("/api/jobs", content=clip).status_code == 400
        assert client.post("/api/jobs", data={"model": "x"}).status_code == 400  # urlencoded
        wrong_field = client.post("/api/jobs", files={"video": ("a.mp4", clip)})
        assert wrong_field.status_code == 400 and wrong_field.json()["error"].startswith("no file")
        two = client.post("/api/jobs", files=[("file", ("a.mp4", clip)), ("file", ("b.mp4", clip))])
        assert two.status_code == 400 and "one file" in two.json()["error"]
        unknown = upload(client, clip, model="/etc/passwd")
        assert unknown.status_code == 400 and "unknown model" in unknown.json()["error"]
        assert leftovers(client) == []
        # the content decides, not the name: a video called .txt is accepted
        accepted = upload(client, clip, "notes.txt")
        assert accepted.status_code == 202, accepted.text
        job = client.get(f"/api/jobs/{accepted.json()['id']}?wait=60").json()
        assert job["state"] == "done" and job["kind"] == "video", job["error"]
        assert leftovers(client) == []
    with make_client(predictors, tmp_path, max_video_frames=5) as client:
        response = upload(client, clip)
        assert response.status_code == 413 and "frames, over the limit of 5" in response.text
        assert leftovers(client) == []


# --- the token -------------------------------------------------------------------------------

def test_a_token_is_required_on_every_request_when_set(predictors, tmp_path):
    with make_client(predictors, tmp_path, token="s3cret-token") as client:
        for path in ("/", "/static/app.js", "/api/health", "/api/models", "/openapi.json",
                     "/docs", "/api/jobs/abc"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post("/api/jobs", files={"file": ("a.mp4", b"x")}).status_code == 401
        assert client.get("/api/health?token=s3cret-tokenX").status_code == 401
        good = [{"headers": {"Authorization": "Bearer s3cret-token"}},
                {"headers": {"X-Fakeprobe-Token": "s3cret-token"}}]
        for options in good:
            assert client.get("/api/health", **options).status_code == 200
        assert client.get("/api/health?token=s3cret-token").status_code == 200
        assert client.get("/?token=s3cret-token").status_code == 200


def test_listening_beyond_localhost_needs_a_token(monkeypatch):
    for host in ("127.0.0.1", "localhost", "::1"):
        check_host(host, None)
    check_host("0.0.0.0", "t")
    with pytest.raises(FakeprobeError, match="--token"):
        check_host("0.0.0.0", None)
    monkeypatch.delenv("FAKEPROBE_TOKEN", raising=False)
    result = CliRunner().invoke(cli_app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "FAKEPROBE_TOKEN" in result.output


# --- results ---------------------------------------------------------------------------------

def test_a_job_gives_predicts_json_thumbnails_downloads_and_a_heatmap(
        predictors, clips, reference, reference_result, tmp_path):
    with make_client(predictors, tmp_path) as client:
        created = upload(client, clips[0].read_bytes(), "my clip=1.mp4")
        assert created.status_code == 202 and created.headers["location"].endswith(
            created.json()["id"])
        job = client.get(f"/api/jobs/{created.json()['id']}?wait=60").json()
        assert job["state"] == "done", job
        assert leftovers(client) == []
        result = job["result"]
        expected_json = reference_result.to_dict()  # the same JSON as `predict --json`
        item = result["predictions"][0]
        assert set(result) == set(expected_json)
        assert set(item) == set(expected_json["predictions"][0])
        assert result["threshold"] == expected_json["threshold"]
        assert result["bundled"] and "/" not in result["model"]  # no server path
        expected = reference[clips[0].name]
        assert item["id"] == item["path"] == "my clip=1.mp4"
        assert abs(item["score"] - expected.score) < SCORE_TOLERANCE
        assert item["label"] == expected.label and item["frames_used"] == expected.frames_used
        assert [p["frame"] for p in item["timeline"]] == [p["frame"] for p in expected.timeline]
        extras = job["extras"]
        assert len(extras["smoothed"]) == len(item["timeline"])
        assert extras["smoothing"]["method"] == predictors[result["model"]].model.aggregation.smoothing
        side = predictors[result["model"]].config.keep_crops  # covers the model's crops
        thumbs = extras["thumbnails"]
        assert len(thumbs) == 4
        assert [t["score"] for t in thumbs] == sorted((p["score"] for p in item["timeline"]),
                                                      reverse=True)[:4]
        for thumb in thumbs:
            png = client.get(thumb["url"])
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
            assert cv2.imdecode(np.frombuffer(png.content, np.uint8), 1).shape[:2] == (side, side)
        download = client.get(extras["json_url"])
        assert download.json()["predictions"][0]["score"] == item["score"]
        assert "attachment" in download.headers["content-disposition"]
        rows = client.get(extras["csv_url"]).text.splitlines()
        assert rows[0].startswith("item,status,fake_probability")
        assert len(rows) == 1 + item["frames_used"] and rows[1].startswith("my clip=1.mp4,ok,")
        heatmap = client.get(extras["heatmap_url"])
        assert heatmap.status_code == 200 and heatmap.content.startswith(b"\x89PNG")
        # forgetting a job removes what it kept
        runs = client.app.state.root / "runs"
        assert any(runs.iterdir())
        assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
        assert client.get(f"/api/jobs/{job['id']}").status_code == 404
        assert not any(runs.iterdir())
        assert client.get("/api/jobs/nope").json() == {
            "error": "no job 'nope' (unknown, deleted or expired)", "status": 404}


def test_no_face_and_images_are_answered_in_plain_words(predictors, clips, tmp_path):
    capture = cv2.VideoCapture(str(clips[0]))
    ok, frame = capture.read()
    capture.release()
    assert ok
    photo = cv2.imencode(".png", frame)[1].tobytes()
    faceless = write_video(tmp_path / "noise.mp4", n_frames=8, size=(160, 120), blobs=0)
    with make_client(predictors, tmp_path) as client:
        ids = [upload(client, photo, "still.png").json()["id"],
               upload(client, faceless.read_bytes(), "noise.mp4").json()["id"]]
        still, noise = (client.get(f"/api/jobs/{i}?wait=60").json() for i in ids)
    assert still["kind"] == "image" and still["result"]["predictions"][0]["frames_used"] == 1
    assert still["result"]["predictions"][0]["score"] is not None
    item = noise["result"]["predictions"][0]
    assert (item["status"], item["score"], item["error"]) == (
        "no_face", None, "no face in any sampled frame")
    assert noise["extras"]["thumbnails"] == [] and noise["extras"]["heatmap_url"] is None


def test_twenty_concurrent_uploads_complete_with_predicts_scores(predictors, clips, reference,
                                                                 tmp_path):
    """The worker is held busy until some uploads have been refused (503), so the queue's
    bound is met for sure; refused clients try again, as the page does."""
    bound = 4
    names = [clips[k % len(clips)] for k in range(20)]
    answers: dict[int, dict] = {}
    refused = []
    with make_client(predictors, tmp_path, max_queued=bound, batch_size=4) as client:
        queue = client.app.state.queue

        def one(k: int) -> None:
            data = names[k].read_bytes()
            while True:
                response = upload(client, data, names[k].name)
                if response.status_code != 503:
                    break
                assert "queue is full" in response.json()["error"]
                assert response.headers["retry-after"]
                refused.append(k)
                time.sleep(0.2)
            assert response.status_code == 202, response.text
            answers[k] = client.get(f"/api/jobs/{response.json()['id']}?wait=60").json()
            while answers[k]["state"] in ("queued", "running"):
                answers[k] = client.get(f"/api/jobs/{response.json()['id']}?wait=60").json()

        files_on_disk = [0]
        watching = threading.Event()

        def watch() -> None:  # uploads held on disk: queued, arriving, or being scored
            while not watching.is_set():
                files_on_disk[0] = max(files_on_disk[0], len(leftovers(client)))
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        with queue._compute:  # the worker cannot score until some uploads were refused
            threads = [threading.Thread(target=one, args=(k,)) for k in range(20)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 60
            while not refused and time.monotonic() < deadline:
                time.sleep(0.05)
        for thread in threads:
            thread.join(300)
        watching.set()
        watcher.join()
        assert refused, "no upload was refused while the worker was held"
        assert queue.peak_queued <= bound
        assert 0 < files_on_disk[0] <= bound + 4  # waiting or arriving, plus one batch
        assert len(answers) == 20 and queue.completed == 20
        for k, job in answers.items():
            assert job["state"] == "done", job
            item = job["result"]["predictions"][0]
            expected = reference[names[k].name]
            assert abs(item["score"] - expected.score) < SCORE_TOLERANCE, (names[k], item)
            assert item["label"] == expected.label
        assert leftovers(client) == []


def test_a_predictor_reuses_its_networks_and_gives_predicts_results(clips, reference):
    predictor = Predictor(None, device="cpu")
    first = predictor.predict(clips[:2])
    backbones = dict(predictor.extractor.backbones)
    second = predictor.predict(clips[:2])
    assert predictor.extractor.backbones == backbones  # the same objects: built once
    for result in (first, second):
        for p in result.predictions:
            assert abs(p.score - reference[Path(p.path).name].score) < SCORE_TOLERANCE


# --- the page in a real browser --------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _required(what: str):
    message = f"{what} not found"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " (CI=true: it must be there)")
    pytest.skip(message)


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_page_scores_a_dropped_dfdc_video_in_chromium(shared_data, tmp_path):
    from test_report import chromium

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _required("playwright (pip install playwright)")
    browser_path = chromium()
    video = shared_data / "dfdc" / "train_sample_videos" / "abofeumbvv.mp4"
    assert video.is_file(), video
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from fakeprobe.cli import main; main()", "serve", "--port",
         str(port), "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/api/health", timeout=2).json()["status"] == "ok":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.5)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1366, "height": 900})
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(base + "/")
            page.wait_for_selector("#model option", state="attached")
            page.set_input_files("#chooser", str(video))
            page.wait_for_selector(".item .result:not([hidden])", timeout=180_000)
            probability = page.inner_text(".item .probability .value")
            assert probability.endswith("%") and 0 <= float(probability[:-1]) <= 100
            assert page.inner_text(".item .label") in ("fake", "real")
            assert page.locator(".item svg.timeline circle").count() >= 8
            assert page.locator(".item svg.timeline path.smooth").count() >= 1
            page.wait_for_function(
                "() => [...document.querySelectorAll('.item .thumbnails img')]"
                ".filter(i => i.complete && i.naturalWidth > 0).length >= 4")
            page.click(".item .heatmap-button")
            page.wait_for_selector(".item .heatmap:not([hidden])", timeout=120_000)
            assert "abofeumbvv.mp4" in page.inner_text("#history")
            page.screenshot(path=str(tmp_path / "serve-page.png"), full_page=True)
            browser.close()
        assert all(url.startswith(base) for url in requests), "a request left the server"
        shot = cv2.imread(str(tmp_path / "serve-page.png"))
        assert shot is not None and shot.std() > 10
    finally:
        server.terminate()
        server.wait(30)
