"""The fine-tuning run: read and split the crops, build or resume the network, train epoch by
epoch with early stopping, and keep the best model (see :mod:`fakeprobe.training.finetune`)."""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fakeprobe.extractor.backbones.finetuned import EMBEDDING_LAYER, FINETUNED_FORMAT
from fakeprobe.training.finetune.blends import blend_sources, fresh_blend
from fakeprobe.training.finetune.config import (BASES, RESUMABLE_FIELDS, STATE_FORMAT,
                                                FinetuneConfig, FinetuneError)
from fakeprobe.training.finetune.data import CropSet, Split, load_crops, split_items
from fakeprobe.training.finetune.files import (checkpoint_dir, clear_temporary, finish, load_state,
                                               plain, run_versions, save_epoch)
from fakeprobe.training.finetune.network import auc, balanced_log_loss, base_weights, build_network
from fakeprobe.training.finetune.progress import (CallbackReporter, EpochLog, FinetuneResult,
                                                  Reporter, SilentReporter)


@dataclass
class TrainingData:
    """The crops of a run, their split and per-row labels and weights."""

    crops: CropSet
    split: Split
    train_rows: np.ndarray
    val_rows: np.ndarray
    y_row: np.ndarray  # per crop row: 1 fake, 0 real
    w_train: np.ndarray  # per training row: class- and item-balanced weight
    w_val: np.ndarray
    fingerprint: dict
    blend_source: np.ndarray  # per crop row: the row of its source real crop (twins), else -1
    warnings: list[str] = field(default_factory=list)


@dataclass
class Progress:
    """Where a run stands: the epochs done (of this and earlier, resumed runs) and the best."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_value: float = float("nan")

    @classmethod
    def from_state(cls, state: dict | None) -> "Progress":
        if not state:
            return cls()
        return cls(int(state["epoch"]), list(state["history"]), int(state["best_epoch"]),
                   float(state["best_value"]))


@dataclass
class Session:
    """TensorFlow, the device and the dtype policy of a run."""

    tf: Any
    keras: Any
    device: str
    mixed: bool
    net_kwargs: dict

    def export(self, model: Any, config: FinetuneConfig) -> Any:
        """A float32, optimizer-free copy of ``model`` (what the ``finetuned`` backbone
        loads)."""
        previous = self.keras.config.dtype_policy()
        self.keras.config.set_dtype_policy("float32")
        try:
            with self.tf.device(self.device):
                copy = build_network(config.base, config.input_size, **self.net_kwargs)
        finally:
            self.keras.config.set_dtype_policy(previous)
        copy.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
        return copy


def _reporter(progress: Reporter | Callable[[EpochLog], None] | None) -> Reporter:
    if progress is None:
        return SilentReporter()
    if callable(progress) and not hasattr(progress, "end_epoch"):
        return CallbackReporter(progress)
    return progress  # type: ignore[return-value]


def _training_data(cache_path: Path, config: FinetuneConfig, selection: Any,
                   groups: Sequence[str] | None) -> TrainingData:
    """Read the crops, split them by group and weight the rows (cheap checks first: a cache
    without crops fails before TensorFlow is imported)."""
    from fakeprobe.classifiers.heads import balanced_weights
    from fakeprobe.classifiers.model import cache_fingerprint

    crops = load_crops(cache_path, selection, config.input_size, config.frames_per_item,
                       config.allow_upsample, groups)
    warnings = []
    if crops.upsampled:
        warnings.append(f"crops upsampled from the stored {crops.stored.size} px to "
                        f"{crops.spec.size} px")
    split = split_items(crops.labels, crops.groups, crops.self_blend,
                        val_fraction=config.val_fraction, val_fold=config.val_fold,
                        fakes=config.fakes, seed=config.seed)
    if split.val_uses_self_blend:
        warnings.append("validation groups hold no true fake: validating on self-blend fakes")
    train_rows = np.flatnonzero(np.isin(crops.item, split.train))
    val_rows = np.flatnonzero(np.isin(crops.item, split.val))
    y_row = crops.labels[crops.item].astype(np.float32)
    w_train = balanced_weights(y_row[train_rows], crops.item[train_rows]).astype(np.float32)
    w_val = (balanced_weights(y_row[val_rows], crops.item[val_rows]) if len(val_rows)
             else np.zeros(0))
    blend_source = np.full(len(crops.item), -1, np.int64)
    if config.fresh_blends:
        blend_source = blend_sources(crops.ids, crops.item)
        twins = int((blend_source[train_rows] >= 0).sum())
        if not twins:
            raise FinetuneError(
                f"{cache_path}: fresh blends need the self-blend twins of training reals "
                "(extract with --self-blend, and train with --fakes all or self-blend)")
        warnings.append(f"{twins} self-blend training crops are blended anew at every draw")
    return TrainingData(crops, split, train_rows, val_rows, y_row, w_train, w_val,
                        cache_fingerprint(cache_path), blend_source, warnings)


def _settings(config: FinetuneConfig, data: TrainingData, selection: Any,
              groups: Sequence[str] | None) -> dict:
    """What a checkpoint must have been made with to be resumed (as stored in JSON)."""
    settings = {
        "config": {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_FIELDS},
        "selection": selection.to_dict(), "training_cache_sha256": data.fingerprint["sha256"],
        "base_weights_sha256": BASES[config.base].sha256,
        "groups": sorted(groups) if groups is not None else None,
    }
    return json.loads(json.dumps(plain(settings)))


def _session(config: FinetuneConfig, device: str, warnings: list[str]) -> Session:
    from fakeprobe.core.tf import import_tensorflow, resolve_device

    tf = import_tensorflow()
    import keras

    tf_device = resolve_device(device)
    mixed = config.mixed_precision == "on" or (config.mixed_precision == "auto"
                                                and "GPU" in tf_device)
    if mixed and "GPU" not in tf_device:
        warnings.append("mixed precision on a CPU is slow; use it on a GPU")
    net_kwargs = dict(embedding_dim=config.embedding_dim, dropout=config.dropout,
                      freeze_until=config.freeze_until, arrays=base_weights(BASES[config.base]))
    return Session(tf, keras, tf_device, mixed, net_kwargs)


def _model(session: Session, config: FinetuneConfig, state: dict | None, ckpt: Path,
           reporter: Reporter) -> Any:
    """The network to train: resumed from the checkpoint's last epoch, or new."""
    keras = session.keras
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if session.mixed else "float32")
    try:
        with session.tf.device(session.device):
            if state:
                reporter.message(f"resuming after epoch {state['epoch']} from {ckpt}")
                try:
                    model = keras.models.load_model(ckpt / state["last"], safe_mode=True)
                except Exception as exc:  # a damaged checkpoint: say where, not a traceback
                    raise FinetuneError(f"cannot load the checkpoint {ckpt / state['last']} "
                                        f"({exc}); pass --restart to start over") from exc
            else:
                keras.utils.set_random_seed(config.seed)
                model = build_network(config.base, config.input_size, **session.net_kwargs)
                model.compile(optimizer=keras.optimizers.Adam(config.lr,
                                                              clipnorm=config.clipnorm),
                              loss="binary_crossentropy")
            if "GPU" not in session.device:
                # XLA compiles MobileNetV2's training step on a CPU for a minute, then runs it
                # 6-30x slower than plain graph mode (TensorFlow 2.21). On a GPU Keras decides.
                model.jit_compile = False
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return model


def _fresh(crops: np.ndarray, sources: np.ndarray, data: TrainingData,
           rng: np.random.Generator) -> np.ndarray:
    """The batch with every self-blend twin replaced by a new blend of its source crop."""
    crops = np.array(crops, copy=True)
    for k in np.flatnonzero(sources >= 0):
        crops[k] = fresh_blend(data.crops.crops[sources[k]], data.crops.spec, rng)
    return crops


def _train_epoch(session: Session, model: Any, data: TrainingData, config: FinetuneConfig,
                 epoch: int, reporter: Reporter) -> tuple[float, int]:
    """One pass over the training rows in full, shuffled batches (seeded by epoch, so a
    resumed run draws what an uninterrupted one would); the weighted mean loss and the crops
    seen."""
    batch = config.batch_size
    train_rows = data.train_rows
    n_batches = max(1, math.ceil(len(train_rows) / batch))
    rng = np.random.default_rng([config.seed, epoch])
    session.keras.utils.set_random_seed((config.seed * 100_003 + epoch) % 2**31)
    order = rng.permutation(train_rows)
    if len(order) % batch:  # full batches only: one traced shape, no 1-crop BatchNorm
        extra = rng.choice(train_rows, batch - len(order) % batch, replace=True)
        order = np.concatenate([order, extra])
    reporter.start_epoch(epoch, config.epochs, n_batches)
    losses, weights = [], []
    with session.tf.device(session.device):
        for b in range(len(order) // batch):
            rows = order[b * batch:(b + 1) * batch]
            crops = data.crops.crops[rows]
            if config.fresh_blends:
                crops = _fresh(crops, data.blend_source[rows], data, rng)
            if config.augment.active:
                crops = config.augment.apply(crops, rng)
            w = data.w_train[np.searchsorted(train_rows, rows)]
            if config.schedule != "constant":
                model.optimizer.learning_rate.assign(
                    config.learning_rate(epoch - 1 + b / n_batches))
            loss = model.train_on_batch(crops.astype(np.float32), data.y_row[rows],
                                        sample_weight=w)
            loss = float(np.asarray(loss).ravel()[0])
            losses.append(loss)
            weights.append(float(w.sum()))
            reporter.batch(b + 1, loss)
    return float(np.average(losses, weights=weights)), len(order)


def _validate(session: Session, model: Any, data: TrainingData,
              config: FinetuneConfig) -> dict[str, float]:
    """Validation loss, frame AUC and video AUC (the mean frame score per item), and the
    value early stopping watches; NaN without validation rows."""
    val_rows = data.val_rows
    if not len(val_rows):
        return dict.fromkeys(("loss", "auc", "video-auc", "value"), float("nan"))
    batch = config.batch_size
    with session.tf.device(session.device):
        val_p = np.concatenate([
            np.asarray(model.predict_on_batch(
                data.crops.crops[val_rows[i:i + batch]].astype(np.float32))).ravel()
            for i in range(0, len(val_rows), batch)]).astype(np.float64)
    y_val = data.y_row[val_rows]
    uniq, inverse = np.unique(data.crops.item[val_rows], return_inverse=True)
    video_p = np.bincount(inverse, weights=val_p) / np.bincount(inverse)
    out = {"loss": balanced_log_loss(y_val, val_p, data.w_val), "auc": auc(y_val, val_p),
           "video-auc": auc(data.crops.labels[uniq], video_p)}
    out["value"] = out[config.monitor]
    return out


def _improved(value: float, best: float, monitor: str, validated: bool) -> bool:
    """Whether an epoch is the best so far (every epoch is, without validation)."""
    if not validated:
        return True
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value < best if monitor == "loss" else value > best


def _metadata(config: FinetuneConfig, data: TrainingData, selection: Any,
              progress: Progress) -> dict:
    """The provenance stored inside the model file and beside it."""
    crops, split = data.crops, data.split
    return {
        "format": FINETUNED_FORMAT, "base": config.base,
        "base_weights_sha256": BASES[config.base].sha256,
        "input_size": config.input_size, "crop_margin": crops.spec.margin,
        "stored_crop_size": crops.stored.size, "upsampled": crops.upsampled,
        "embedding_layer": EMBEDDING_LAYER, "embedding_dim": config.embedding_dim,
        "input": "RGB float 0..255 (normalised inside the model)",
        "training_cache": data.fingerprint, "selection": selection.to_dict(),
        "config": config.to_dict(), "epochs_run": progress.epoch,
        "best_epoch": progress.best_epoch, "monitor": config.monitor,
        "best_value": progress.best_value, "val_groups": split.val_groups,
        "val_uses_self_blend": split.val_uses_self_blend, "train_items": len(split.train),
        "val_items": len(split.val), "history": progress.history, "seed": config.seed,
        "versions": run_versions(),
        "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def _run_epoch(session: Session, model: Any, data: TrainingData, config: FinetuneConfig,
               progress: Progress, reporter: Reporter, files: tuple[Path, Path, dict, Any]
               ) -> None:
    """Train and validate one epoch, record it in ``progress`` and write its files."""
    ckpt, out_path, settings, selection = files
    progress.epoch += 1
    epoch = progress.epoch
    t0 = time.perf_counter()
    train_loss, seen = _train_epoch(session, model, data, config, epoch, reporter)
    val = _validate(session, model, data, config)
    improved = _improved(val["value"], progress.best_value, config.monitor,
                         bool(len(data.val_rows)))
    if improved:
        progress.best_epoch, progress.best_value = epoch, val["value"]
    seconds = time.perf_counter() - t0
    log = EpochLog(epoch=epoch, train_loss=train_loss, val_loss=val["loss"], val_auc=val["auc"],
                   val_video_auc=val["video-auc"], seconds=seconds, improved=bool(improved),
                   crops_per_second=seen / seconds if seconds else 0.0)
    progress.history.append(log.to_dict())
    state = {"format": STATE_FORMAT, "epoch": epoch, "last": f"epoch-{epoch:04d}.keras",
             "best_epoch": progress.best_epoch, "best_value": progress.best_value,
             "history": progress.history, "settings": settings}
    save_epoch(ckpt, out_path, model=model,
               best_copy=session.export(model, config) if improved else None,
               metadata=_metadata(config, data, selection, progress), state=state)
    reporter.end_epoch(log)


def finetune(cache_path: Path | str, out_path: Path | str, config: FinetuneConfig | None = None,
             *, selection=None, groups: Sequence[str] | None = None, device: str = "auto",
             restart: bool = False,
             progress: Reporter | Callable[[EpochLog], None] | None = None,
             **overrides: Any) -> FinetuneResult:
    """Fine-tune ``config.base`` on the stored crops of ``cache_path``; the best model (by
    ``config.monitor`` on the validation groups) goes to ``out_path`` (``.keras``).

    Keyword ``overrides`` replace fields of ``config`` (``finetune(c, o, epochs=2, lr=1e-3)``).
    Running again with the same arguments resumes after the last finished epoch of
    ``<out>.ckpt/`` (only ``epochs`` and ``patience`` may change; ``restart`` starts over).
    ``progress`` is a :class:`Reporter` or a callable given each :class:`EpochLog`.
    """
    from fakeprobe.classifiers.data import Selection

    started = time.perf_counter()
    try:
        config = replace(config or FinetuneConfig(), **overrides)
    except TypeError as exc:
        raise FinetuneError(str(exc)) from None
    reporter = _reporter(progress)
    selection = selection or Selection()
    cache_path, out_path = Path(cache_path), Path(out_path)
    if out_path.suffix != ".keras":
        raise FinetuneError(f"{out_path}: the model file must end in .keras")
    reporter.message(f"reading crops from {cache_path}")
    data = _training_data(cache_path, config, selection, groups)
    config = replace(config, input_size=data.crops.spec.size)
    settings = _settings(config, data, selection, groups)
    ckpt = checkpoint_dir(out_path)
    state = load_state(ckpt, settings, restart)
    done = Progress.from_state(state)
    resumed_from = done.epoch
    session = _session(config, device, data.warnings)
    ckpt.mkdir(parents=True, exist_ok=True)
    validated = bool(len(data.val_rows))
    stopped = (validated and done.best_epoch > 0
               and done.epoch - done.best_epoch >= config.patience)
    model = None
    if done.epoch < config.epochs and not stopped:
        model = _model(session, config, state, ckpt, reporter)
    try:
        while done.epoch < config.epochs and not stopped:
            _run_epoch(session, model, data, config, done, reporter,
                       (ckpt, out_path, settings, selection))
            stopped = validated and done.epoch - done.best_epoch >= config.patience
    finally:
        clear_temporary(ckpt)
    finish(ckpt, out_path, done.epoch, done.history, config.monitor)
    return FinetuneResult(
        model_path=str(out_path), checkpoint_dir=str(ckpt), base=config.base,
        input_size=config.input_size, crop_margin=data.crops.spec.margin,
        embedding_dim=config.embedding_dim, epochs_run=done.epoch, resumed_from=resumed_from,
        best_epoch=done.best_epoch, best_value=done.best_value, monitor=config.monitor,
        stopped_early=bool(stopped and done.epoch < config.epochs), history=done.history,
        train_items=len(data.split.train), val_items=len(data.split.val),
        train_crops=len(data.train_rows), val_crops=len(data.val_rows),
        val_groups=data.split.val_groups, val_uses_self_blend=data.split.val_uses_self_blend,
        device=session.device, mixed_precision=session.mixed,
        seconds=time.perf_counter() - started, warnings=data.warnings)
