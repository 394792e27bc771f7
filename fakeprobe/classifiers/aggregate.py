"""From frame scores to a video score: temporal smoothing, then aggregation.

A video's frames are grouped by face track and ordered by frame index; each track's score
sequence is smoothed, then aggregated; the video scores as its most fake track (a swapped face
is one person in the scene). Frames without a face have no score and are left out; a video with
no scored frame gets no score (NaN), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.ndimage import median_filter

from fakeprobe.errors import ConfigError

#: "confident" rule of the DFDC winner (Seferbekov): frames scoring above CONFIDENT_HIGH are
#: confident fakes; when they make up more than CONFIDENT_FAKE_SHARE of the frames, the video
#: scores as their mean. Otherwise, when frames below CONFIDENT_LOW make up more than
#: CONFIDENT_REAL_SHARE, the video scores as their mean. Otherwise it is the plain mean.
CONFIDENT_HIGH = 0.8
CONFIDENT_LOW = 0.2
CONFIDENT_FAKE_SHARE = 1 / 2.5  # 11 of 32 frames in the original
CONFIDENT_REAL_SHARE = 0.9
#: Share of the highest frame scores averaged by "topk".
TOPK_SHARE = 0.25
_EPS = 1e-6


def _mean(p: np.ndarray) -> float:
    return float(np.mean(p))


def _median(p: np.ndarray) -> float:
    return float(np.median(p))


def _topk(p: np.ndarray) -> float:
    k = max(1, int(np.ceil(TOPK_SHARE * len(p))))
    return float(np.mean(np.sort(p)[-k:]))


def _logit_mean(p: np.ndarray) -> float:
    q = np.clip(p, _EPS, 1 - _EPS)
    z = float(np.mean(np.log(q / (1 - q))))
    return float(1 / (1 + np.exp(-z)))


def _confident(p: np.ndarray) -> float:
    fakes, reals = p[p > CONFIDENT_HIGH], p[p < CONFIDENT_LOW]
    if len(fakes) > CONFIDENT_FAKE_SHARE * len(p):
        return float(np.mean(fakes))
    if len(reals) > CONFIDENT_REAL_SHARE * len(p):
        return float(np.mean(reals))
    return float(np.mean(p))


#: name -> (function, one-line description)
AGGREGATORS: dict[str, tuple[Callable[[np.ndarray], float], str]] = {
    "mean": (_mean, "mean of the frame scores"),
    "median": (_median, "median of the frame scores (robust to a few outliers)"),
    "topk": (_topk, f"mean of the top {TOPK_SHARE:.0%} frame scores (a short manipulation)"),
    "logit-mean": (_logit_mean, "mean in logit space (confident frames weigh more)"),
    "confident": (_confident, "DFDC winner's rule: mean of the confident fake frames when "
                  f"over {CONFIDENT_FAKE_SHARE:.0%} of frames, else of the confident real ones "
                  f"when over {CONFIDENT_REAL_SHARE:.0%}, else the mean"),
}


def smooth(scores: np.ndarray, method: str = "none", window: int = 5, alpha: float = 0.3
           ) -> np.ndarray:
    """Smooth a time-ordered score sequence.

    ``moving``: centred moving average over ``window`` frames (shrinking at the ends);
    ``exponential``: ``s_t = alpha * p_t + (1 - alpha) * s_{t-1}``; ``median``: median filter
    over ``window`` frames (edges repeat); ``none``: unchanged.
    """
    p = np.asarray(scores, dtype=float)
    if method == "none" or len(p) < 2:
        return p.copy()
    if method == "moving":
        half = window // 2
        cumsum = np.concatenate([[0.0], np.cumsum(p)])
        idx = np.arange(len(p))
        lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(p))
        return (cumsum[hi] - cumsum[lo]) / (hi - lo)
    if method == "exponential":
        out = np.empty_like(p)
        out[0] = p[0]
        for t in range(1, len(p)):
            out[t] = alpha * p[t] + (1 - alpha) * out[t - 1]
        return out
    if method == "median":
        return median_filter(p, size=window, mode="nearest")
    raise ConfigError(f"unknown smoothing {method!r}; choose one of: {', '.join(SMOOTHERS)}")


SMOOTHERS = ("none", "moving", "exponential", "median")


@dataclass(frozen=True)
class Aggregation:
    """How frame scores become a video score (stored in model files)."""

    method: str = "mean"
    smoothing: str = "none"
    window: int = 5
    alpha: float = 0.3

    def __post_init__(self) -> None:
        if self.method not in AGGREGATORS:
            raise ConfigError(f"unknown aggregator {self.method!r}; choose one of: "
                              f"{', '.join(AGGREGATORS)}")
        if self.smoothing not in SMOOTHERS:
            raise ConfigError(f"unknown smoothing {self.smoothing!r}; choose one of: "
                              f"{', '.join(SMOOTHERS)}")

    def track_score(self, frame_scores: np.ndarray) -> float:
        """Score of one track's time-ordered frame scores (NaN when empty)."""
        if len(frame_scores) == 0:
            return float("nan")
        smoothed = smooth(frame_scores, self.smoothing, self.window, self.alpha)
        return AGGREGATORS[self.method][0](smoothed)

    def video_scores(self, scores: np.ndarray, video: np.ndarray, frame_index: np.ndarray,
                     track: np.ndarray, n_videos: int) -> np.ndarray:
        """Per-video scores from per-row scores; NaN for videos with no scored row."""
        out = np.full(n_videos, np.nan)
        order = np.lexsort((frame_index, track, video))
        v, t, p = video[order], track[order], scores[order]
        if len(v) == 0:
            return out
        starts = np.flatnonzero(np.r_[True, (v[1:] != v[:-1]) | (t[1:] != t[:-1])])
        ends = np.r_[starts[1:], len(v)]
        for start, end in zip(starts, ends):
            value = self.track_score(p[start:end])
            vid = v[start]
            out[vid] = value if np.isnan(out[vid]) else max(out[vid], value)
        return out
