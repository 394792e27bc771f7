"""How heads are judged and on what: the evaluation protocol, the item selection, the
frame-to-video aggregation, and the default feature set of a cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fakeprobe.classifiers.aggregate import Aggregation
from fakeprobe.classifiers.data import FrameData, Selection
from fakeprobe.training.cv import Roles
from fakeprobe.training.search import SEARCH_MODES
from fakeprobe.datasets import SELF_BLEND_METHOD
from fakeprobe.errors import FakeprobeError, InvalidOption

#: Choices of :attr:`Protocol.train_fakes`.
TRAIN_FAKES = ("all", "real", "self-blend")


def default_features(cache_path: Path | str) -> tuple[str, ...]:
    """The feature set a command uses when none is named: the cache's first backbone."""
    from fakeprobe.features.cache import CacheReader

    with CacheReader(cache_path) as cache:
        names = [b for b in cache.config.backbones if b in cache.feature_sets]
        names = names or list(cache.feature_sets)
    if not names:
        raise FakeprobeError(f"{cache_path}: holds no feature set yet")
    return (names[0],)


def feature_sets(values: Sequence[str | Sequence[str]]) -> list[tuple[str, ...]]:
    """Feature combinations as ``("a", "b")`` or ``"a+b"`` (joined sets are concatenated)."""
    return [tuple(v.split("+")) if isinstance(v, str) else tuple(v) for v in values]


@dataclass
class Protocol:
    """How a head is judged: grouped k-fold CV (default), a grouped hold-out, or another cache."""

    folds: int = 5
    holdout: float | None = None
    eval_cache: Path | None = None
    eval_selection: Selection | None = None
    search: str | None = None
    n_iter: int = 10
    random_state: int = 0
    smote: bool = False
    #: Only items this selection keeps are trained on (all are still split by group and
    #: scored): train on one dataset, read every other one as out-of-domain.
    train_selection: Selection | None = None
    #: Which fakes train: ``all``, ``real`` (true fakes only) or ``self-blend`` (pseudo-fakes
    #: made from the reals only). Pseudo-fakes are never scored.
    train_fakes: str = "all"
    #: Score pseudo-fakes too (data with no true fakes, such as the offline sample).
    score_self_blend: bool = False

    def __post_init__(self) -> None:
        if self.search is not None and self.search not in SEARCH_MODES:
            raise FakeprobeError(f"search must be one of {', '.join(SEARCH_MODES)}, got "
                                 f"{self.search!r}")
        if self.n_iter < 1:
            raise FakeprobeError(f"n_iter must be at least 1, got {self.n_iter}")
        if self.train_fakes not in TRAIN_FAKES:
            raise FakeprobeError(f"train fakes must be one of {', '.join(TRAIN_FAKES)}, got "
                                 f"{self.train_fakes!r}")

    @property
    def head_params(self) -> dict[str, Any]:
        return {"smote": True} if self.smote else {}

    def roles(self, data: FrameData, target: FrameData | None = None) -> Roles:
        """Which items of ``data`` may train and which of ``target`` are scored."""
        target = target if target is not None else data
        videos = data.videos
        label = data.video_labels
        pseudo = videos["method"] == SELF_BLEND_METHOD
        train = np.ones(data.n_videos, bool)
        if self.train_selection is not None:
            train &= np.array([self.train_selection.keeps(d, m, lab, g) for d, m, lab, g in
                               zip(videos["dataset"], videos["method"], videos["label"],
                                   videos["group"])], bool)
        if self.train_fakes == "real":
            train &= ~pseudo
        elif self.train_fakes == "self-blend":
            train &= ~((label == 1) & ~pseudo)
            if not (train & pseudo).any():
                raise FakeprobeError("--train-fakes self-blend: the training items hold no "
                                     "pseudo-fake (extract with --self-blend)")
        if len(np.unique(label[train & (label >= 0)])) < 2:
            raise FakeprobeError("the items allowed to train hold a single class")
        test = np.ones(target.n_videos, bool)
        if not self.score_self_blend:
            test &= target.videos["method"] != SELF_BLEND_METHOD
            if not (target.video_labels[test] == 1).any() and (~test).any():
                raise FakeprobeError("the only fakes to score are pseudo-fakes (self_blend); "
                                     "add true fakes, or pass --score-self-blend to measure "
                                     "how well blends are found")
        return Roles(train, test)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("eval_cache",):
            data[key] = str(data[key]) if data[key] is not None else None
        return data


def make_selection(datasets: Sequence[str] = (), methods: Sequence[str] = (),
                   exclude_datasets: Sequence[str] = (), exclude_methods: Sequence[str] = (),
                   exclude_groups: Sequence[str] = ()) -> Selection:
    """The items to use, by shell patterns over the dataset, method and group columns."""
    return Selection(datasets=tuple(datasets), methods=tuple(methods),
                     exclude_datasets=tuple(exclude_datasets),
                     exclude_methods=tuple(exclude_methods), exclude_groups=tuple(exclude_groups))


def make_aggregation(method: str = "mean", smoothing: str = "none", window: int = 5,
                     alpha: float = 0.3) -> Aggregation:
    """The frame-to-video rule; an unknown name is an :class:`InvalidOption`."""
    try:
        return Aggregation(method=method, smoothing=smoothing, window=window, alpha=alpha)
    except ValueError as exc:
        raise InvalidOption(str(exc)) from None


def make_protocol(folds: int = 5, holdout: float | None = None,
                  eval_cache: Path | str | None = None, search: str | None = None,
                  seed: int = 0, smote: bool = False, train_datasets: Sequence[str] = (),
                  train_methods: Sequence[str] = (), train_fakes: str = "all",
                  score_self_blend: bool = False, n_iter: int = 10) -> Protocol:
    """A :class:`Protocol` from plain arguments, as ``fit-*`` and ``compare`` take them;
    conflicting or unknown values are an :class:`InvalidOption` naming the option."""
    if search not in (None, *SEARCH_MODES):
        raise InvalidOption(f"use {', '.join(SEARCH_MODES)}", "--search")
    if holdout is not None and eval_cache is not None:
        raise InvalidOption("--holdout and --eval are two different evaluations; give one",
                            "--holdout")
    if train_fakes not in TRAIN_FAKES:
        raise InvalidOption(f"use {', '.join(TRAIN_FAKES)}", "--train-fakes")
    train_selection = None
    if train_datasets or train_methods:
        # reals always train; train_methods names the fake methods that may
        train_selection = Selection(datasets=tuple(train_datasets),
                                    methods=tuple(train_methods), real_any_method=True)
    return Protocol(folds=folds, holdout=holdout,
                    eval_cache=Path(eval_cache) if eval_cache is not None else None,
                    search=search, n_iter=n_iter, random_state=seed, smote=smote,
                    train_selection=train_selection, train_fakes=train_fakes,
                    score_self_blend=score_self_blend)
