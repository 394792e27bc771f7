"""The offline sample: a small labelled video set fakeprobe can make on any machine.

No data set is needed. Real clips are filmed by a virtual camera moving over face photos that
ship inside installed packages (matplotlib's portrait of Grace Hopper; scikit-image's astronaut
photo when scikit-image is installed): the camera pans, zooms and tilts, the light and colour
drift, sensor noise is added, and every frame goes through JPEG and then H.264 compression. The
fakes are self-blended pseudo-fakes of those same clips (:mod:`fakeprobe.synth.blend`), made
from the same in-memory frames and written through the same encoder, so reals and fakes differ
by the blend only, not by an extra generation of compression.

What it is: a smoke test of the whole pipeline (extract, compare, report, predict) with labels,
groups and the self-blending code path, in a few minutes on 2 cores. What it is not: deepfakes,
or a measure of detection quality. Two identities, synthetic camera motion; a score on it says
whether a head can find self-blends of these two faces, nothing about real manipulations.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.errors import FakeprobeError
from fakeprobe.synth.blend import BlendConfig
from fakeprobe.fileio import atomic_path
from fakeprobe.synth.media import (_largest, _VideoSink, blend_faces, item_params,
                                   write_manifest)

#: Dataset name of the sample's items.
SAMPLE_DATASET = "fakeprobe-sample"
#: Method of the sample's real clips.
CAMERA_METHOD = "virtual_camera"
#: Frame size of the clips (width, height) and their rate.
FRAME_SIZE = (480, 360)
FPS = 15.0
#: Clip length, seconds.
SECONDS = 2.0


@dataclass(frozen=True)
class Photo:
    name: str
    package: str  # the distribution that ships it
    relative: str  # path inside the package's import folder


#: Face photos known to ship inside wheels fakeprobe installs (public-domain portraits).
PHOTOS = (
    Photo("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    Photo("astronaut", "skimage", "data/astronaut.png"),
)


def find_photos() -> list[tuple[Photo, Path]]:
    """The photos of :data:`PHOTOS` whose package is installed (found without importing it)."""
    found = []
    for photo in PHOTOS:
        spec = importlib.util.find_spec(photo.package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / photo.relative
        if path.is_file():
            found.append((photo, path))
    return found


@dataclass(frozen=True)
class Camera:
    """One clip's camera path and look, drawn from a seed around the photo's face: start and
    end framing (face height as a share of the frame height, and the face centre's offset from
    the frame centre, in face heights) and tilt, linearly interpolated over the clip; exposure
    drift, colour cast, noise, blur and JPEG quality."""

    face_share: tuple[float, float]
    offset: tuple[tuple[float, float], tuple[float, float]]  # start, end
    tilt: tuple[float, float]  # degrees
    gain: tuple[float, float]
    cast: tuple[float, float, float]  # per-channel (B, G, R) factors
    noise: float  # sigma, 0..255 scale
    blur: float  # Gaussian sigma, pixels
    jpeg: int

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Camera":
        u = rng.uniform
        return cls(face_share=(u(0.3, 0.55), u(0.3, 0.55)),
                   offset=((u(-0.4, 0.4), u(0.0, 0.35)), (u(-0.4, 0.4), u(0.0, 0.35))),
                   tilt=(u(-6, 6), u(-6, 6)), gain=(u(0.75, 1.2), u(0.75, 1.2)),
                   cast=(u(0.9, 1.1), u(0.95, 1.05), u(0.9, 1.1)), noise=u(1.0, 5.0),
                   blur=u(0.0, 1.2), jpeg=int(rng.integers(55, 91)))


def film(photo: np.ndarray, face_box: tuple[float, float, float, float], camera: Camera,
         n_frames: int, size: tuple[int, int], rng: np.random.Generator) -> list[np.ndarray]:
    """The frames of one clip of ``photo`` (BGR) through ``camera``, framed on ``face_box``
    (x, y, w, h in photo pixels)."""
    width, height = size
    fx, fy, fw, fh = face_box
    face_centre = np.array([fx + fw / 2, fy + fh / 2])
    frames = []
    for k in range(n_frames):
        t = k / max(n_frames - 1, 1)

        def lerp(a: float, b: float, t: float = t) -> float:
            return a + (b - a) * t

        scale = lerp(*camera.face_share) * height / fh  # frame pixels per photo pixel
        offset = np.array([lerp(camera.offset[0][0], camera.offset[1][0]),
                           lerp(camera.offset[0][1], camera.offset[1][1])]) * fh
        cx, cy = face_centre + offset
        matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), lerp(*camera.tilt), scale)
        matrix[:, 2] += np.array([width / 2 - cx, height / 2 - cy])
        frame = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_AREA,
                               borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
        frame *= lerp(*camera.gain) * np.array(camera.cast, np.float32)
        if camera.blur > 0.3:
            frame = cv2.GaussianBlur(frame, (0, 0), camera.blur)
        frame += rng.normal(0.0, camera.noise, frame.shape).astype(np.float32)
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg])
        frames.append(cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else frame)
    return frames


@dataclass
class SampleSummary:
    out_dir: str
    labels_csv: str
    holdout_csv: str
    photos: list[str]
    clips: int = 0
    frames_with_face: int = 0
    frames: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def _write_clip(path: Path, frames: list[np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        sink = _VideoSink(tmp, FPS, frames[0].shape[1], frames[0].shape[0])
        try:
            for frame in frames:
                sink.write(frame)
        finally:
            sink.close()


def make_sample(out_dir: Path | str, *, clips_per_photo: int = 6, holdout_per_photo: int = 1,
                seed: int = 0, config: BlendConfig | None = None, seconds: float = SECONDS,
                progress: Callable[[str], None] | None = None) -> SampleSummary:
    """Write the sample under ``out_dir``: ``train/`` clips listed in ``labels.csv`` and
    ``holdout/`` clips (other camera paths) listed in ``holdout/labels.csv``, each real clip
    with its self-blended pseudo-fake in one group."""
    import time

    from fakeprobe.extractor.components import DETECTORS

    started = time.perf_counter()
    photos = find_photos()
    if not photos:
        raise FakeprobeError("no face photo found in the installed packages (matplotlib ships "
                             "one): pip install matplotlib")
    config = config or BlendConfig()
    out_dir = Path(out_dir)
    detector = DETECTORS.create("yunet", device="cpu")
    n_frames = max(2, int(round(seconds * FPS)))
    summary = SampleSummary(str(out_dir), str(out_dir / "labels.csv"),
                            str(out_dir / "holdout" / "labels.csv"),
                            [photo.name for photo, _ in photos])
    tables: dict[str, list[dict[str, str]]] = {"train": [], "holdout": []}
    for photo, path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        faces = detector.detect(image) if image is not None else []
        if not faces:
            summary.problems.append(f"{path}: unreadable or no face found, left out")
            continue
        face_box = max(faces, key=lambda face: face.area).box
        for k in range(clips_per_photo + holdout_per_photo):
            part = "train" if k < clips_per_photo else "holdout"
            clip_id = f"{photo.name}_{k:02d}"
            rng = np.random.default_rng([seed, k, sum(map(ord, photo.name))])
            frames = film(image, face_box, Camera.draw(rng), n_frames, FRAME_SIZE, rng)
            params = item_params(config, seed, clip_id)
            blended = []
            for frame in frames:
                landmarks = _largest(detector, frame)
                summary.frames += 1
                if landmarks is not None:
                    summary.frames_with_face += 1
                    frame = blend_faces(frame, [(landmarks, params)])
                blended.append(frame)
            folder = out_dir / part
            _write_clip(folder / "real" / f"{clip_id}.mp4", frames)
            _write_clip(folder / "fake" / f"{clip_id}_self_blend.mp4", blended)
            group = f"sample:{clip_id}"
            tables[part] += [
                {"path": f"real/{clip_id}.mp4", "label": "real", "group": group,
                 "dataset": SAMPLE_DATASET, "method": CAMERA_METHOD, "source": ""},
                {"path": f"fake/{clip_id}_self_blend.mp4", "label": "fake", "group": group,
                 "dataset": SAMPLE_DATASET, "method": SELF_BLEND_METHOD, "source": clip_id},
            ]
            summary.clips += 2
            if progress:
                progress(f"{part}/{clip_id}")
    for part, rows in tables.items():
        csv_path = out_dir / ("labels.csv" if part == "train" else "holdout/labels.csv")
        for row in rows:  # manifest paths are relative to the manifest
            row["path"] = (f"train/{row['path']}" if part == "train" else row["path"])
        write_manifest(csv_path, rows)
    summary.seconds = time.perf_counter() - started
    return summary
