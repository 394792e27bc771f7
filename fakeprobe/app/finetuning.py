"""``finetune``: an ImageNet network trained on the face crops a cache stores, to use as a
feature set (``extract -b finetuned:NET.keras``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from fakeprobe.app._result import Wrapped
from fakeprobe.app.outputs import check_outputs
from fakeprobe.errors import InvalidOption


class FinetuneResult(Wrapped):
    """A fine-tuning run: the ``model_path`` written, the ``best_epoch`` and its validation
    ``best_value``, every epoch's ``history``, ``warnings``."""


def finetune(cache: Path | str, out: Path | str, *, augment: str | Sequence[str] | None = None,
             selection=None, device: str = "auto", restart: bool = False, force: bool = False,
             progress=None, **settings: Any) -> FinetuneResult:
    """Fine-tune an ImageNet network on the real and fake face crops stored in ``cache``
    (``extract --keep-crops``); the best epoch on validation is written to ``out`` (.keras),
    checkpoints beside it (running again resumes). ``settings`` are the fine-tuning config's
    fields (``base``, ``epochs``, ``lr``, ``input_size``...); ``augment``: ``"flip,jitter"``,
    a list of steps, or ``"none"``. Returns the run's result (``to_dict()`` for JSON)."""
    from fakeprobe.training.finetune import AugmentConfig, FinetuneConfig
    from fakeprobe.training.finetune import finetune as run_finetune

    check_outputs([(out, "keras", "--out")], [cache], force)
    if augment is not None:
        steps = augment.split(",") if isinstance(augment, str) else list(augment)
        steps = [s.strip() for s in steps if s.strip() and s.strip() != "none"]
        try:
            settings["augment"] = AugmentConfig.only(steps)
        except ValueError as exc:
            raise InvalidOption(str(exc), "--augment") from None
    try:
        config = FinetuneConfig(**settings)
    except TypeError as exc:
        raise InvalidOption(str(exc)) from None
    return FinetuneResult(run_finetune(cache, out, config, device=device, restart=restart,
                                       progress=progress, selection=selection))
