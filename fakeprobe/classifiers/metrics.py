"""Binary detection metrics at a threshold, with ``fake`` (1) as the positive class.

Every function takes true labels (0 real, 1 fake) and scores (the probability of fake). Metrics
that need both classes (ROC-AUC, PR-AUC, EER) are ``None`` when one class is absent, never a
made-up number.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

from fakeprobe.errors import ConfigError

#: Probabilities are clipped to [EPS, 1 - EPS] for the log loss, so that one confident mistake
#: costs at most -log(EPS) = 13.8 nats instead of infinity.
LOG_LOSS_EPS = 1e-6


def equal_error_rate(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, float] | None:
    """(EER, threshold): where the false-positive and false-negative rates meet on the ROC
    curve, interpolated linearly between its points; None with a single class."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return None
    fpr, tpr, thresholds = skm.roc_curve(y_true, scores)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    k = int(np.argmax(diff >= 0))
    if k == 0 or diff[k] == 0:
        return float(fpr[k]), float(min(thresholds[k], 1.0))
    w = -diff[k - 1] / (diff[k] - diff[k - 1])
    eer = fpr[k - 1] + w * (fpr[k] - fpr[k - 1])
    t_lo, t_hi = min(thresholds[k - 1], 1.0), min(thresholds[k], 1.0)
    return float(eer), float(t_lo + w * (t_hi - t_lo))


def youden_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The threshold maximising TPR - FPR (balanced accuracy); 0.5 with a single class."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return 0.5
    # every distinct score is a threshold, so that the next one down is the next score
    fpr, tpr, thresholds = skm.roc_curve(y_true, scores, drop_intermediate=False)
    best = int(np.argmax(tpr - fpr))
    upper = min(float(thresholds[best]), 1.0)
    lower = float(thresholds[best + 1]) if best + 1 < len(thresholds) else 0.0
    return (upper + lower) / 2.0  # midway to the next score: robust to ties at the edge


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
                   ) -> dict[str, Any]:
    """Every metric of a scored set at ``threshold`` (score >= threshold means fake)."""
    y_true = np.asarray(y_true, dtype=int)
    scores = np.asarray(scores, dtype=float)
    if len(y_true) != len(scores):
        raise ConfigError("labels and scores differ in length")
    predicted = (scores >= threshold).astype(int)
    tn = int(((y_true == 0) & (predicted == 0)).sum())
    fp = int(((y_true == 0) & (predicted == 1)).sum())
    fn = int(((y_true == 1) & (predicted == 0)).sum())
    tp = int(((y_true == 1) & (predicted == 1)).sum())
    both = len(np.unique(y_true)) == 2
    clipped = np.clip(scores, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    eer = equal_error_rate(y_true, scores) if both else None
    recall = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "n_fake": int(y_true.sum()),
        "n_real": int(len(y_true) - y_true.sum()),
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, len(y_true)),
        "balanced_accuracy": (None if recall is None or specificity is None
                              else (recall + specificity) / 2),
        "precision": _ratio(tp, tp + fp),
        "recall": recall,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "specificity": specificity,
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, fn + tp),
        "roc_auc": float(skm.roc_auc_score(y_true, scores)) if both else None,
        "pr_auc": float(skm.average_precision_score(y_true, scores)) if both else None,
        "log_loss": (float(-np.mean(y_true * np.log(clipped) + (1 - y_true)
                                    * np.log(1 - clipped))) if len(y_true) else None),
        "eer": eer[0] if eer else None,
        "eer_threshold": eer[1] if eer else None,
        "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
    return out


METRIC_NAMES = ("roc_auc", "pr_auc", "log_loss", "eer", "accuracy", "balanced_accuracy",
                "precision", "recall", "f1", "specificity", "fpr", "fnr")


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for a table: '-' for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
