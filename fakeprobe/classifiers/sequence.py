"""A temporal head: a small GRU over each face track's sequence of per-frame features.

The cross-validation works on frame rows, so the head does too: ``fit`` and ``predict_proba``
take frame rows plus, per row, the id of its sequence (one face track of one video) and its
position in that sequence (the frame index). Rows are gathered into padded, masked sequences;
every row of a sequence gets the sequence's probability, so frame-to-video aggregation and the
metrics work unchanged. Without sequence ids every row is a sequence of one frame.

Per-frame scores (``explain``'s and ``predict``'s timelines): :meth:`SequenceGRU.frame_proba`
gives each row the probability of its sequence's *prefix* ending at that row: the same
network read after every step (the GRU's per-step state through the same output layer,
padding masked), so a row's score depends on its frame and the frames before it only, and the
last row's score is the whole sequence's. :func:`frame_scores` gives a fitted pipeline's
per-row P(fake) that way when its head has ``frame_proba``.

The fitted network is kept as plain data (``weights_``: a list of numpy arrays; the
architecture is given by the constructor's numbers) and rebuilt on each call to
``predict_proba``, so a model file never holds a Keras object. TensorFlow is imported inside
``fit`` and ``predict_proba`` only.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GroupShuffleSplit
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from fakeprobe.errors import ConfigError


def _binary_classes(y: np.ndarray) -> np.ndarray:
    kind = type_of_target(y, input_name="y", raise_unknown=True)
    if kind != "binary":
        raise ConfigError(f"Only binary classification is supported. The type of the target "
                          f"is {kind}.")
    classes = unique_labels(y)
    if len(classes) < 2:
        raise ConfigError(f"a detector needs 2 classes to train; y holds 1 class "
                          f"({classes[0]!r})")
    return classes


def pack_sequences(X: np.ndarray, sequence: np.ndarray | None, position: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded sequences ``(n_sequences, longest, n_features)``, their mask, and per row the
    index of its sequence. Rows of one sequence are ordered by ``position`` (stable)."""
    n = len(X)
    sequence = np.arange(n) if sequence is None else np.asarray(sequence)
    position = np.arange(n) if position is None else np.asarray(position)
    if len(sequence) != n or len(position) != n:
        raise ConfigError(f"sequence and position need one value per row ({n})")
    _, inverse = np.unique(sequence, return_inverse=True)
    inverse = inverse.ravel()
    counts = np.bincount(inverse)
    order = np.lexsort((np.arange(n), position, inverse))
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = inverse[order]
    slot = np.arange(n) - start[owner]
    packed = np.zeros((len(counts), int(counts.max()) if n else 0, X.shape[1]), np.float32)
    mask = np.zeros(packed.shape[:2], bool)
    packed[owner, slot] = X[order]
    mask[owner, slot] = True
    return packed, mask, inverse


class SequenceGRU(ClassifierMixin, BaseEstimator):
    """GRU over padded, masked face-track sequences, then a logistic output.

    ``sample_weight`` per row is summed per sequence (with the balanced frame weights, every
    video then counts once). Early stopping watches the loss on ``validation_fraction`` of the
    sequences, split by ``groups`` when given (a person never on both sides), else by sequence.
    """

    #: fit and predict_proba take per-row ``sequence`` / ``position`` (see heads.predict_params)
    takes_sequences = True

    def __init__(self, units: int = 32, dropout: float = 0.1, learning_rate: float = 5e-3,
                 max_epochs: int = 80, patience: int = 10, batch_size: int = 32,
                 validation_fraction: float = 0.2, random_state: int | None = 0) -> None:
        self.units = units
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _network(self, n_features: int, per_step: bool = False):
        """The network; ``per_step``: the output after every step (same weights)."""
        from fakeprobe.core.tf import import_tensorflow

        import_tensorflow()
        import keras

        values = keras.Input((None, n_features), name="frames")
        mask = keras.Input((None,), dtype="bool", name="mask")
        hidden = keras.layers.GRU(self.units, dropout=self.dropout,
                                  return_sequences=per_step)(values, mask=mask)
        output = keras.layers.Dense(1, activation="sigmoid")(hidden)
        return keras.Model([values, mask], output)

    def fit(self, X, y, sample_weight=None, sequence=None, position=None, groups=None):
        X, y = validate_data(self, X, y, dtype=np.float32)
        self.classes_ = _binary_classes(y)
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64,
                                       ensure_non_negative=True)
        if not weights.sum() > 0:
            raise ConfigError("Sample weights must contain at least one non-zero number.")
        packed, mask, owner = pack_sequences(X, sequence, position)
        target = np.zeros(len(packed))
        np.maximum.at(target, owner, (y == self.classes_[1]).astype(float))
        seq_weight = np.bincount(owner, weights=weights, minlength=len(packed))
        seq_weight = seq_weight * len(seq_weight) / max(seq_weight.sum(), 1e-12)
        seq_groups = np.arange(len(packed))
        if groups is not None:
            seq_groups = np.asarray(groups)[np.unique(owner, return_index=True)[1]]

        from fakeprobe.core.tf import import_tensorflow

        import_tensorflow()
        import keras

        keras.utils.set_random_seed(0 if self.random_state is None else self.random_state)
        network = self._network(X.shape[1])
        network.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                        loss="binary_crossentropy")
        train, valid = self._validation_split(target, seq_groups)
        callbacks, validation = [], None
        if valid is not None:
            validation = ([packed[valid], mask[valid]], target[valid], seq_weight[valid])
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=self.patience, restore_best_weights=True))
        history = network.fit([packed[train], mask[train]], target[train],
                              sample_weight=seq_weight[train], validation_data=validation,
                              epochs=self.max_epochs, batch_size=self.batch_size,
                              shuffle=True, callbacks=callbacks, verbose=0)
        self.n_epochs_ = len(history.history["loss"])
        self.weights_ = [np.asarray(w, np.float32) for w in network.get_weights()]
        return self

    def _validation_split(self, target: np.ndarray, groups: np.ndarray):
        everything = np.arange(len(target))
        if (self.validation_fraction <= 0 or len(np.unique(groups)) < 5
                or len(np.unique(target)) < 2):
            return everything, None
        splitter = GroupShuffleSplit(n_splits=10, test_size=self.validation_fraction,
                                     random_state=self.random_state)
        for train, valid in splitter.split(everything, target, groups):
            if len(np.unique(target[train])) == 2 and len(np.unique(target[valid])) == 2:
                return train, valid
        return everything, None

    def predict_proba(self, X, sequence=None, position=None):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        packed, mask, owner = pack_sequences(X, sequence, position)
        network = self._network(X.shape[1])
        network.set_weights(self.weights_)
        fake = np.zeros(len(packed))
        for start in range(0, len(packed), 256):
            part = slice(start, start + 256)
            fake[part] = np.asarray(network([packed[part], mask[part]], training=False)
                                    ).ravel()
        fake = fake[owner].astype(float)
        return np.column_stack([1.0 - fake, fake])

    def frame_proba(self, X, sequence=None, position=None):
        """Per row, the probabilities of its sequence's prefix ending at that row (columns
        follow ``classes_``): the row's score given its frame and the earlier ones. The last
        row of a sequence gets :meth:`predict_proba`'s value."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=np.float32)
        packed, mask, owner = pack_sequences(X, sequence, position)
        slot = _row_slots(owner, position)
        network = self._network(X.shape[1], per_step=True)
        network.set_weights(self.weights_)
        steps = np.zeros(packed.shape[:2])
        for start in range(0, len(packed), 256):
            part = slice(start, start + 256)
            steps[part] = np.asarray(network([packed[part], mask[part]], training=False)
                                     ).reshape(len(packed[part]), -1)
        fake = steps[owner, slot].astype(float)
        return np.column_stack([1.0 - fake, fake])

    def predict(self, X, sequence=None, position=None):
        proba = self.predict_proba(X, sequence=sequence, position=position)
        return self.classes_[(proba[:, 1] >= 0.5).astype(int)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        tags.non_deterministic = False
        return tags


def _row_slots(owner: np.ndarray, position: np.ndarray | None) -> np.ndarray:
    """Per row, its step in its packed sequence (as :func:`pack_sequences` places it)."""
    n = len(owner)
    position = np.arange(n) if position is None else np.asarray(position)
    order = np.lexsort((np.arange(n), position, owner))
    counts = np.bincount(owner) if n else np.zeros(0, int)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    slot = np.empty(n, int)
    slot[order] = np.arange(n) - start[owner[order]]
    return slot


def frame_scores(pipeline, X: np.ndarray, video: np.ndarray, track: np.ndarray,
                 frame_index: np.ndarray) -> np.ndarray | None:
    """Per row P(fake) of the prefix of its face track ending at that row, for a fitted
    pipeline whose head has ``frame_proba`` (the GRU); ``None`` for any other head, whose
    row scores are per frame already."""
    head = pipeline.steps[-1][1]
    if not hasattr(head, "frame_proba"):
        return None
    X = pipeline[:-1].transform(X) if len(pipeline.steps) > 1 else X
    proba = head.frame_proba(X, sequence=sequence_ids(video, track), position=frame_index)
    return proba[:, list(head.classes_).index(1)]


def sequence_ids(video: np.ndarray, track: np.ndarray) -> np.ndarray:
    """One id per (video, face track) pair."""
    pairs = np.stack([np.asarray(video, np.int64), np.asarray(track, np.int64)], axis=1)
    return np.unique(pairs, axis=0, return_inverse=True)[1].ravel()


__all__ = ["SequenceGRU", "frame_scores", "pack_sequences", "sequence_ids"]
