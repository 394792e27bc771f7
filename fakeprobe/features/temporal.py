"""Video-level (temporal) feature sets, derived from what a cache already holds.

A face swap or a reenactment is often unstable over time: the swapped region flickers, the
landmarks jitter against the head, the embedding of the face varies more from frame to frame
than in real footage. A single frame's features cannot see that. This module summarises each
face *track* of an item (its face rows in time order) into one fixed-length vector and stores
it as a new feature set of the cache, **broadcast to every face row of the track**, so the
frame-level heads, the grouped folds and the frame-to-video aggregation use it unchanged
(``fakeprobe compare CACHE -f landmarks -f mobilenet-v2+mobilenet-v2-temporal``). Rows without
a face stay NaN, as in every feature set.

Two recipes (``RECIPE_VERSION`` 1):

``landmarks`` (:data:`LANDMARK_COLUMNS`, 20-d), from the cached rows alone. Every frame's five
landmarks are similarity-aligned onto the ArcFace template (unit square: the 112-pixel crop is
1 wide), which removes the rigid head motion (translation, rotation, scale) and leaves the
non-rigid shape. Then, per landmark, the speed of the aligned point between consecutive sampled
frames (template units per second; mean, std and 90th percentile), the residual of the
similarity fit (RMS distance of the aligned points to the template: how non-rigid the face is;
mean and std over the track), the speed of the face's scale (``|d log scale| / dt``, scale from
the landmark fit) and how much that disagrees with the detector box (``|d log landmark scale -
d log box scale| / dt``), and a ``single_row`` flag.

``<base>-temporal`` (:data:`SEQUENCE_COLUMNS`, 9-d) for any cached (not itself derived) feature
set ``<base>``: the cosine distance between consecutive frames' vectors (mean, std, max), the
per-dimension standard deviation over the track (mean and median over the dimensions), the
cosine distance of each frame to the track's mean vector (mean, std), the von Neumann ratio
(mean squared successive difference over twice the mean squared deviation from the track mean:
about 1 for independent frames, near 0 for a slow drift, towards 2 for frame-to-frame flicker)
and the ``single_row`` flag. These are per *sampled* step, not per second: they depend on the
sampling (``--frames``/``--fps``), which a model already warns about.

Time steps come from the ``frame_index`` gaps and the item's ``fps``; when the rate is unknown
(frame folders) the row timestamps, or else :data:`NOMINAL_FPS`, stand in. A track with one
usable row (every image) has zero motion statistics and ``single_row = 1``; its static values
(the landmark fit residual) are kept. A track with no usable row gets NaN (heads skip it).

Provenance: each derived set's config (stored in the cache, copied into model files) names the
recipe, its ``version`` and what it was derived from (the base set's name, a SHA-256 of its
stored config and its weights checksum), so a model refuses a cache where the set was computed
otherwise, and :func:`derive` refuses to extend a set derived otherwise.

Writes go through :mod:`fakeprobe.features.cache` only (staged per item, then one atomic
commit): a crash or Ctrl-C loses nothing, and running :func:`derive` again skips the items done.
Do not run it while ``fakeprobe extract`` writes the same cache.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fakeprobe.core.geometry import ARCFACE_TEMPLATE_112, similarity_transform
from fakeprobe.core.schema import READ_STATUSES
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.features import cache as fcache

#: Version of both recipes; bump it when a column changes meaning (old sets are then refused).
RECIPE_VERSION = 1
#: Name of the landmark-stability feature set.
LANDMARKS = "landmarks"
#: Suffix of the embedding-stability feature set of a base set: ``mobilenet-v2-temporal``.
TEMPORAL_SUFFIX = "-temporal"
#: Frame rate assumed when neither the item's fps nor its timestamps are known (frame folders).
NOMINAL_FPS = 25.0
#: The five landmarks in the template's order, left/right as seen in the image.
POINTS = ("eye_l", "eye_r", "nose", "mouth_l", "mouth_r")
LANDMARK_COLUMNS = (
    *(f"{p}_speed_{s}" for p in POINTS for s in ("mean", "std", "p90")),
    "residual_mean", "residual_std", "scale_speed_mean", "scale_box_mismatch_mean",
    "single_row",
)
SEQUENCE_COLUMNS = (
    "cos_step_mean", "cos_step_std", "cos_step_max", "dim_std_mean", "dim_std_median",
    "cos_to_mean_mean", "cos_to_mean_std", "von_neumann", "single_row",
)
_TEMPLATE = ARCFACE_TEMPLATE_112 / 112.0
_EPS = 1e-12


# --- per-track statistics (pure numpy) -------------------------------------------------------

def time_steps(frame_index: np.ndarray, timestamp: np.ndarray, fps: float) -> np.ndarray:
    """Seconds between consecutive rows (``len - 1`` values) of one track in time order.

    From the frame-index gaps and ``fps``; when the rate is unknown, from the timestamps if they
    are finite and increasing, else at :data:`NOMINAL_FPS`."""
    gaps = np.diff(np.asarray(frame_index, np.float64))
    if np.isfinite(fps) and fps > 0:
        return gaps / fps
    steps = np.diff(np.asarray(timestamp, np.float64))
    if len(steps) and np.all(np.isfinite(steps)) and np.all(steps > 0):
        return steps
    return gaps / NOMINAL_FPS


def landmark_stats(landmarks: np.ndarray, boxes: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """The :data:`LANDMARK_COLUMNS` vector of one track: ``landmarks`` ``(n, 5, 2)`` and
    ``boxes`` ``(n, 4)`` (x, y, w, h) in time order, ``dt`` the ``n - 1`` time steps (s)."""
    landmarks = np.asarray(landmarks, np.float64)
    boxes = np.asarray(boxes, np.float64)
    n = len(landmarks)
    aligned = np.empty((n, 5, 2))
    residual = np.empty(n)
    log_scale = np.empty(n)  # log of the face size in pixels per template unit
    for t in range(n):
        matrix = similarity_transform(landmarks[t], _TEMPLATE)
        aligned[t] = landmarks[t] @ matrix[:, :2].T + matrix[:, 2]
        residual[t] = np.sqrt(np.mean(np.sum((aligned[t] - _TEMPLATE) ** 2, axis=1)))
        log_scale[t] = -0.5 * np.log(max(abs(np.linalg.det(matrix[:, :2])), _EPS))
    out = np.zeros(len(LANDMARK_COLUMNS))
    out[15], out[16] = residual.mean(), residual.std()
    if n < 2:
        out[19] = 1.0
        return out
    dt = np.maximum(np.asarray(dt, np.float64), _EPS)
    speed = np.linalg.norm(np.diff(aligned, axis=0), axis=2) / dt[:, None]  # (n - 1, 5)
    out[0:15:3] = speed.mean(axis=0)
    out[1:15:3] = speed.std(axis=0)
    out[2:15:3] = np.percentile(speed, 90, axis=0)
    d_face = np.diff(log_scale)
    d_box = np.diff(0.5 * np.log(np.maximum(boxes[:, 2] * boxes[:, 3], _EPS)))
    out[17] = np.mean(np.abs(d_face) / dt)
    out[18] = np.mean(np.abs(d_face - d_box) / dt)
    return out


def _cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise ``1 - cos`` (a zero vector is at distance 1 from anything)."""
    dot = np.sum(a * b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return 1.0 - np.where(norms > _EPS, dot / np.maximum(norms, _EPS), 0.0)


def sequence_stats(vectors: np.ndarray) -> np.ndarray:
    """The :data:`SEQUENCE_COLUMNS` vector of one track's feature vectors ``(n, d)`` in time
    order."""
    x = np.asarray(vectors, np.float64)
    out = np.zeros(len(SEQUENCE_COLUMNS))
    dim_std = x.std(axis=0)
    out[3], out[4] = dim_std.mean(), np.median(dim_std)
    mean = x.mean(axis=0, keepdims=True)
    to_mean = _cosine_distance(x, np.broadcast_to(mean, x.shape))
    out[5], out[6] = to_mean.mean(), to_mean.std()
    if len(x) < 2:
        out[5] = out[6] = 0.0  # one vector is its own mean
        out[8] = 1.0
        return out
    steps = _cosine_distance(x[1:], x[:-1])
    out[0], out[1], out[2] = steps.mean(), steps.std(), steps.max()
    spread = np.mean(np.sum((x - mean) ** 2, axis=1))
    successive = np.mean(np.sum(np.diff(x, axis=0) ** 2, axis=1))
    out[7] = successive / (2.0 * spread) if spread > _EPS else 0.0
    return out


def broadcast_tracks(frame_index: np.ndarray, track: np.ndarray, usable: np.ndarray,
                     dim: int, summarise: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``(rows, dim)`` float32: per track (``track >= 0``), ``summarise(rows)`` of its usable
    rows in time order (one row per frame index), written to every row of that track; NaN
    elsewhere and for tracks with no usable row."""
    out = np.full((len(track), dim), np.nan, np.float32)
    for t in np.unique(track[track >= 0]):
        members = np.flatnonzero(track == t)
        rows = members[usable[members]]
        if not len(rows):
            continue
        rows = rows[np.argsort(frame_index[rows], kind="stable")]
        rows = rows[np.r_[True, np.diff(frame_index[rows]) > 0]]  # one row per frame
        vector = summarise(rows)
        if np.all(np.isfinite(vector)):
            out[members] = vector.astype(np.float32)
    return out


# --- recipes and provenance -------------------------------------------------------------------

def _digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def recipe_config(name: str, feature_sets: dict[str, dict], extractor: dict,
                  path: Path | str = "cache") -> dict:
    """The config stored with derived feature set ``name`` of a cache whose ``feature_sets`` and
    extractor config are given. Raises :class:`FakeprobeError` for a name that cannot be
    derived there."""
    if name == LANDMARKS:
        return {"name": name, "dim": len(LANDMARK_COLUMNS), "derived_from": "frames",
                "recipe": "track-landmark-stability", "version": RECIPE_VERSION,
                "detector": extractor.get("detector"),
                "detect_size": extractor.get("detect_size"),
                "units": "template widths per second (the 112-px ArcFace crop is 1 wide)",
                "columns": list(LANDMARK_COLUMNS)}
    if not name.endswith(TEMPORAL_SUFFIX) or name == TEMPORAL_SUFFIX:
        raise FakeprobeError(f"cannot derive {name!r}: derived sets are {LANDMARKS!r} and "
                             f"'<base>{TEMPORAL_SUFFIX}'")
    base = name[: -len(TEMPORAL_SUFFIX)]
    if base not in feature_sets:
        raise FakeprobeError(f"{path}: no feature set {base!r} to derive {name!r} from; it "
                             f"holds {', '.join(feature_sets) or 'none'}")
    base_config = feature_sets[base]
    if "derived_from" in base_config:
        raise FakeprobeError(f"{base!r} is itself derived (one vector per track): its "
                             "temporal statistics would all be zero")
    config = {"name": name, "dim": len(SEQUENCE_COLUMNS), "derived_from": base,
              "recipe": "track-sequence-stability", "version": RECIPE_VERSION,
              "base_config_sha256": _digest(base_config),
              "columns": list(SEQUENCE_COLUMNS)}
    for key in ("weights", "weights_sha256", "sha256"):
        if key in base_config:
            config[f"base_{key}"] = base_config[key]
    return config


def _differences(stored: dict, current: dict) -> list[str]:
    """Like :func:`fcache.feature_config_differences`, but a key of ``current`` missing from
    ``stored`` counts (a backbone that happens to be called ``landmarks`` is not ours)."""
    missing = [f"{key}: absent vs {current[key]!r}" for key in current if key not in stored]
    return missing + fcache.feature_config_differences(stored, current)


def _all_derived(names: Sequence[str]) -> bool:
    """True when every name looks like a derived set (for staged leftovers)."""
    return all(n == LANDMARKS or n.endswith(TEMPORAL_SUFFIX) for n in names)


# --- the run ----------------------------------------------------------------------------------

@dataclass
class DeriveSummary:
    """What :func:`derive` did. Per feature set: ``computed`` items now, ``already_done``,
    ``no_base`` (items whose base set is not extracted), its ``dim`` and stored ``config``."""

    cache: str
    feature_sets: dict[str, dict] = field(default_factory=dict)
    items: int = 0
    committed: int = 0
    leftovers_committed: int = 0
    seconds: float = 0.0
    interrupted: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _record(videos: dict[str, np.ndarray], i: int) -> fcache.VideoRecord:
    label = str(videos["label"][i]) or None
    return fcache.VideoRecord(id=str(videos["id"][i]), path=str(videos["path"][i]),
                              kind=str(videos["kind"][i]), label=label,
                              group=str(videos["group"][i]), status=str(videos["status"][i]))


def _commit_leftovers(cache_path: Path, feature_sets: dict[str, dict], extractor: dict,
                      config) -> int:
    """Commit items a killed ``derive`` staged; refuse when an extraction left staged work
    (it must be committed by ``fakeprobe extract``, with its backbones' provenance)."""
    files = fcache.staged_files(cache_path)
    if not files:
        return 0
    names: set[str] = set()
    for path in files:
        item = fcache.load_staged(path)
        if item.kind != "features" or not _all_derived(list(item.features)):
            raise FakeprobeError(
                f"{cache_path} has {len(files)} staged item(s) of an extraction not committed "
                "yet; run the same `fakeprobe extract` again (it commits them), then derive")
        names.update(item.features)
    configs = {n: recipe_config(n, feature_sets, extractor, cache_path) for n in names}
    return fcache.commit(cache_path, config, configs)


def derive(cache_path: Path | str, names: Sequence[str] = (LANDMARKS,)) -> DeriveSummary:
    """Add the derived feature sets ``names`` (``landmarks``, ``<base>-temporal``) to every read
    item of the cache that lacks them; return what was done.

    Items are staged one by one and committed once at the end (atomically; on Ctrl-C the staged
    items are committed before ``KeyboardInterrupt`` propagates). Items already done are
    skipped, so a second run is a no-op that leaves the file untouched."""
    cache_path = Path(cache_path)
    names = tuple(dict.fromkeys(names))
    if not names:
        raise FakeprobeError("name at least one feature set to derive (--landmarks or "
                             "--temporal BASE)")
    started = time.perf_counter()
    summary = DeriveSummary(cache=str(cache_path))
    with fcache.CacheReader(cache_path) as reader:
        stored_sets, extractor_config = reader.feature_sets, reader.config
    extractor = extractor_config.to_dict()
    configs = {n: recipe_config(n, stored_sets, extractor, cache_path) for n in names}
    for name, config in configs.items():
        if name in stored_sets:
            differences = _differences(stored_sets[name], config)
            if differences:
                raise ConfigMismatch(
                    f"{cache_path}: feature set {name!r} was made otherwise than derive makes "
                    f"it now ({'; '.join(differences)}; cache vs now); it cannot be extended "
                    "in place: extract into a new cache and derive there")
    summary.leftovers_committed = _commit_leftovers(cache_path, stored_sets, extractor,
                                                    extractor_config)
    counts = {n: {"dim": c["dim"], "computed": 0, "already_done": 0, "no_base": 0,
                  "config": c} for n, c in configs.items()}
    summary.feature_sets = counts
    staged: list[Path] = []
    try:
        with fcache.CacheReader(cache_path) as reader:
            videos, state = reader.videos(), reader.state()
            frames = reader.frames(("frame_index", "timestamp", "box", "landmarks", "track",
                                    "has_face"))
            for position, rows in reader.iter_video_rows():
                vid = str(videos["id"][position])
                status, done = state[vid]
                if status not in READ_STATUSES:
                    continue  # failed items have no rows and get no features
                features: dict[str, np.ndarray] = {}
                item = {k: v[rows] for k, v in frames.items()}
                fps = float(videos["fps"][position])
                for name in names:
                    if name in done:
                        counts[name]["already_done"] += 1
                        continue
                    base = configs[name]["derived_from"]
                    if base != "frames" and base not in done:
                        counts[name]["no_base"] += 1
                        continue
                    if base == "frames":
                        features[name] = _landmark_rows(item, fps)
                    else:
                        features[name] = _sequence_rows(item, reader.features(base, rows))
                    counts[name]["computed"] += 1
                if features:
                    staged.append(fcache.stage(cache_path, fcache.StagedItem(
                        _record(videos, position), kind="features", features=features)))
                    summary.items += 1
        summary.committed = _commit_own(cache_path, staged, extractor_config, configs)
    except KeyboardInterrupt:
        summary.interrupted = True
        _commit_own(cache_path, staged, extractor_config, configs)
        raise
    finally:
        summary.seconds = time.perf_counter() - started
    return summary


def _commit_own(cache_path: Path, staged: list[Path], extractor_config, configs) -> int:
    """Commit this run's staged items; if another process staged items meanwhile, withdraw
    ours and stop rather than merge its items with our provenance."""
    if not staged:
        return 0
    foreign = set(fcache.staged_files(cache_path)) - set(staged)
    if foreign:
        for path in staged:
            path.unlink(missing_ok=True)
        raise FakeprobeError(f"{cache_path} is being written by another process ({len(foreign)} "
                             "staged item(s) not ours); run derive again once it is done")
    return fcache.commit(cache_path, extractor_config, configs)


def _landmark_rows(item: dict[str, np.ndarray], fps: float) -> np.ndarray:
    boxes, marks = item["box"], item["landmarks"]
    usable = (item["has_face"] & np.isfinite(marks).all(axis=(1, 2))
              & np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0))

    def summarise(rows: np.ndarray) -> np.ndarray:
        dt = time_steps(item["frame_index"][rows], item["timestamp"][rows], fps)
        return landmark_stats(marks[rows], boxes[rows], dt)

    return broadcast_tracks(item["frame_index"], _face_tracks(item), usable,
                            len(LANDMARK_COLUMNS), summarise)


def _sequence_rows(item: dict[str, np.ndarray], vectors: np.ndarray) -> np.ndarray:
    usable = item["has_face"] & np.isfinite(vectors).all(axis=1)
    return broadcast_tracks(item["frame_index"], _face_tracks(item), usable,
                            len(SEQUENCE_COLUMNS), lambda rows: sequence_stats(vectors[rows]))


def _face_tracks(item: dict[str, np.ndarray]) -> np.ndarray:
    """Track ids with rows without a face set to -1 (never part of a track)."""
    return np.where(item["has_face"], item["track"], -1)
