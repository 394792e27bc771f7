"""The forensic encoder's recipe, as one reproducible command: data, protocol, training, scores.

Frozen ImageNet and face-recognition features see *who* is in a picture; an encoder that sees
*manipulation* has to be trained, and no registry ships forgery-trained weights. This script is
how fakeprobe trains the ``forensic`` backbone it ships, and how the numbers in its model card
were measured::

    .venv/bin/python benchmarks/forensic_encoder.py --workdir runs/forensic

Stages (each skipped when its output exists, so a rerun resumes; the training itself resumes
from its checkpoint after a kill or Ctrl-C):

1. ``cache``: ``../shared/data/dfdc_faces/manifest.csv`` (9,033 DFDC face crops, 209 actor
   groups) extracted once, face-crop mode, 224 px crops stored, no feature set, plus one
   self-blended pseudo-fake of every real crop (``extract --self-blend``);
   and the FF++ videos (c23 and c40) of ``../shared/data/ffpp``, 32 frames each, crops stored.
2. ``split``: the protocol's held-out actors: the 20% of the dfdc_faces groups that come first
   when ordered by SHA-256 of a fixed salt and the group name. They are never trained on, never
   used to pick an epoch or a setting; every choice below was made on the training groups'
   own validation fold.
3. ``train``: ``fakeprobe finetune`` of :data:`RECIPE` on the other actors (true fakes and
   self-blends of their reals), validation on a grouped fold of those actors only. No FF++ item
   is in training, so FF++ is a cross-dataset test.
4. ``score``: the trained net's ``embedding`` on every crop of both caches (``extract -b
   finetuned:NET``); logistic regression fitted on the training actors' embeddings and scored
   on the held-out actors, grouped 5-fold CV on the held-out actors alone, and the same
   training-actor head on the FF++ videos (video = mean of frame scores). The frozen ImageNet
   baseline (``mobilenet-v2``) is measured the same way.

Writes ``WORKDIR/results.json`` and a markdown table (stdout JSON, stderr markdown, like every
benchmark). ``--export`` then writes the shipped weights and their ONNX copy, checked against
the Keras network on 256 of the cached crops (``fakeprobe/weights/``): see
``fakeprobe.extractor.backbones.forensic``; ``--convert`` writes only that copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
#: Salt of the held-out actor draw: changing it changes the protocol (never do it to move a
#: number).
HOLDOUT_SALT = "fakeprobe-forensic-holdout-v1"
HOLDOUT_FRACTION = 0.2


def recipe(**overrides):
    """The training settings of the shipped encoder (a ``FinetuneConfig``)."""
    from fakeprobe.training.finetune import AugmentConfig, FinetuneConfig

    settings = dict(
        base="efficientnet-lite0",  # its ImageNet weights are a plain dependency
        input_size=160,
        epochs=12,
        batch_size=32,
        lr=1e-4,
        schedule="cosine",
        warmup=1.0,
        val_fraction=0.15,
        patience=4,
        monitor="auc",
        fakes="all",  # true fakes and self-blended pseudo-fakes
        fresh_blends=True,  # each self-blend drawn is blended anew (see the model card)
        augment=AugmentConfig(),
        dropout=0.3,
        embedding_dim=128,
        seed=0,
    )
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return FinetuneConfig(**settings)


@dataclass(frozen=True)
class Run:
    """Where one run reads and writes (the defaults: the shipped encoder's run)."""

    workdir: Path
    faces: Path = DATA / "dfdc_faces" / "manifest.csv"
    videos: Path = DATA / "ffpp"
    detector: str = "yunet"
    weights_dir: Path = ROOT / "fakeprobe" / "weights"
    frozen: str = "mobilenet-v2"
    overrides: tuple = ()

    @property
    def config(self):
        return recipe(**dict(self.overrides))

    def extractor(self, **fields):
        from fakeprobe.core.config import ExtractorConfig

        return ExtractorConfig(detector=self.detector, **fields)


def holdout_groups(groups, fraction: float = HOLDOUT_FRACTION,
                   salt: str = HOLDOUT_SALT) -> list[str]:
    """The protocol's held-out groups: the first ``ceil(fraction * n)`` groups ordered by
    SHA-256 of ``salt`` and the group name (independent of file order and of the data)."""
    unique = sorted(set(map(str, groups)))
    ranked = sorted(unique, key=lambda g: hashlib.sha256(f"{salt}:{g}".encode()).hexdigest())
    return sorted(ranked[:math.ceil(fraction * len(unique))])


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def stage_cache(run: Run) -> dict[str, Path]:
    """The face crops (with a self-blend of every real) and the videos, crops stored."""
    from fakeprobe.pipeline.run import extract
    from fakeprobe.pipeline.steps import SelfBlend
    from fakeprobe.synth.blend import BlendConfig

    faces, videos = run.workdir / "faces.h5", run.workdir / "videos.h5"
    if not faces.exists():
        _log(f"extracting {run.faces} into {faces}")
        extract([run.faces], faces,
                run.extractor(frames=1, keep_crops=224, face_crops=True, backbones=()),
                self_blend=SelfBlend(BlendConfig(), 0), commit_every=1e9)
    if not videos.exists():
        _log(f"extracting {run.videos} into {videos}")
        extract([run.videos], videos, run.extractor(keep_crops=224, backbones=()),
                commit_every=1e9)
    return {"faces": faces, "videos": videos}


def stage_split(faces: Path, workdir: Path) -> dict:
    from fakeprobe.features.cache import CacheReader

    path = workdir / "split.json"
    if path.exists():
        return json.loads(path.read_text())
    with CacheReader(faces) as cache:
        groups = sorted(set(cache.videos()["group"].astype(str)))
    held = holdout_groups(groups)
    split = {"salt": HOLDOUT_SALT, "fraction": HOLDOUT_FRACTION, "groups": len(groups),
             "holdout": held, "train": sorted(set(groups) - set(held))}
    path.write_text(json.dumps(split, indent=1))
    return split


class _Progress:
    def message(self, text: str) -> None:
        _log(text)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self._epoch, self._batches, self._t0 = epoch, batches, time.perf_counter()
        _log(f"epoch {epoch}/{epochs}: {batches} batches")

    def batch(self, done: int, loss: float) -> None:
        if done % 50 == 0:
            rate = done / (time.perf_counter() - self._t0)
            _log(f"  batch {done}/{self._batches} loss {loss:.4f} ({rate:.2f} batches/s)")

    def end_epoch(self, log) -> None:
        _log(f"epoch {log.epoch}: train loss {log.train_loss:.4f}, val loss {log.val_loss:.4f}, "
             f"val AUC {log.val_auc:.4f}, {log.seconds:.0f} s{' *' if log.improved else ''}")


def stage_train(run: Run, faces: Path, split: dict):
    from fakeprobe.training.finetune import finetune

    return finetune(faces, run.workdir / "forensic.keras", run.config, groups=split["train"],
                    progress=_Progress())


# --------------------------------------------------------------------------------------------
# Scores


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(scores)
    labels, scores = labels[ok], scores[ok]
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else float("nan")


class Items:
    """Per row ``item``; per item ``ids``, ``labels`` (0/1), ``groups``, ``methods``: what
    :func:`score_features` reads, from a ``CropSet`` or a ``FrameData``."""

    def __init__(self, item, ids, labels, groups, methods) -> None:
        self.item, self.ids, self.labels = item, np.asarray(ids).astype(str), labels
        self.groups = np.asarray(groups).astype(str)
        self.methods = np.asarray(methods).astype(str)

    @classmethod
    def of_crops(cls, data) -> "Items":
        return cls(data.item, data.ids, data.labels, data.groups, data.methods)

    @classmethod
    def of_frames(cls, data) -> "Items":
        return cls(data.video, data.videos["id"], data.video_labels, data.videos["group"],
                   data.videos["method"])


def score_features(X_faces: np.ndarray, faces: Items, split: dict, X_videos: np.ndarray,
                   videos: Items, own_faces: np.ndarray | None = None,
                   own_videos: np.ndarray | None = None, seed: int = 0) -> dict:
    """The protocol's numbers for one feature set (per-row features ``X_*``).

    * ``holdout_auc``: logistic regression fitted on the training actors (reals, true fakes and
      their self-blends) and scored on the held-out actors' reals and true fakes;
    * ``holdout_cv_auc``: grouped 5-fold CV inside the held-out actors alone;
    * ``videos_head_auc``: the training-actor head on the videos (mean of frame scores), the
      FF++ actor originals left out (``_with_actors``: in), and per manipulation method.

    ``own_*``: the network's own P(fake) per row, scored the same way when given.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from _nets import item_mean

    from fakeprobe.classifiers.heads import fit_head, new_head
    from fakeprobe.datasets import SELF_BLEND_METHOD
    from fakeprobe.training.cv import fake_proba

    pseudo = faces.methods == SELF_BLEND_METHOD
    held = np.isin(faces.groups, split["holdout"])
    n = len(faces.ids)
    train_items = np.flatnonzero(~held)
    test_items = np.flatnonzero(held & ~pseudo)
    y_row = faces.labels[faces.item]
    out: dict = {"train_items": int(len(train_items)), "test_items": int(len(test_items)),
                 "test_groups": len(split["holdout"])}

    def fit(items: np.ndarray):
        rows = np.flatnonzero(np.isin(faces.item, items))
        return fit_head(new_head("logreg", random_state=seed), X_faces[rows], y_row[rows],
                        faces.item[rows], faces.groups[faces.item[rows]])

    t0 = time.perf_counter()
    head = fit(train_items)
    out["head_fit_seconds"] = time.perf_counter() - t0
    p_faces = item_mean(fake_proba(head, X_faces), faces.item, n)
    out["holdout_auc"] = _auc(faces.labels[test_items], p_faces[test_items])
    head_true = fit(train_items[~pseudo[train_items]])
    out["holdout_auc_head_without_self_blend"] = _auc(
        faces.labels[test_items], item_mean(fake_proba(head_true, X_faces), faces.item,
                                            n)[test_items])
    # grouped CV inside the held-out actors alone: the head never sees a training actor
    k = min(5, len(split["holdout"]))
    if k >= 2:
        oof = np.full(n, np.nan)
        splitter = StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        for tr, te in splitter.split(test_items, faces.labels[test_items],
                                     faces.groups[test_items]):
            cv_head = fit(test_items[tr])
            rows = np.flatnonzero(np.isin(faces.item, test_items[te]))
            oof[test_items[te]] = item_mean(fake_proba(cv_head, X_faces[rows]),
                                            faces.item[rows], n)[test_items[te]]
        out["holdout_cv_auc"] = _auc(faces.labels[test_items], oof[test_items])
    if own_faces is not None:
        out["holdout_net_auc"] = _auc(faces.labels[test_items],
                                      item_mean(own_faces, faces.item, n)[test_items])
    m = len(videos.ids)
    actors = np.array([g.startswith("ffpp:actor") for g in videos.groups])
    scorers = {"head": item_mean(fake_proba(head, X_videos), videos.item, m),
               "head_without_self_blend": item_mean(fake_proba(head_true, X_videos),
                                                    videos.item, m)}
    if own_videos is not None:
        scorers["net"] = item_mean(own_videos, videos.item, m)
    for name, scores in scorers.items():
        out[f"videos_{name}_auc"] = _auc(videos.labels[~actors], scores[~actors])
        if actors.any():
            out[f"videos_{name}_auc_with_actors"] = _auc(videos.labels, scores)
        for method in sorted(set(videos.methods[videos.labels == 1])):
            pick = ~actors & ((videos.labels == 0) | (videos.methods == method))
            out[f"videos_{name}_auc_{method}"] = _auc(videos.labels[pick], scores[pick])
    out["videos"] = int((~actors).sum())
    return out


def stage_score(run: Run, caches: dict[str, Path], split: dict) -> dict:
    """The trained net's embedding and own score on both caches, and the protocol's numbers."""
    from _nets import net_outputs

    from fakeprobe.training.finetune import load_crops

    net = run.workdir / "forensic.keras"
    path = run.workdir / "scores-finetuned.json"
    if path.exists() and path.stat().st_mtime > net.stat().st_mtime:
        return json.loads(path.read_text())
    size = run.config.input_size
    faces = load_crops(caches["faces"], input_size=size)
    videos = load_crops(caches["videos"], input_size=size)
    t0 = time.perf_counter()
    e_faces, p_faces = net_outputs(net, faces.crops)
    seconds = (time.perf_counter() - t0) / len(faces.crops)
    e_videos, p_videos = net_outputs(net, videos.crops)
    result = score_features(e_faces, Items.of_crops(faces), split, e_videos,
                            Items.of_crops(videos), p_faces, p_videos)
    result["embed_seconds_per_crop"] = seconds
    path.write_text(json.dumps(result, indent=1))
    return result


def stage_frozen(run: Run, caches: dict[str, Path], split: dict) -> dict:
    """A frozen baseline (``run.frozen``) under the same protocol, from the stored crops."""
    from fakeprobe.classifiers.data import load_frames
    from fakeprobe.core.config import ExtractorConfig
    from fakeprobe.features.cache import CacheReader
    from fakeprobe.pipeline.run import extract

    feature = run.frozen
    path = run.workdir / f"scores-{feature}.json"
    if path.exists():
        return json.loads(path.read_text())
    sets, seconds = {}, {}
    for name, cache in caches.items():
        with CacheReader(cache) as reader:
            config, have = reader.config, reader.feature_sets
        if feature not in have:
            t0 = time.perf_counter()
            extract([run.faces if name == "faces" else run.videos], cache,
                    ExtractorConfig(**{**config.to_dict(), "backbones": (feature,)}),
                    commit_every=1e9)
            seconds[name] = time.perf_counter() - t0
        data = load_frames(cache, [feature])
        sets[name] = (data.X, Items.of_frames(data))
    result = score_features(*sets["faces"], split, *sets["videos"])
    result["extract_seconds"] = seconds
    path.write_text(json.dumps(result, indent=1))
    return result


def stage_cost(run: Run, caches: dict[str, Path], n: int = 512) -> dict:
    """Seconds per face crop of each encoder's network alone (stored crops, batches of 32,
    after one warm-up batch), on this machine."""
    from fakeprobe.extractor.backbones.load import load_backbone
    from fakeprobe.features.cache import CacheReader
    from fakeprobe.features.crops import row_crops

    encoders = {run.frozen: {}, "finetuned": {"weights": str(run.workdir / "forensic.keras")}}
    out = {}
    for name, kwargs in encoders.items():
        backbone = load_backbone(name, device="cpu", batch_size=32, **kwargs)
        with CacheReader(caches["faces"]) as cache:
            rows = np.flatnonzero(cache.frames(("has_face",))["has_face"])[:n]
            crops = row_crops(cache, rows, backbone.crop, media=False, upsample=True,
                              strict=True)[backbone.crop]
        backbone.embed(crops[:32])
        t0 = time.perf_counter()
        backbone.embed(crops)
        out[name] = {"seconds_per_crop": (time.perf_counter() - t0) / len(crops),
                     "input_size": backbone.crop.size, "crops": len(crops)}
    return out


# --------------------------------------------------------------------------------------------
# What ships


def _pin(weights_dir: Path, name: str, digest: str) -> None:
    """Record ``digest`` for the shipped file ``name`` in ``WEIGHTS_DIR/SHA256SUMS``."""
    from fakeprobe.fileio import write_text
    from fakeprobe.weights import CHECKSUMS

    path = weights_dir / CHECKSUMS
    lines = [line for line in (path.read_text().splitlines() if path.exists() else [])
             if not line.endswith(f"  {name}")]
    write_text(path, "\n".join(sorted(lines + [f"{digest}  {name}"])) + "\n")


def stage_export(run: Run, caches: dict[str, Path], split: dict, scores: dict) -> dict:
    """The shipped files: the encoder's float16 weights, the bundled detector (logreg on the
    shipped encoder's features of the *training* actors, so the protocol's held-out numbers
    are the bundled detector's own), and the numbers measured through the shipped files and
    the ordinary pipeline (``extract -b forensic``, ``fit``, ``evaluate``)."""
    from fakeprobe.app import Protocol, evaluate, fit
    from fakeprobe.classifiers.data import Selection
    from fakeprobe.core.checksums import sha256_file
    from fakeprobe.core.config import ExtractorConfig
    from fakeprobe.extractor.backbones.forensic import WEIGHTS_FILE, export
    from fakeprobe.features.cache import CacheReader
    from fakeprobe.pipeline.run import extract
    from fakeprobe.weights import BUNDLED_MODEL_FILE

    run.weights_dir.mkdir(parents=True, exist_ok=True)
    weights = run.weights_dir / WEIGHTS_FILE
    protocol = {"holdout_groups": split["holdout"], "salt": split["salt"],
                "recipe": run.config.to_dict(), "scores": scores}
    crops = check_crops(caches["faces"], run.config.input_size)
    _pin(run.weights_dir, WEIGHTS_FILE, export(run.workdir / "forensic.keras", weights,
                                              extra={"protocol": protocol}, check_crops=crops))
    converted = _pin_converted(run.weights_dir)
    _log(f"{weights}: {weights.stat().st_size / 1e6:.1f} MB")
    use = {"forensic": str(weights)}
    # the detector's cache: face-crop mode, default sampling (32 frames of a video at predict)
    detector_cache = run.workdir / "detector.h5"
    t0 = time.perf_counter()
    summary = extract([run.faces], detector_cache,
                      run.extractor(face_crops=True, backbones=("forensic",)), weights=use,
                      commit_every=1e9)
    extract_seconds = time.perf_counter() - t0
    model = run.weights_dir / BUNDLED_MODEL_FILE
    fitted = fit(detector_cache, "logreg", model, features=("forensic",),
                 selection=Selection(exclude_groups=tuple(split["holdout"])),
                 protocol=Protocol(random_state=0))
    _pin(run.weights_dir, BUNDLED_MODEL_FILE, sha256_file(model))
    held = evaluate(model, detector_cache, Selection(exclude_groups=tuple(split["train"])))
    # the videos: the shipped encoder's features from the stored crops (nothing decoded)
    with CacheReader(caches["videos"]) as reader:
        config = reader.config
    extract([run.videos], caches["videos"],
            ExtractorConfig(**{**config.to_dict(), "backbones": ("forensic",)}), weights=use,
            commit_every=1e9)
    videos = evaluate(model, caches["videos"], Selection(exclude_groups=("ffpp:actor:*",)))
    videos_all = evaluate(model, caches["videos"], Selection())
    shipped = {
        "weights_sha256": sha256_file(weights), "weights_mb": weights.stat().st_size / 1e6,
        "detector_sha256": sha256_file(model), "threshold": fitted.provenance["threshold"],
        "detector_cache_seconds": extract_seconds, "detector_cache_items": summary.extracted,
        "detector_cv_video": fitted.report.video,
        "holdout": _report_numbers(held), "videos": _report_numbers(videos),
        "videos_with_actors": _report_numbers(videos_all), "converted": converted,
    }
    return shipped


def check_crops(faces: Path, size: int, n: int = 256) -> np.ndarray:
    """``n`` stored crops spread over the face-crop cache, cut to the encoder's ``size`` px
    crop: the real faces on which the ONNX copy is checked against the Keras network."""
    from fakeprobe.core.config import CONTEXT_MARGIN
    from fakeprobe.core.geometry import CropSpec
    from fakeprobe.features.cache import CacheReader
    from fakeprobe.features.crops import row_crops

    spec = CropSpec(size, CONTEXT_MARGIN)
    with CacheReader(faces) as cache:
        rows = np.unique(np.linspace(0, cache.n_rows - 1, n).astype(int))
        return row_crops(cache, rows, spec, media=False, upsample=True, strict=True)[spec]


def _pin_converted(weights_dir: Path) -> dict:
    """Pin the ONNX copy that ``export`` wrote beside the weights; what it records."""
    import onnxruntime as ort

    from fakeprobe.core.checksums import sha256_file
    from fakeprobe.extractor.backbones.forensic import CONVERTED_FILE
    from fakeprobe.extractor.backbones.onnx_runtime import METADATA_KEY

    path = weights_dir / CONVERTED_FILE
    _pin(weights_dir, CONVERTED_FILE, sha256_file(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    described = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    _log(f"{path}: {path.stat().st_size / 1e6:.1f} MB, features within "
         f"{described['agreement']['max_abs_difference']:.2g} of the Keras network's")
    return {"sha256": sha256_file(path), "mb": path.stat().st_size / 1e6, **described}


def stage_convert(run: Run, faces: Path) -> dict:
    """Only the ONNX copy of the weights already in ``--weights-dir``, checked on crops of
    the face-crop cache, and its pin (``--convert``: no training, nothing else changes)."""
    from fakeprobe.extractor.backbones.forensic import WEIGHTS_FILE, convert_weights, read_weights

    weights = run.weights_dir / WEIGHTS_FILE
    _, metadata, _ = read_weights(weights, arrays=False)
    convert_weights(weights, check_crops=check_crops(faces, int(metadata["input_size"])))
    return _pin_converted(run.weights_dir)


def _report_numbers(result) -> dict:
    """Video metrics of an ``evaluate`` result (a report and its warnings)."""
    report, _ = result
    return {"video": report.video, "items": len(report.video_scores)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "forensic")
    parser.add_argument("--stage", choices=("cache", "split", "train", "score", "all"),
                        default="all")
    parser.add_argument("--export", action="store_true",
                        help="write the shipped weights, their ONNX copy, the bundled detector "
                        "and their checksums (into --weights-dir) and measure them")
    parser.add_argument("--convert", action="store_true",
                        help="only write the ONNX copy of the weights in --weights-dir (checked "
                        "on crops of WORKDIR/faces.h5) and its checksum")
    defaults = Run(Path("."))
    parser.add_argument("--faces", type=Path, default=defaults.faces,
                        help="CSV manifest of labelled, grouped face crops")
    parser.add_argument("--videos", type=Path, default=defaults.videos,
                        help="labelled videos for the cross-dataset test (never trained on)")
    parser.add_argument("--detector", default=defaults.detector)
    parser.add_argument("--weights-dir", type=Path, default=defaults.weights_dir)
    parser.add_argument("--frozen", default=defaults.frozen,
                        help="the frozen feature set measured beside the encoder")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--markdown", type=Path)
    for name in ("epochs", "input_size", "seed"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int,
                            help="override the recipe (tests, experiments)")
    parser.add_argument("--base", help="override the recipe's base network")
    for name in ("lr", "clipnorm"):
        parser.add_argument(f"--{name}", type=float, help="override the recipe")
    parser.add_argument("--fresh-blends", action=argparse.BooleanOptionalAction, default=None,
                        help="override the recipe: blend every self-blend twin anew at each "
                        "draw (--no-fresh-blends: train on the stored twins)")
    args = parser.parse_args(argv)
    overrides = tuple((k, getattr(args, k)) for k in ("epochs", "input_size", "seed", "base",
                                                     "lr", "clipnorm", "fresh_blends")
                      if getattr(args, k) is not None)
    run = Run(args.workdir, args.faces, args.videos, args.detector, args.weights_dir,
              args.frozen, overrides)
    run.workdir.mkdir(parents=True, exist_ok=True)
    if args.convert and (run.workdir / "faces.h5").exists():
        print(json.dumps(stage_convert(run, run.workdir / "faces.h5"), indent=1))
        return 0
    caches = stage_cache(run)
    if args.convert:
        print(json.dumps(stage_convert(run, caches["faces"]), indent=1))
        return 0
    split = stage_split(caches["faces"], run.workdir)
    _log(f"held out {len(split['holdout'])} of {split['groups']} actor groups")
    if args.stage in ("cache", "split"):
        return 0
    trained = stage_train(run, caches["faces"], split)
    if args.stage == "train":
        return 0
    result = {
        "recipe": run.config.to_dict(), "split": split,
        "training": {k: v for k, v in asdict(trained).items()},
        "scores": {"finetuned": stage_score(run, caches, split),
                   run.frozen: stage_frozen(run, caches, split)},
        "environment": _environment(),
    }
    result["cost"] = stage_cost(run, caches)
    shipped = run.workdir / "shipped.json"
    if args.export:
        result["shipped"] = stage_export(run, caches, split, result["scores"])
        shipped.write_text(json.dumps(result["shipped"], indent=1, default=str))
    elif shipped.exists():  # what the last --export measured
        result["shipped"] = json.loads(shipped.read_text())
    (run.workdir / "results.json").write_text(json.dumps(result, indent=1, default=str))
    from _output import emit

    emit(result, _markdown(result, run), args.json_out, args.markdown)
    return 0


def _environment() -> dict:
    from fakeprobe.core.provenance import environment

    return environment()


def _markdown(result: dict, run: Run) -> str:
    def f(value) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:.3f}"

    rows = ["| encoder | held-out actors (head on training actors) | held-out actors, grouped "
            "CV among them | videos, no video trained on | ms per face (network) |",
            "|---|---|---|---|---|"]
    cost = result.get("cost", {})
    for name, label in ((run.frozen, f"{run.frozen} (frozen ImageNet)"),
                        ("finetuned", "fine-tuned (float32, this run)")):
        s = result["scores"][name]
        ms = cost.get(name, {}).get("seconds_per_crop")
        rows.append(f"| {label} | {f(s.get('holdout_auc'))} | {f(s.get('holdout_cv_auc'))} | "
                    f"{f(s.get('videos_head_auc'))} | "
                    f"{'-' if ms is None else f'{1000 * ms:.1f}'} |")
    shipped = result.get("shipped")
    if shipped:
        rows.append(f"| shipped `forensic` + bundled detector | "
                    f"{f(shipped['holdout']['video'].get('roc_auc'))} | - | "
                    f"{f(shipped['videos']['video'].get('roc_auc'))} | - |")
    training = result["training"]
    rows.append("")
    seconds = sum(epoch["seconds"] for epoch in training["history"])
    rows.append(f"Training: {training['epochs_run']} epochs (best {training['best_epoch']}, "
                f"validation AUC {f(training['best_value'])}) in {seconds:.0f} s of epochs "
                f"on {training['device']}; ROC-AUC per item (video = mean of its frames).")
    return "\n".join(rows)


if __name__ == "__main__":
    raise SystemExit(main())
