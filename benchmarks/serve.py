"""``fakeprobe serve`` under load: the latency of one FF++ c40 video through the REST API once
the server is warm, beside the extraction of the same video alone, and the throughput with 1, 2
and 4 clients sending videos at once.

1. **Extraction alone**: in this process, a :class:`fakeprobe.app.Predictor` of the
   bundled detector is warmed up (networks built, one blank batch run), then its extractor runs
   on the video ``--repeats`` times into fresh caches; the median wall time is the floor any
   server could reach (decode, detect, align, embed, commit).
2. **Latency through the API**: ``fakeprobe serve`` is started as a user starts it (a separate
   process, the default options, ``--device cpu``), one request warms it, then the same video is
   uploaded ``--repeats`` times one after the other; latency is the client's wall time from the
   upload's first byte to the answer of ``GET /api/jobs/ID?wait=60``.
3. **Throughput**: ``--clients`` threads (1, 2, 4) share the FF++ c40 videos, each uploading its
   next video when the previous one is answered; videos per second over the whole set.

The load on the machine (other processes' CPU share, load average) is recorded beside the
numbers: on a shared machine they are slower than on an idle one.

```bash
python benchmarks/serve.py                                   # ../shared/data, 5 repeats
python benchmarks/serve.py --json-out r.json --markdown r.md
```
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _output import emit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
FFPP_C40 = Path("ffpp/original_sequences/youtube/c40/videos")
#: The target for one warm video through the API on 2 cores.
LATENCY_TARGET_S = 2.0


class Load:
    """CPU used by other processes while a block runs, in cores (psutil's system times minus
    this process tree's own), and the 1-minute load average at its end."""

    def __enter__(self):
        import psutil

        self._psutil = psutil
        self.t0 = time.perf_counter()
        self.sys0 = sum(psutil.cpu_times()[:3])  # user, nice, system
        self.own0 = self._own()
        return self

    def _own(self) -> float:
        me = self._psutil.Process()
        total = 0.0
        for process in [me, *me.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except self._psutil.Error:
                pass
        return total

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.t0
        used = sum(self._psutil.cpu_times()[:3]) - self.sys0
        self.own_cores = (self._own() - self.own0) / wall
        self.others_cores = max(0.0, used / wall - self.own_cores)
        self.load1 = os.getloadavg()[0]

    def to_dict(self) -> dict:
        return {"others_cores": round(self.others_cores, 2), "own_cores": round(self.own_cores, 2),
                "load1": round(self.load1, 2)}


def extraction_alone(video: Path, repeats: int) -> dict:
    from fakeprobe.app import Predictor

    predictor = Predictor(None, device="cpu")
    t0 = time.perf_counter()
    predictor.warm_up()
    warm_up = time.perf_counter() - t0
    seconds, predict_seconds = [], []
    with Load() as load, tempfile.TemporaryDirectory() as tmp:
        for k in range(repeats):
            t0 = time.perf_counter()
            summary = predictor.extractor.run([video], Path(tmp) / f"{k}.h5")
            seconds.append(time.perf_counter() - t0)
            assert summary.extracted == 1, summary
        for k in range(repeats):  # the whole library call: extraction + scoring
            t0 = time.perf_counter()
            predictor.predict([video])
            predict_seconds.append(time.perf_counter() - t0)
    return {"warm_up_s": warm_up, "extract_s": seconds, "extract_median_s":
            statistics.median(seconds), "predict_s": predict_seconds,
            "predict_median_s": statistics.median(predict_seconds), "load": load.to_dict()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def score(client, base: str, video: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    with open(video, "rb") as handle:
        response = client.post(f"{base}/api/jobs", files={"file": (video.name, handle)})
    while response.status_code == 503:  # queue full: try again as the page does
        time.sleep(0.2)
        with open(video, "rb") as handle:
            response = client.post(f"{base}/api/jobs", files={"file": (video.name, handle)})
    response.raise_for_status()
    job = response.json()
    while job["state"] in ("queued", "running"):
        job = client.get(f"{base}/api/jobs/{job['id']}", params={"wait": 60}).json()
    if job["state"] != "done":
        raise SystemExit(f"{video}: {job['error']}")
    return time.perf_counter() - t0, job


def through_api(video: Path, videos: list[Path], repeats: int, clients: list[int]) -> dict:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    exe = Path(sys.executable).with_name("fakeprobe")
    command = ([str(exe)] if exe.exists() else
               [sys.executable, "-c", "from fakeprobe.cli import main; main()"])
    t0 = time.perf_counter()
    server = subprocess.Popen([*command, "serve", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict = {}
    try:
        with httpx.Client(timeout=120) as client:
            while True:
                if server.poll() is not None:
                    raise SystemExit("fakeprobe serve exited at start-up")
                try:
                    if client.get(f"{base}/api/health").json()["status"] == "ok":
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.2)
            out["start_up_s"] = time.perf_counter() - t0
            first, _ = score(client, base, video)  # the first request after start-up
            out["first_request_s"] = first
            latencies, server_seconds = [], []
            with Load() as load:
                for _ in range(repeats):
                    seconds, job = score(client, base, video)
                    latencies.append(seconds)
                    server_seconds.append(job["result"]["seconds"])
            out.update(latency_s=latencies, latency_median_s=statistics.median(latencies),
                       latency_min_s=min(latencies), server_predict_s=server_seconds,
                       latency_load=load.to_dict(),
                       score=job["result"]["predictions"][0]["score"])
        out["throughput"] = []
        for n in clients:
            pending = list(videos)
            lock = threading.Lock()

            def client_loop() -> None:
                with httpx.Client(timeout=120) as own:
                    while True:
                        with lock:
                            if not pending:
                                return
                            item = pending.pop()
                        score(own, base, item)

            with Load() as load:
                t0 = time.perf_counter()
                threads = [threading.Thread(target=client_loop) for _ in range(n)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                wall = time.perf_counter() - t0
            out["throughput"].append({"clients": n, "videos": len(videos), "seconds": wall,
                                      "videos_per_s": len(videos) / wall,
                                      "load": load.to_dict()})
    finally:
        server.terminate()
        server.wait(30)
    return out


def markdown(result: dict) -> str:
    alone, api = result["extraction_alone"], result["api"]
    machine = result["environment"]
    lines = [f"One FF++ c40 video ({result['video']}), bundled detector, CPU, "
             f"{machine['cores']} cores ({machine['cpu']}). The machine was shared: other "
             "processes used the cores shown beside each number.", "",
             "| measure | seconds | others' cores |", "|---|---|---|",
             f"| extraction alone (warm extractor, median of {len(alone['extract_s'])}) | "
             f"{alone['extract_median_s']:.2f} | {alone['load']['others_cores']:.2f} |",
             f"| `Predictor.predict` alone (extraction + scoring, median) | "
             f"{alone['predict_median_s']:.2f} | {alone['load']['others_cores']:.2f} |",
             f"| through the API, warm (upload to answer, median of {len(api['latency_s'])}) | "
             f"{api['latency_median_s']:.2f} (min {api['latency_min_s']:.2f}; target < "
             f"{LATENCY_TARGET_S:g}) | {api['latency_load']['others_cores']:.2f} |",
             f"| first request after start-up | {api['first_request_s']:.2f} | - |",
             f"| server start-up (models loaded, networks warmed) | {api['start_up_s']:.2f} | - |",
             "", "| clients | videos | seconds | videos/s | others' cores |", "|---|---|---|---|---|"]
    for row in api["throughput"]:
        lines.append(f"| {row['clients']} | {row['videos']} | {row['seconds']:.1f} | "
                     f"{row['videos_per_s']:.2f} | {row['load']['others_cores']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    videos = sorted((args.data / FFPP_C40).glob("*.mp4"))
    if not videos:
        raise SystemExit(f"{args.data / FFPP_C40}: no FF++ c40 video")
    video = videos[0]
    from fakeprobe.core.provenance import environment

    from importlib.metadata import version

    result = {"benchmark": "serve", "video": video.name, "videos": len(videos),
              "environment": environment()}
    result["environment"]["versions"].update(
        {name: version(name) for name in ("fastapi", "uvicorn", "starlette")})
    result["extraction_alone"] = extraction_alone(video, args.repeats)
    result["api"] = through_api(video, videos, args.repeats, args.clients)
    result["latency_target_s"] = LATENCY_TARGET_S
    emit(result, markdown(result), args.json_out, args.markdown)


if __name__ == "__main__":
    main()
