"""The figures of a report (:mod:`fakeprobe.evaluation.report`), each returned as PNG bytes,
and the face thumbnails its timelines show.

matplotlib is imported inside the functions (the CLI must start fast) and every figure is drawn
on its own :class:`matplotlib.figure.Figure` with the Agg backend: no display, no pyplot state,
nothing left open. Missing values are expected everywhere: a one-class subset has no ROC curve
(``None`` AUC), an image has no timestamp, a series may be empty; such cases are drawn as a note
in the figure, never as an error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Colours of the two classes in every figure.
REAL_COLOUR = "#2c7fb8"
FAKE_COLOUR = "#d7301f"
#: Bins of the reliability diagram and of the score histograms (equal width on 0..1).
CALIBRATION_BINS = 10
HISTOGRAM_BINS = 20


@dataclass
class Series:
    """Labels (0 real, 1 fake) and fake scores of one head x feature set at one level."""

    label: str
    colour: str
    y: np.ndarray
    scores: np.ndarray
    roc_auc: float | None = None
    pr_auc: float | None = None
    thresholds: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def both_classes(self) -> bool:
        return len(np.unique(self.y)) == 2


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig


def to_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (no metadata: the report must not name any URL)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None},
                facecolor="white")
    return buffer.getvalue()


def palette(n: int) -> list[str]:
    """``n`` distinct colours (tab10, then tab20 beyond ten series)."""
    import matplotlib
    from matplotlib.colors import to_hex

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [to_hex(cmap(i % cmap.N)) for i in range(max(n, 1))]


def _auc_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10,
            color="#555555", wrap=True)


def roc_pr(series: Sequence[Series], level: str) -> bytes:
    """ROC and precision-recall curves, one line per series, AUCs in the legends."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    fig = _figure(11, 4.6)
    roc, pr = fig.subplots(1, 2)
    roc.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="chance")
    drawn = 0
    prevalence = []
    for s in series:
        if not s.both_classes:
            roc.plot([], [], color=s.colour, label=f"{s.label} (one class: no curve)")
            pr.plot([], [], color=s.colour, label=f"{s.label} (one class: no curve)")
            continue
        fpr, tpr, _ = roc_curve(s.y, s.scores)
        roc.plot(fpr, tpr, color=s.colour, lw=1.8, label=f"{s.label}  AUC {_auc_text(s.roc_auc)}")
        precision, recall, _ = precision_recall_curve(s.y, s.scores)
        pr.step(recall, precision, where="post", color=s.colour, lw=1.8,
                label=f"{s.label}  AP {_auc_text(s.pr_auc)}")
        prevalence.append(float(np.mean(s.y)))
        drawn += 1
    if prevalence:
        base = float(np.mean(prevalence))
        pr.axhline(base, ls=":", color="grey", lw=1, label=f"chance (fake share {base:.2f})")
    if not drawn:
        _note(roc, "no series holds both classes")
        _note(pr, "no series holds both classes")
    n = f"{len(series[0].y)} {level}s" if series else ""
    roc.set(xlabel="false positive rate (reals called fake)",
            ylabel="true positive rate (fakes caught)", xlim=(0, 1), ylim=(0, 1.01),
            title=f"ROC, {level} level ({n})")
    pr.set(xlabel="recall (fakes caught)", ylabel="precision (called fake that are fake)",
           xlim=(0, 1), ylim=(0, 1.02), title=f"Precision-recall, {level} level")
    for ax in (roc, pr):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right" if ax is roc else "lower left")
        ax.set_aspect("equal" if ax is roc else "auto")
    return to_png(fig)


def _reliability(y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean score, share of fakes, count) per non-empty equal-width bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    keep = counts > 0
    mean_score = np.bincount(which, weights=scores, minlength=bins)[keep] / counts[keep]
    share = np.bincount(which, weights=y, minlength=bins)[keep] / counts[keep]
    return mean_score, share, counts[keep]


def calibration(levels: Sequence[tuple[str, Sequence[Series]]]) -> bytes:
    """Reliability diagrams (one panel per level): predicted P(fake) against the observed share
    of fakes per score bin; marker area grows with the bin's count."""
    fig = _figure(11, 4.6)
    axes = np.atleast_1d(fig.subplots(1, len(levels)))
    for ax, (level, series) in zip(axes, levels):
        ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfectly calibrated")
        for s in series:
            if not len(s.y):
                continue
            mean_score, share, counts = _reliability(s.y.astype(float), s.scores)
            sizes = 12 + 150 * counts / counts.max()
            ax.plot(mean_score, share, color=s.colour, lw=1.4, label=s.label)
            ax.scatter(mean_score, share, s=sizes, color=s.colour, alpha=0.6, edgecolors="none")
        ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel="predicted P(fake) (bin mean)",
               ylabel="observed share of fakes",
               title=f"Calibration, {level} level ({CALIBRATION_BINS} bins)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    return to_png(fig)


def distributions(series: Sequence[Series]) -> bytes:
    """Video score histograms of reals and fakes, one small panel per series, with the fold
    thresholds (their mean as a dashed line, their range shaded)."""
    n = max(len(series), 1)
    cols = 2 if n in (2, 4) else min(n, 3)
    rows = math.ceil(n / cols)
    fig = _figure(4.6 * cols, 2.9 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    edges = np.linspace(0, 1, HISTOGRAM_BINS + 1)
    for ax, s in zip(axes, series):
        for code, name, colour in ((0, "real", REAL_COLOUR), (1, "fake", FAKE_COLOUR)):
            values = s.scores[s.y == code]
            ax.hist(values, bins=edges, color=colour, alpha=0.3, histtype="stepfilled")
            ax.hist(values, bins=edges, color=colour, lw=1.6, histtype="step",
                    label=f"{name} ({len(values)})")
        if len(s.thresholds):
            lo, hi, mean = (float(np.min(s.thresholds)), float(np.max(s.thresholds)),
                            float(np.mean(s.thresholds)))
            if hi > lo:
                ax.axvspan(lo, hi, color="black", alpha=0.07)
            ax.axvline(mean, color="black", ls="--", lw=1.2, label=f"threshold {mean:.2f}")
        ax.set(xlim=(0, 1), xlabel="video P(fake)", ylabel="items")
        ax.set_title(f"{s.label}  (AUC {_auc_text(s.roc_auc)})", fontsize=10)
        ax.legend(fontsize=7.5, loc="upper center")
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(series):]:
        ax.set_axis_off()
    return to_png(fig)


def confusion(matrix: dict[str, int], title: str) -> bytes:
    """A 2x2 heatmap: true class by row, predicted by column, counts and row shares."""
    counts = np.array([[matrix.get("tn", 0), matrix.get("fp", 0)],
                       [matrix.get("fn", 0), matrix.get("tp", 0)]], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = _figure(3.3, 3.0)
    ax = fig.subplots()
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(2):
        for j in range(2):
            ax.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center",
                    va="center", fontsize=12, color="white" if shares[i, j] > 0.55 else "black")
    ax.set_xticks([0, 1], ["real", "fake"])
    ax.set_yticks([0, 1], ["real", "fake"])
    ax.set(xlabel="predicted", ylabel="true")
    ax.set_title(title, fontsize=9.5)
    return to_png(fig)


def cross_bars(datasets: Sequence[str], in_domain: dict[str, bool],
               bars: Sequence[tuple[str, str, list[float | None]]]) -> bytes:
    """Video ROC-AUC per dataset (all its items), grouped bars, one colour per head x feature
    set; in-domain datasets shaded and named so. ``bars``: (label, colour, AUC per dataset)."""
    n_sets = max(len(datasets), 1)
    fig = _figure(max(6.0, 1.6 + 1.35 * n_sets * max(1, len(bars)) ** 0.5), 4.2)
    ax = fig.subplots()
    width = 0.8 / max(len(bars), 1)
    x = np.arange(len(datasets))
    for k, name in enumerate(datasets):
        if in_domain.get(name):
            ax.axvspan(k - 0.45, k + 0.45, color="#2ca25f", alpha=0.10, lw=0)
    for b, (label, colour, values) in enumerate(bars):
        offsets = x - 0.4 + width * (b + 0.5)
        heights = [v if v is not None else 0.0 for v in values]
        drawn = ax.bar(offsets, heights, width * 0.92, color=colour, label=label)
        for rect, value in zip(drawn, values):
            text = "n/a" if value is None else f"{value:.2f}"
            ax.text(rect.get_x() + rect.get_width() / 2, (value or 0) + 0.01, text,
                    ha="center", va="bottom", fontsize=7, rotation=90 if len(bars) > 3 else 0)
    ax.axhline(0.5, color="grey", ls=":", lw=1)
    ax.set_xticks(x, [f"{d}\n(in-domain)" if in_domain.get(d) else f"{d}\n(out-of-domain)"
                      for d in datasets], fontsize=8.5)
    ax.set(ylim=(0, 1.12), ylabel="video ROC-AUC", title="Video ROC-AUC per dataset "
           "(green: trained on)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_png(fig)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _strip(images: Sequence[np.ndarray | None], size: int, gap: int = 6) -> np.ndarray:
    """Thumbnails side by side on white (a light grey tile where one is missing)."""
    import cv2

    strip = np.full((size, len(images) * (size + gap) - gap, 3), 255, np.uint8)
    for k, image in enumerate(images):
        left = k * (size + gap)
        if image is None:
            strip[:, left:left + size] = 225
        else:
            strip[:, left:left + size] = (image if image.shape[0] == size else cv2.resize(
                image, (size, size), interpolation=cv2.INTER_AREA))[..., :3]
    return strip


def timeline(info: dict[str, Any], tracks: dict[int, tuple[np.ndarray, np.ndarray]],
             x_label: str, threshold: float | None,
             top: Sequence[tuple[float, float, np.ndarray | None, str]]) -> bytes:
    """One item's per-frame fake score over time (a line per face track) with the threshold,
    and thumbnails of its most fake frames (numbered 1, 2, ... on the line).

    ``tracks``: track -> (x, score, smoothed score or None) sorted by x; ``top``: (x, score,
    RGB crop or None, caption). When the run smoothed scores before aggregating, the smoothed
    series is the line and the raw frame scores are drawn faint.
    A single-frame item (an image) gets its thumbnail and score only. Axes are placed by hand
    and the thumbnails drawn as one strip: a figure costs a quarter of a second, not one.
    """
    n_frames = sum(len(track[0]) for track in tracks.values())
    single = n_frames <= 1
    colour = FAKE_COLOUR if info["label"] == "fake" else REAL_COLOUR
    called = ""
    if info.get("threshold") is not None:
        called = "fake" if info["score"] >= info["threshold"] else "real"
    if single:
        fig = _figure(6.4, 2.6)
        fig.set_layout_engine("none")
        fig.text(0.01, 0.97, _short(info["id"], 62), fontsize=9.5, color=colour, va="top",
                 fontweight="bold")
        image_ax = fig.add_axes((0.03, 0.05, 0.36, 0.78))
        crop = top[0][2] if top else None
        if crop is None:
            _note(image_ax, "no thumbnail")
        else:
            image_ax.imshow(crop)
        image_ax.set_axis_off()
        lines = [f"true label: {info['label']}", f"score {info['score']:.3f}"]
        if called:
            lines.append(f"threshold {info['threshold']:.3f}: called {called}")
        lines.append(f"{info.get('dataset', '')} / {info.get('method', '')}")
        fig.text(0.43, 0.45, "\n".join(lines), va="center", fontsize=10)
        return to_png(fig)
    fig = _figure(12, 3.5)
    fig.set_layout_engine("none")
    fig.text(0.01, 0.975, _short(info["id"], 130), fontsize=10, color=colour, va="top",
             fontweight="bold")
    fig.text(0.01, 0.905, f"true: {info['label']}    video score {info['score']:.3f}"
             + (f" (threshold {info['threshold']:.3f}: called {called})" if called else "")
             + f"    {info.get('dataset', '')} / {info.get('method', '')}", fontsize=9.5,
             va="top", color="#333333")
    ax = fig.add_axes((0.05, 0.14, 0.47, 0.63))
    for (track, (x, score, smoothed)), line_colour in zip(sorted(tracks.items()),
                                                           palette(len(tracks))):
        name = f"track {track}" if len(tracks) > 1 else "frame score"
        if smoothed is None:
            ax.plot(x, score, marker="o", ms=3, lw=1.4, color=line_colour, label=name)
        else:  # raw frame scores faint, the smoothed series the run aggregated as the line
            ax.plot(x, score, marker="o", ms=3, lw=0.6, alpha=0.35, color=line_colour,
                    label=f"{name} (raw)")
            ax.plot(x, smoothed, lw=1.8, color=line_colour, label=f"{name} (smoothed)")
    if threshold is not None:
        ax.axhline(threshold, color="black", ls="--", lw=1.1, label=f"threshold {threshold:.2f}")
    ax.axhline(info["score"], color="#888888", ls=":", lw=1.1,
               label=f"video score {info['score']:.2f}")
    for k, (x, score, _, _) in enumerate(top, 1):
        ax.plot([x], [score], "o", ms=8, mfc="none", mec="black", mew=1.2)
        ax.annotate(str(k), (x, score), xytext=(0, 7), textcoords="offset points",
                    ha="center", fontsize=8.5, fontweight="bold")
    ax.set(ylim=(-0.02, 1.1), xlabel=x_label, ylabel="frame P(fake)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, frameon=False,
              borderaxespad=0.2, handlelength=2.2)
    if top:
        size = 128
        strip_ax = fig.add_axes((0.545, 0.04, 0.45, 0.74))
        strip_ax.imshow(_strip([t[2] for t in top], size))
        strip_ax.set_axis_off()
        for k, (_, _, crop, caption) in enumerate(top):
            middle = k * (size + 6) + size / 2
            strip_ax.text(middle, -5, f"{k + 1}: {caption}", ha="center", va="bottom",
                          fontsize=8)
            if crop is None:
                strip_ax.text(middle, size / 2, "no thumbnail", ha="center", va="center",
                              fontsize=8, color="#555555")
    return to_png(fig)


# --- face thumbnails of the timelines ---------------------------------------------------------

def face_thumbnails(record: dict[str, Any], wanted: dict[str, list[tuple[int, int]]],
                    size: int = 128) -> tuple[dict[str, dict[tuple[int, int], np.ndarray]], str]:
    """Aligned face crops (RGB) of ``wanted`` item id -> [(frame_index, track)], and a line
    saying where they came from or why some are missing.

    The scored cache (the record's ``eval_cache``, else its ``cache``) is opened read-only:
    its stored crops are used where it holds them (video rows), the other faces are re-aligned
    from frames re-read from the items' paths with the cached landmarks.
    """
    from fakeprobe.core.config import CONTEXT_MARGIN
    from fakeprobe.core.geometry import CropSpec
    from fakeprobe.errors import FakeprobeError
    from fakeprobe.features.cache import CacheReader

    found: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    notes: list[str] = []
    used = {"stored": 0, "re-read": 0}
    caches = [c.get("path") for c in (record.get("eval_cache"), record.get("cache"))
              if isinstance(c, dict) and c.get("path")]
    if not caches:
        return found, "none: the record names no cache."
    for cache_path in caches:
        missing = {vid: keys for vid, keys in wanted.items()
                   if len(found.get(vid, {})) < len(keys)}
        if not missing:
            break
        if not Path(cache_path).is_file():
            notes.append(f"cache {cache_path} not found")
            continue
        try:
            with CacheReader(cache_path) as reader:
                _cache_thumbnails(reader, missing, found, used, notes,
                                  CropSpec(size, CONTEXT_MARGIN))
        except FakeprobeError as exc:
            notes.append(str(exc))
    total = sum(len(k) for k in wanted.values())
    got = sum(len(v) for v in found.values())
    text = (f"{got} of {total} faces: {used['stored']} stored crops from the cache, "
            f"{used['re-read']} re-aligned from re-read frames.")
    if notes:
        text += " Missing: " + "; ".join(dict.fromkeys(notes))[:600] + "."
    if not got:
        text = "none could be made (" + ("; ".join(dict.fromkeys(notes)) or "no face") + ")."
    return found, text


def _cache_thumbnails(reader, wanted, found, used, notes, spec) -> None:
    from fakeprobe.features.crops import row_crops

    videos = reader.videos()
    index = {vid: i for i, vid in enumerate(videos["id"])}
    if not any(vid in index for vid in wanted):
        notes.append(f"{reader.path} holds none of the items")
        return
    frames = reader.frames(("frame_index", "track", "has_face"))
    keys: list[tuple[str, tuple[int, int]]] = []
    rows: list[int] = []
    for vid, asked in wanted.items():
        i = index.get(vid)
        if i is None:
            continue
        start, count = int(videos["row_start"][i]), int(videos["row_count"][i])
        lookup = {(int(frames["frame_index"][r]), int(frames["track"][r])): r
                  for r in range(start, start + count) if frames["has_face"][r]}
        for key in asked:
            if key in lookup and key not in found.get(vid, {}):
                keys.append((vid, key))
                rows.append(lookup[key])
    # thumbnails may be larger than the stored crops: scaled up rather than re-read
    got = row_crops(reader, rows, spec, upsample=True)
    for k, (vid, key) in enumerate(keys):
        if got.source[k]:
            found.setdefault(vid, {})[key] = got[spec][k]
            used["stored" if got.source[k] == "stored" else "re-read"] += 1
        else:
            notes.append(f"{vid}: {got.reasons[k]}")
