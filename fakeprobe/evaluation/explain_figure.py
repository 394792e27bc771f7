"""Pictures of an explanation: heat overlays on face crops and the one-figure summary of an item.

Rendering (:func:`render_explanation`) imports matplotlib inside the function and draws on an
Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from fakeprobe.evaluation.explain import VideoExplanation

#: Overlays: a heat of this much (per space) or more shows at full colour, whatever the item, so
#: that the map of a near-constant scorer (drops of 1e-4) is not blown up into noise.
MIN_HEAT_SCALE = {"proba": 0.02, "logit": 0.1}
#: The colour bar's label per space.
HEAT_UNITS = {"proba": "drop in P(fake) when hidden",
              "logit": "drop in log-odds of fake when hidden"}
#: Opacity of the colour map where the heat is at its top; cooler pixels are more transparent and
#: regions with no positive heat keep the plain face.
OVERLAY_ALPHA = 0.6
#: Display smoothing of the overlays: Gaussian sigma as a share of the stride (the heatmap itself
#: is left as measured).
OVERLAY_BLUR_FRACTION = 0.5
#: Colour map of the overlays (OpenCV's JET: blue cool, red hot; matplotlib's "jet" for the bar).
OVERLAY_COLORMAP = cv2.COLORMAP_JET


def overlay(crop_rgb: np.ndarray, heatmap: np.ndarray, scale: float | None = None, *,
            blur: float = 0.0) -> np.ndarray:
    """The crop with the positive part of ``heatmap`` blended on top in a colour map (RGB uint8).

    Heat is divided by ``scale`` (default: the map's maximum) and clipped to 0..1; opacity grows
    with it up to OVERLAY_ALPHA, so cool regions show the plain face. ``blur`` > 0 smooths the
    heat (Gaussian sigma in pixels) for display only: averaged patches leave a blocky grid.
    """
    crop = np.asarray(crop_rgb, dtype=np.uint8)
    heat = np.asarray(heatmap, dtype=np.float64)
    if blur > 0:
        heat = cv2.GaussianBlur(heat, (0, 0), sigmaX=blur, sigmaY=blur,
                                borderType=cv2.BORDER_REPLICATE)
    scale = float(scale if scale is not None else heat.max(initial=0.0))
    if scale <= 0:
        return crop.copy()
    level = np.clip(heat / scale, 0.0, 1.0)
    colours = cv2.cvtColor(cv2.applyColorMap((level * 255).astype(np.uint8), OVERLAY_COLORMAP),
                           cv2.COLOR_BGR2RGB).astype(np.float64)
    alpha = (OVERLAY_ALPHA * level)[..., None]
    return np.clip(crop * (1 - alpha) + colours * alpha + 0.5, 0, 255).astype(np.uint8)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


def render_explanation(expl: VideoExplanation, *, dpi: int = 100) -> bytes:
    """One PNG figure of an explanation; returns its bytes (for a file, or base64 in HTML).

    On top the score timeline: frame scores over time (and the smoothed series when the model
    smooths), the model's threshold, the top frames circled and numbered. Under it, per top
    frame, its face crop and, below that, the crop with the occlusion heatmap blended in (one
    colour scale for the whole figure, bar on the right), titled with the hottest regions. An
    item with one scored frame (an image) has no timeline: its crop and overlay stand side by
    side.
    """
    import io

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frames = expl.top_frames
    single = len(expl.timeline["score"]) <= 1
    k = max(1, len(frames))
    if single:
        fig = Figure(figsize=(7.0, 4.4), dpi=dpi, layout="constrained")
        grid = fig.add_gridspec(1, 2)
        cells = [(grid[0, 0], grid[0, 1])] if frames else []
    else:
        fig = Figure(figsize=(max(2.5 * k + 0.8, 8.0), 8.4), dpi=dpi, layout="constrained")
        grid = fig.add_gridspec(3, k, height_ratios=[1.25, 1, 1])
        cells = [(grid[1, c], grid[2, c]) for c in range(len(frames))]
    FigureCanvasAgg(fig)
    truth = f", labelled {expl.true_label}" if expl.true_label else ""
    fig.suptitle(f"{_shorten(expl.id, 90)}\n{expl.label}: score {expl.score:.3f} (threshold "
                 f"{expl.threshold:.3f}){truth}; {'+'.join(expl.features)}, "
                 f"{expl.aggregation.get('method', '')} of frames", fontsize=10)
    times = np.asarray(expl.timeline["time"], dtype=float)
    use_time = bool(len(times)) and bool(np.isfinite(times).all())
    if not single:
        ax = fig.add_subplot(grid[0, :])
        xs = times if use_time else np.asarray(expl.timeline["frame"], dtype=float)
        smoothing = expl.aggregation.get("smoothing", "none")
        tracks = np.unique(expl.timeline["track"])
        for t in tracks:
            members = expl.timeline["track"] == t
            name = f"track {t}" if len(tracks) > 1 else "frame score"
            line = ax.plot(xs[members], expl.timeline["score"][members], marker="o",
                           markersize=3, linewidth=1.0, alpha=0.55 if smoothing != "none"
                           else 1.0, label=name)[0]
            if smoothing != "none":
                ax.plot(xs[members], expl.timeline["smoothed"][members], linewidth=2,
                        color=line.get_color(), label=f"{name}, smoothed ({smoothing})")
        ax.axhline(expl.threshold, color="crimson", linestyle="--", linewidth=1,
                   label=f"threshold {expl.threshold:.2f}")
        for frame in frames:
            x = frame.time if use_time else frame.frame_index
            ax.plot([x], [frame.score], marker="o", markersize=11, markerfacecolor="none",
                    markeredgecolor="black", markeredgewidth=1.5)
            ax.annotate(str(frame.rank), (x, frame.score), textcoords="offset points",
                        xytext=(0, 8), ha="center", fontsize=9, weight="bold")
        ax.set_ylim(-0.03, 1.13)
        ax.set_xlabel("time (s)" if use_time else "frame")
        ax.set_ylabel("P(fake)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7, ncol=4, framealpha=0.8)
    images = []
    for frame, (crop_cell, overlay_cell) in zip(frames, cells):
        where = (f"t={frame.time:.2f} s" if math.isfinite(frame.time) else "image"
                 if expl.kind == "image" else f"frame {frame.frame_index}")
        crop_ax = fig.add_subplot(crop_cell)
        crop_ax.imshow(frame.crop)
        crop_ax.set_title(f"#{frame.rank}  {where}\nP(fake) {frame.score:.3f}", fontsize=8)
        overlay_ax = fig.add_subplot(overlay_cell)
        overlay_ax.imshow(frame.overlay)
        regions = ", ".join(r["region"] for r in frame.regions) or "no region raised the score"
        overlay_ax.set_title(textwrap.fill(regions, 32), fontsize=8)
        for a in (crop_ax, overlay_ax):
            a.set_xticks([])
            a.set_yticks([])
        images += [crop_ax, overlay_ax]
    if images:  # one bar beside every crop, so that the columns keep one width
        mappable = matplotlib.cm.ScalarMappable(
            norm=matplotlib.colors.Normalize(0, expl.heat_scale),
            cmap=matplotlib.colormaps["jet"])
        bar = fig.colorbar(mappable, ax=images, location="right", shrink=0.9 if single
                           else 0.45, pad=0.01,
                           anchor=(0.0, 0.05))
        bar.set_label(HEAT_UNITS[expl.space], fontsize=7)
        bar.ax.tick_params(labelsize=6)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_explanation(expl: VideoExplanation, path: Path | str, *, dpi: int = 100) -> Path:
    """Write :func:`render_explanation`'s PNG to ``path``; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render_explanation(expl, dpi=dpi))
    return path
