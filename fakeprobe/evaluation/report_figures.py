"""The report's figure sections: ROC/PR, calibration and score curves, confusion matrices,
the cross-dataset bars, per-item score timelines with face thumbnails, and explanation figures.

Timeline thumbnails are the cache's stored face crops when the record's cache is still there and
holds crops, otherwise faces re-aligned from frames re-read from the items' paths with the cached
landmarks (:func:`fakeprobe.evaluation.plots.face_thumbnails`); when neither works the section
says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fakeprobe.evaluation.report_format import (_cell_colour, _esc, _fmt, _Figures, _label,
                                                _num, _slug, _video_auc)
from fakeprobe.evaluation.report_tables import cross_tables

#: Thumbnails shown per timeline: the most fake frames.
TOP_FRAMES = 4
#: Side of a re-aligned thumbnail (pixels).
THUMB_SIZE = 128

def _video_series(reports: list[dict[str, Any]], colours: list[str]):
    from fakeprobe.evaluation.plots import Series

    out = []
    for report, colour in zip(reports, colours):
        scores = report.get("video_scores") or []
        keep = [v for v in scores if v.get("label") in ("real", "fake") and
                _num(v.get("score")) is not None]
        out.append(Series(
            _label(report), colour, np.array([v["label"] == "fake" for v in keep], int),
            np.array([float(v["score"]) for v in keep]),
            _num((report.get("video") or {}).get("roc_auc")),
            _num((report.get("video") or {}).get("pr_auc")),
            np.array([t for t in (_num(v.get("threshold")) for v in keep) if t is not None])))
    return out


def _frame_series(reports: list[dict[str, Any]], colours: list[str]):
    from fakeprobe.evaluation.plots import Series

    out = []
    for report, colour in zip(reports, colours):
        table = report.get("frame_scores") or {}
        videos = report.get("video_scores") or []
        if not table.get("video"):
            continue
        labels = np.array([{"fake": 1, "real": 0}.get(v.get("label"), -1) for v in videos])
        video = np.asarray(table["video"], int)
        scores = np.array([np.nan if s is None else s for s in table["score"]], float)
        y = labels[video]
        keep = (y >= 0) & np.isfinite(scores)
        out.append(Series(_label(report), colour, y[keep], scores[keep],
                          _num((report.get("frame") or {}).get("roc_auc")),
                          _num((report.get("frame") or {}).get("pr_auc"))))
    return out


def _section_curves(figs: _Figures, videos, frames) -> str:
    from fakeprobe.evaluation import plots

    parts = [figs.add("roc-pr-video", plots.roc_pr(videos, "video"), "ROC and PR, video level",
                      "ROC and precision-recall curves of the video scores (one line per head x "
                      "feature set; AUC and average precision in the legends).")]
    if frames:
        parts.append(figs.add("roc-pr-frame", plots.roc_pr(frames, "frame"),
                              "ROC and PR, frame level", "The same at frame level: every face "
                              "row scored alone, before aggregation."))
    else:
        parts.append("<p class=note>No per-frame scores in this record: frame-level curves "
                     "left out.</p>")
    levels = [("video", videos)] + ([("frame", frames)] if frames else [])
    parts.append(figs.add("calibration", plots.calibration(levels), "Calibration",
                          "Reliability: in each score bin, the mean predicted P(fake) against "
                          "the share of items that are fake. On the diagonal, a score of 0.8 "
                          "means 80% of such items are fake."))
    parts.append(figs.add("score-distributions", plots.distributions(videos),
                          "Score distributions", "Video scores of reals (blue) and fakes (red); "
                          "dashed: the mean fold threshold (grey band: the range of fold "
                          "thresholds)."))
    return "".join(parts)


def _section_confusion(figs: _Figures, reports: list[dict[str, Any]]) -> str:
    from fakeprobe.evaluation import plots

    cells = []
    for r in reports:
        v = r.get("video") or {}
        matrix = v.get("confusion") or {}
        title = f"{_label(r)}\nthreshold ~{_fmt(v.get('threshold'), 2)}"
        cells.append(figs.add(f"confusion-{_label(r)}", plots.confusion(matrix, title),
                              f"confusion matrix {_label(r)}"))
    return ("<p class=lead>Video level, each item judged at the threshold of its own fold "
            "(rows: true class, columns: predicted; shares are of the row).</p>"
            f"<div class=grid>{''.join(cells)}</div>")


def _section_cross(figs: _Figures, record: dict[str, Any], reports: list[dict[str, Any]],
                   colours: list[str]) -> str:
    from fakeprobe.evaluation import plots

    datasets, domain, tables = cross_tables(record, reports)
    if not datasets:
        return "<p class=note>This record holds no per-dataset breakdown.</p>"
    train = (record.get("protocol") or {}).get("train_selection") or {}
    if len(datasets) > 1:
        lead = ("Trained on " + (", ".join(f"<code>{_esc(p)}</code>" for p in train["datasets"])
                                 if train.get("datasets") else "every dataset")
                + "; every item scored in its test fold. Columns marked <b>in-domain</b> were "
                "trained on; the others are out-of-domain.")
    else:
        lead = f"A single dataset ({_esc(datasets[0])}): per-method results only."
    parts = [(f"<p class=lead>{lead} Cells: video ROC-AUC, then real / fake items. A method's "
              "row holds the dataset's reals against that method's fakes; n/a where a cell "
              "holds one class.</p>")]
    html_tables: list[str] = []
    for r, cells in zip(reports, tables):
        methods = sorted({m for (_, m) in cells if m != "*"})
        head = "<tr><th class=l>method</th>" + "".join(
            f"<th{' class=in' if domain[d] else ''}>{_esc(d)}<br><small>"
            f"{'in-domain' if domain[d] else 'out-of-domain'}</small></th>" for d in datasets)
        rows = []
        for method in ["*"] + methods:
            tds = []
            for d in datasets:
                cell = cells.get((d, method))
                if cell is None:
                    tds.append("<td>–</td>")
                    continue
                auc = _num((cell.get("video") or {}).get("roc_auc"))
                tds.append(f"<td{_cell_colour(auc)}>{'n/a' if auc is None else f'{auc:.3f}'}"
                           f"<br><small>{cell.get('real', 0)} / {cell.get('fake', 0)}</small>"
                           "</td>")
            name = "all (*)" if method == "*" else method
            rows.append(f"<tr><td class=l>{_esc(name)}</td>{''.join(tds)}</tr>")
        html_tables.append(f"<div><h3>{_esc(_label(r))}</h3><div class=scroll>"
                           f"<table class=cross>{head}</tr>{''.join(rows)}</table></div></div>")
    parts.append(f"<div class=grid>{''.join(html_tables)}</div>")
    bars = [(_label(r), colour, [_num(((cells.get((d, "*")) or {}).get("video") or {})
                                      .get("roc_auc")) for d in datasets])
            for r, cells, colour in zip(reports, tables, colours)]
    parts.append(figs.add("cross-dataset", plots.cross_bars(datasets, domain, bars),
                          "video AUC per dataset", "Video ROC-AUC of each dataset's items; "
                          "dotted: chance."))
    return "".join(parts)


def _smoothed(scores: np.ndarray, report: dict[str, Any]) -> np.ndarray | None:
    """A track's scores smoothed as the run aggregated them (None when it did not smooth)."""
    from fakeprobe.classifiers.aggregate import smooth

    aggregation = report.get("aggregation") or {}
    method = aggregation.get("smoothing", "none")
    if method == "none":
        return None
    return smooth(scores, method, int(aggregation.get("window", 5)),
                  float(aggregation.get("alpha", 0.3)))


def _pick_items(report: dict[str, Any], n: int) -> tuple[list[int], list[int], bool]:
    """Positions (in ``video_scores``) of the ``n`` most fake-scored fakes and reals; videos
    (several frames) only, unless the run has none."""
    scores = report.get("video_scores") or []
    multi = [i for i, v in enumerate(scores) if (v.get("frames") or 0) > 1]
    pool = multi or list(range(len(scores)))

    def top(label: str) -> list[int]:
        chosen = [i for i in pool if scores[i].get("label") == label
                  and _num(scores[i].get("score")) is not None]
        return sorted(chosen, key=lambda i: -float(scores[i]["score"]))[:n]

    return top("fake"), top("real"), bool(multi) and len(multi) < len(scores)


def _frames_of(report: dict[str, Any], position: int) -> dict[str, np.ndarray]:
    table = report.get("frame_scores") or {}
    video = np.asarray(table.get("video") or [], int)
    rows = np.flatnonzero(video == position)

    def column(name: str, fill: float = np.nan) -> np.ndarray:
        values = table.get(name) or []
        return np.array([fill if values[k] is None else values[k] for k in rows], float)

    return {"frame_index": column("frame_index", -1).astype(int),
            "timestamp": column("timestamp"), "track": column("track", 0).astype(int),
            "score": column("score"), "threshold": column("threshold")}


def _section_timelines(figs: _Figures, record: dict[str, Any], reports: list[dict[str, Any]],
                       n: int) -> str:
    from fakeprobe.evaluation import plots
    from fakeprobe.evaluation.plots import face_thumbnails

    if n <= 0:
        return "<p class=note>Timelines were turned off (<code>--timelines 0</code>).</p>"
    best = max(reports, key=_video_auc)
    if not (best.get("frame_scores") or {}).get("video"):
        return "<p class=note>This record holds no per-frame scores: no timelines.</p>"
    fakes, reals, videos_only = _pick_items(best, n)
    scores = best["video_scores"]
    chosen = fakes + reals
    frames = {i: _frames_of(best, i) for i in chosen}
    wanted = {}
    for i in chosen:
        f = frames[i]
        order = np.argsort(-np.nan_to_num(f["score"], nan=-1.0))[:TOP_FRAMES]
        wanted[scores[i]["id"]] = [(int(f["frame_index"][k]), int(f["track"][k])) for k in order]
    thumbs, source = face_thumbnails(record, wanted, THUMB_SIZE)
    skipped = "Images (single frames) are left out. " if videos_only else ""
    parts = [(f"<p class=lead>Best evaluation by video ROC-AUC: <b>{_esc(_label(best))}</b>. "
              f"The {len(fakes)} fakes and the {len(reals)} reals it scores most fake (false "
              "alarms first in line for a look): per-frame fake score over time, one line per "
              "face track, the fold threshold dashed, and the faces of the most fake frames "
              f"(numbered on the line). {skipped}Thumbnails: {_esc(source)}</p>")]
    for title, group in (("Most fake-scored fakes", fakes),
                         ("Most fake-scored reals (false alarms)", reals)):
        parts.append(f"<h3>{title}</h3>")
        if not group:
            parts.append("<p>None in this run.</p>")
        for i in group:
            info = scores[i]
            f = frames[i]
            use_time = len(f["timestamp"]) > 0 and np.isfinite(f["timestamp"]).all()
            x = f["timestamp"] if use_time else f["frame_index"].astype(float)
            tracks = {}
            for t in sorted(set(f["track"].tolist())):
                k = np.flatnonzero(f["track"] == t)
                k = k[np.argsort(x[k])]
                tracks[t] = (x[k], f["score"][k], _smoothed(f["score"][k], best))
            crops = thumbs.get(info["id"], {})
            order = np.argsort(-np.nan_to_num(f["score"], nan=-1.0))[:TOP_FRAMES]
            top = [(float(x[k]), float(f["score"][k]),
                    crops.get((int(f["frame_index"][k]), int(f["track"][k]))),
                    f"frame {int(f['frame_index'][k])}: {f['score'][k]:.2f}") for k in order]
            threshold = _num(info.get("threshold"))
            view = {"id": info["id"], "label": info.get("label", ""),
                    "score": float(info["score"]), "threshold": threshold,
                    "dataset": info.get("dataset", ""), "method": info.get("method", "")}
            png = plots.timeline(view, tracks, "time (s)" if use_time else "frame index",
                                 threshold, top)
            called = ("fake" if threshold is not None and info["score"] >= threshold
                      else "real" if threshold is not None else "?")
            parts.append(figs.add(
                f"timeline-{info.get('label')}-{_slug(str(info['id']), tail=True)}", png,
                f"timeline {info['id']}",
                f"<code>{_esc(info['id'])}</code>: {_esc(info.get('label'))}, called "
                f"{called} (score {_fmt(info['score'])}, fold {_esc(info.get('fold'))}, "
                f"{len(f['score'])} face rows)"))
    return "".join(parts)


def _section_explanations(figs: _Figures, explanations: Sequence[tuple[str, bytes]]) -> str:
    if not explanations:
        return ("<p class=note>No explanations in this report. Make them with "
                "<code>fakeprobe explain MODEL CACHE --out FOLDER</code> (which face regions "
                "and frames drove a model's score) and pass them to "
                "<code>write_report(..., explanations=[(title, png_bytes), ...])</code>.</p>")
    lead = (f"<p class=lead>{len(explanations)} figure(s) explaining the scores (from "
            "<code>fakeprobe explain</code>: the frames that drove an item's score and, on "
            "their faces, the regions whose hiding lowers P(fake) most).</p>")
    return lead + "".join(figs.add(f"explanation-{title}", png, title, _esc(title))
                          for title, png in explanations)
