"""What a fine-tuning run reports while it runs and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol



@dataclass
class EpochLog:
    """One finished epoch. ``epoch`` counts from 1; validation fields are NaN without one."""

    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float
    val_video_auc: float
    seconds: float
    improved: bool
    crops_per_second: float

    def to_dict(self) -> dict:
        return asdict(self)




class Reporter(Protocol):
    """Receives progress; the CLI draws it. Every method is optional in spirit (see
    :class:`SilentReporter`)."""

    def message(self, text: str) -> None: ...

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None: ...

    def batch(self, done: int, loss: float) -> None: ...

    def end_epoch(self, log: EpochLog) -> None: ...


class SilentReporter:
    def message(self, text: str) -> None:
        pass

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        pass

    def batch(self, done: int, loss: float) -> None:
        pass

    def end_epoch(self, log: EpochLog) -> None:
        pass


class CallbackReporter(SilentReporter):
    """A reporter from a plain per-epoch callable."""

    def __init__(self, on_epoch: Callable[[EpochLog], None]) -> None:
        self.on_epoch = on_epoch

    def end_epoch(self, log: EpochLog) -> None:
        self.on_epoch(log)




@dataclass
class FinetuneResult:
    """What a run left: the model file, its checkpoint folder and the history of every epoch
    (of this and of earlier, resumed runs)."""

    model_path: str
    checkpoint_dir: str
    base: str
    input_size: int
    crop_margin: float
    embedding_dim: int
    epochs_run: int
    resumed_from: int  # epochs already done when this call started (0: a fresh run)
    best_epoch: int
    best_value: float
    monitor: str
    stopped_early: bool
    history: list[dict]
    train_items: int
    val_items: int
    train_crops: int
    val_crops: int
    val_groups: list[str]
    val_uses_self_blend: bool
    device: str
    mixed_precision: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
