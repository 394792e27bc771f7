"""One self-contained HTML report of a run record (:mod:`fakeprobe.evaluation.runs`).

:func:`write_report` writes three things side by side::

    report.html        every figure inlined as a base64 PNG, inline CSS, no URL: opens offline
    report.md          a markdown summary (metrics, cross-dataset table, failures, provenance)
                       whose images are the PNG files below, for issues and papers
    report_files/      every figure as a PNG

The HTML has one ``<section id=... data-section=...>`` per part: ``metrics``, ``curves``,
``confusion``, ``cross-dataset``, ``timelines``, ``explanations``, ``failures``,
``provenance``; a tiny inline script counts, on load, the images that decoded and writes
``data-images-ok`` / ``data-images-broken`` on ``<body>`` (what the headless-browser test reads).

Timeline thumbnails are the cache's stored face crops when the record's cache is still there and
holds crops, otherwise faces re-aligned from frames re-read from the items' paths with the cached
landmarks; when neither works the section says why.
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from fakeprobe.errors import FakeprobeError
from fakeprobe.fileio import write_bytes

#: Sections of the report, in order: (id, title).
SECTIONS = (
    ("metrics", "Metrics"), ("curves", "Curves"), ("confusion", "Confusion matrices"),
    ("cross-dataset", "Cross-dataset and per method"), ("timelines", "Timelines"),
    ("explanations", "Explanations"), ("failures", "Failures"), ("provenance", "Provenance"),
)
#: Metric columns: (key, header, which way is better: "high", "low" or None).
METRICS = (
    ("roc_auc", "ROC-AUC", "high"), ("pr_auc", "PR-AUC", "high"), ("log_loss", "log loss", "low"),
    ("eer", "EER", "low"), ("accuracy", "acc.", "high"),
    ("balanced_accuracy", "bal. acc.", "high"), ("precision", "prec.", "high"),
    ("recall", "recall", "high"), ("f1", "F1", "high"), ("specificity", "spec.", "high"),
    ("fpr", "FPR", "low"), ("fnr", "FNR", "low"), ("threshold", "thresh.", None),
)
_ARROWS = {"high": "↑", "low": "↓"}
#: Cost columns (all lower-is-better): (key, header, decimals).
COSTS = (("fit_seconds", "fit s", 1), ("predict_seconds", "predict s", 2),
         ("peak_rss_mb", "peak MiB", 0))
#: Thumbnails shown per timeline: the most fake frames.
TOP_FRAMES = 4
#: Side of a re-aligned thumbnail (pixels).
THUMB_SIZE = 128

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1d2329;margin:0;background:#f4f6f8}
main{max-width:1280px;margin:0 auto;padding:18px 28px 60px;background:#fff}
h1{font-size:24px;margin:8px 0 2px}h2{font-size:19px;margin:0 0 10px;border-bottom:2px solid
 #dde3e8;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
section{margin:26px 0 0}.lead{color:#4a5561;margin:2px 0 10px}
nav#toc{background:#f0f3f6;border:1px solid #dde3e8;border-radius:6px;padding:8px 16px;
 margin:14px 0}nav#toc ol{margin:4px 0;padding-left:20px;columns:2}nav#toc a{color:#1f5fa8}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;font-size:12px;margin:4px 0 10px}
th,td{border:1px solid #dde3e8;padding:3px 5px;text-align:right;white-space:nowrap}
th{background:#eef2f5;font-weight:600}td.l,th.l{text-align:left}
td.best{font-weight:700;background:#dff3e4;color:#0b6b2f}
td.wrap{white-space:normal;max-width:560px;text-align:left;overflow-wrap:anywhere}
.block{max-width:600px}
th.in{background:#d5efdc}
table.cross th{white-space:normal;max-width:105px;vertical-align:bottom}small{color:#5c6670}
figure{margin:8px 0 14px}figure img{max-width:100%;height:auto;border:1px solid #e3e7eb}
figcaption{font-size:12px;color:#4a5561}
.grid{display:flex;flex-wrap:wrap;gap:10px 28px;align-items:flex-start}.grid figure{margin:0}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0}
code{background:#f0f3f6;padding:1px 4px;border-radius:3px;font-size:12px}
pre{background:#f0f3f6;padding:8px;overflow-x:auto;font-size:12px}
details summary{cursor:pointer;color:#1f5fa8}
"""
#: Counts the images that decoded, once everything loaded (read by the headless-browser test).
_IMAGE_CHECK = """
window.addEventListener("load", function () {
  var ok = 0, broken = 0, images = document.images;
  for (var i = 0; i < images.length; i++) {
    if (images[i].complete && images[i].naturalWidth > 0) { ok++; } else { broken++; }
  }
  document.body.setAttribute("data-images-ok", ok);
  document.body.setAttribute("data-images-broken", broken);
  document.body.setAttribute("data-images-total", images.length);
});
"""


@dataclass(frozen=True)
class Written:
    """What :func:`write_report` wrote."""

    html: Path
    markdown: Path
    figures: Path  # folder of PNG files
    images: int = 0  # images in the HTML (and PNG files in ``figures``)

    def to_dict(self) -> dict[str, Any]:
        return {"html": str(self.html), "markdown": str(self.markdown),
                "figures": str(self.figures), "images": self.images}


# --- small helpers -----------------------------------------------------------------------------

def _num(value: Any) -> float | None:
    """A finite float, or None (null, NaN and infinities are missing values)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _fmt(value: Any, decimals: int = 3) -> str:
    value = _num(value)
    return "–" if value is None else f"{value:.{decimals}f}"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


#: Characters with a meaning inside a markdown line (CommonMark lets a backslash escape any
#: of them); ``#``, ``-``, ``+`` and ``1.`` matter only at a line's start, where no value goes.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>|~&!])")


def _md(value: Any) -> str:
    """``value`` as inert markdown text: special characters escaped, one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).splitlines()))


def _md_code(value: Any) -> str:
    """``value`` as one inline code span, whatever backticks it holds."""
    text = " ".join(str(value).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def _label(report: dict[str, Any]) -> str:
    return f"{report.get('head', '?')} · {'+'.join(report.get('features') or [])}"


def _slug(text: str, tail: bool = False) -> str:
    """A file-name-safe form of ``text``, at most 60 characters (its end with ``tail``)."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", text).lower()
    return (slug[-48:] if tail else slug[:60]).strip("-") or "x"


def _video_auc(report: dict[str, Any]) -> float:
    value = _num((report.get("video") or {}).get("roc_auc"))
    return -1.0 if value is None else value


def in_domain(record: dict[str, Any], datasets: Sequence[str]) -> dict[str, bool]:
    """Which datasets were trained on: the protocol's ``train_selection`` dataset patterns
    (fnmatch), and with ``--eval`` the training cache's datasets; with neither, all of them."""
    protocol = record.get("protocol") or {}
    train = protocol.get("train_selection") or {}
    patterns = list(train.get("datasets") or [])
    excluded = list(train.get("exclude_datasets") or [])
    known = None
    if protocol.get("eval_cache"):
        known = set((record.get("cache") or {}).get("by_dataset") or {})
    out = {}
    for name in datasets:
        inside = not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)
        inside = inside and not any(fnmatch.fnmatchcase(name, p) for p in excluded)
        out[name] = inside and (known is None or name in known)
    return out


class _Figures:
    """Figures as they are made: PNG bytes by file name, and the ``<img>`` tags for them."""

    def __init__(self, folder_name: str) -> None:
        self.folder_name = folder_name
        self.files: dict[str, bytes] = {}

    def add(self, name: str, png: bytes, alt: str, caption: str = "", width: int | None = None
            ) -> str:
        base, k = _slug(name), 1
        file_name = f"{base}.png"
        while file_name in self.files:
            k += 1
            file_name = f"{base}-{k}.png"
        self.files[file_name] = png
        data = base64.b64encode(png).decode("ascii")
        style = f' style="width:{width}px"' if width else ""
        tag = (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}"'
               f' data-file="{_esc(file_name)}"{style}>')
        if caption:
            tag += f"<figcaption>{caption}</figcaption>"
        return tag + "</figure>"

    def path(self, file_name: str) -> str:
        return f"{self.folder_name}/{file_name}"


# --- data of the figures ----------------------------------------------------------------------

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


# --- sections ----------------------------------------------------------------------------------

def _metric_table(reports: list[dict[str, Any]], level: str, costs: bool) -> str:
    columns = [(k, h, b, 3) for k, h, b in METRICS]
    values = [[_num((r.get(level) or {}).get(k)) for k, *_ in columns] for r in reports]
    if costs:
        columns += [(k, h, "low", d) for k, h, d in COSTS]
        for row, r in zip(values, reports):
            row += [_num(r.get(k)) for k, *_ in COSTS]
    best = []
    for j, (_, _, better, _) in enumerate(columns):
        present = [row[j] for row in values if row[j] is not None]
        if better is None or len(reports) < 2 or not present:
            best.append(None)
        else:
            best.append(max(present) if better == "high" else min(present))
    unit = "videos" if level == "video" else "frames"
    head = ("<tr><th class=l>head</th><th class=l>features</th><th>" + unit + "<br>"
            "<small>real / fake</small></th>"
            + "".join(f"<th>{_esc(h)}<br><small>{_ARROWS.get(b, '')}</small></th>"
                      for _, h, b, _ in columns)
            + "<th>TN / FP<br>FN / TP</th></tr>")
    rows = []
    for r, row in zip(reports, values):
        m = r.get(level) or {}
        c = m.get("confusion") or {}
        cells = []
        for j, (_, _, _, decimals) in enumerate(columns):
            mark = best[j] is not None and row[j] is not None and abs(row[j] - best[j]) < 1e-12
            cells.append(f"<td{' class=best' if mark else ''}>{_fmt(row[j], decimals)}</td>")
        rows.append(
            f"<tr><td class=l>{_esc(r.get('head'))}</td><td class=l>"
            f"{_esc('+'.join(r.get('features') or []))}</td><td>{m.get('n', '–')}<br><small>"
            f"{m.get('n_real', '–')} / {m.get('n_fake', '–')}</small></td>{''.join(cells)}"
            f"<td>{c.get('tn', '–')} / {c.get('fp', '–')}<br>{c.get('fn', '–')} / "
            f"{c.get('tp', '–')}</td></tr>")
    return f"<div class=scroll><table>{head}{''.join(rows)}</table></div>"


def _section_metrics(reports: list[dict[str, Any]]) -> str:
    protocol = ", ".join(sorted({str(r.get("protocol", "")) for r in reports}))
    lead = (
        f"<p class=lead>{len(reports)} head x feature set evaluation(s), {_esc(protocol)}. "
        "Thresholds are picked on the training folds (Youden's J) and applied to the test "
        "fold; <b>bold green</b> marks the best value of each column (↑ higher is better, "
        "↓ lower is better). acc.: accuracy, prec.: precision, spec.: specificity, thresh.: "
        "the fold thresholds' mean. Time is summed over the folds; memory is the peak "
        "resident set of the fits.</p>")
    parts = [
        lead,
        "<h3>Video level (frames aggregated per item), with cost</h3>",
        _metric_table(reports, "video", costs=True),
        "<h3>Frame level (every face row scored alone)</h3>",
        _metric_table(reports, "frame", costs=False),
    ]
    folds = []
    for r in reports:
        for f in r.get("folds") or []:
            folds.append(
                f"<tr><td class=l>{_esc(_label(r))}</td><td>{f.get('fold')}</td>"
                f"<td>{f.get('train_videos')}</td><td>{f.get('test_videos')}</td>"
                f"<td>{_fmt(f.get('threshold'))}</td><td>{_fmt(f.get('fit_seconds'), 2)}</td>"
                f"<td>{_fmt(f.get('predict_seconds'), 3)}</td>"
                f"<td>{_fmt(f.get('peak_rss_mb'), 0)}</td><td class=l>"
                f"{_esc(json.dumps(f.get('params') or {}))}</td></tr>")
    if folds:
        parts.append(
            "<details><summary>Per fold</summary><div class=scroll><table><tr><th class=l>"
            "head · features</th><th>fold</th><th>train items</th><th>test items</th>"
            "<th>threshold</th><th>fit s</th><th>predict s</th><th>peak MiB</th><th class=l>"
            f"params</th></tr>{''.join(folds)}</table></div></details>")
    return "".join(parts)


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


def _cell_colour(auc: float | None) -> str:
    if auc is None:
        return ""
    hue = int(max(0.0, min(1.0, (auc - 0.4) / 0.6)) * 120)  # red at <=0.4, green at 1
    return f' style="background:hsl({hue},65%,88%)"'


def cross_tables(record: dict[str, Any], reports: list[dict[str, Any]]
                 ) -> tuple[list[str], dict[str, bool], list[dict[str, Any]]]:
    """Datasets (in-domain first), which are in-domain, and per report its breakdown cells by
    (dataset, method)."""
    datasets = sorted({c["dataset"] for r in reports for c in r.get("breakdown") or []})
    domain = in_domain(record, datasets)
    datasets.sort(key=lambda d: (not domain[d], d))
    tables = [{(c["dataset"], c["method"]): c for c in r.get("breakdown") or []}
              for r in reports]
    return datasets, domain, tables


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


def _grouped(entries: list[dict[str, Any]], key) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _failures(record: dict[str, Any]) -> tuple[list[dict], list[tuple[str, dict]]]:
    caches = [(name, record.get(name)) for name in ("cache", "eval_cache")]
    return (list(record.get("excluded") or []),
            [(name, f) for name, c in caches if c for f in c.get("failures") or []])


def _section_failures(record: dict[str, Any]) -> str:
    excluded, failures = _failures(record)
    parts = []
    by_reason = _grouped(excluded, lambda e: str(e.get("reason", "")).split(":", 1)[0])
    parts.append(f"<h3>Selected items that got no score: {len(excluded)}</h3>")
    if excluded:
        parts.append(_count_table(by_reason, "reason"))
        parts.append(_detail_table(excluded, ("id", "reason")))
    by_status = _grouped([f for _, f in failures], lambda f: str(f.get("status", "")))
    parts.append(f"<h3>Items the extractor could not read (cache failures): "
                 f"{len(failures)}</h3>")
    if failures:
        parts.append(_count_table(by_status, "status"))
        parts.append(_detail_table([{"cache": c, **f} for c, f in failures],
                                   ("cache", "id", "status", "error")))
    if not excluded and not failures:
        parts.append("<p>No failure: every selected item was read and scored.</p>")
    return "".join(parts)


def _count_table(groups: dict[str, list], name: str) -> str:
    rows = "".join(f"<tr><td class=l>{_esc(k or '(none)')}</td><td>{len(v)}</td></tr>"
                   for k, v in groups.items())
    return f"<table><tr><th class=l>{name}</th><th>items</th></tr>{rows}</table>"


def _detail_table(entries: list[dict[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th class=l>{c}</th>" for c in columns)
    rows = "".join("<tr>" + "".join(f"<td class=wrap>{_esc(e.get(c, ''))}</td>" for c in columns)
                   + "</tr>" for e in entries)
    return (f"<details><summary>All {len(entries)}</summary><div class=scroll><table>"
            f"<tr>{head}</tr>{rows}</table></div></details>")


def _value_html(value: Any) -> str:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return f"<code>{_esc(text)}</code>"
    return _esc("–" if value is None else value)


def _kv_table(data: dict[str, Any] | None) -> str:
    if not data:
        return "<p>–</p>"
    rows = "".join(f"<tr><th class=l>{_esc(k)}</th><td class=wrap>{_value_html(v)}</td></tr>"
                   for k, v in data.items())
    return f"<table>{rows}</table>"


def _cache_lines(cache: dict[str, Any] | None) -> dict[str, Any]:
    if not cache:
        return {}
    keys = ("path", "items", "rows", "rows_with_face", "crops", "by_label", "by_dataset",
            "by_method", "by_status", "by_kind", "created", "updated", "fakeprobe_version",
            "schema_version")
    return {k: cache[k] for k in keys if k in cache}


def _section_provenance(record: dict[str, Any]) -> str:
    env = dict(record.get("environment") or {})
    versions = env.pop("versions", {})
    run = {"command": record.get("command"), "created": record.get("created"),
           "kind": record.get("kind")}
    if record.get("model"):
        run["model"] = record["model"]
    blocks = []
    for name, title in (("cache", "Cache"), ("eval_cache", "Evaluation cache (--eval)")):
        if record.get(name):
            blocks.append(f"<h3>{title}</h3>{_kv_table(_cache_lines(record[name]))}")
    blocks.append(f"<h3>Extractor config</h3>{_kv_table(record.get('extractor_config'))}")
    for name, cfg in (record.get("feature_configs") or {}).items():
        blocks.append(f"<h3>Feature set {_esc(name)}</h3>{_kv_table(cfg)}")
    for key, title in (("selection", "Selection"), ("protocol", "Protocol"),
                       ("aggregation", "Aggregation")):
        blocks.append(f"<h3>{title}</h3>{_kv_table(record.get(key))}")
    blocks.append(f"<h3>Environment</h3>{_kv_table(env)}")
    blocks.append(f"<h3>Library versions</h3>{_kv_table(versions)}")
    return _kv_table(run) + "<div class=grid>" + "".join(
        f"<div class=block>{b}</div>" for b in blocks) + "</div>"


# --- markdown ----------------------------------------------------------------------------------

def _markdown(record: dict[str, Any], reports: list[dict[str, Any]], figs: _Figures) -> str:
    lines = ["# fakeprobe report", "",
             (f"{record.get('kind', '')} run of {record.get('created', '')}: "
              f"{_md_code(record.get('command', ''))}"), "", "## Metrics (video level)", "",
             ("| head | features | videos | ROC-AUC | PR-AUC | log loss | EER | bal. acc. | F1 "
              "| FPR | FNR | TN/FP/FN/TP | frame ROC-AUC | fit s | peak MiB |"),
             "|---|---|" + "---:|" * 13]
    for r in reports:
        v, c = r.get("video") or {}, (r.get("video") or {}).get("confusion") or {}
        lines.append(
            f"| {_md(r.get('head'))} | {_md('+'.join(r.get('features') or []))} | "
            f"{_md(v.get('n', '–'))} | "
            + " | ".join(_fmt(v.get(k)) for k in ("roc_auc", "pr_auc", "log_loss", "eer",
                                                  "balanced_accuracy", "f1", "fpr", "fnr"))
            + f" | {c.get('tn', '–')}/{c.get('fp', '–')}/{c.get('fn', '–')}/"
            f"{c.get('tp', '–')}"
            f" | {_fmt((r.get('frame') or {}).get('roc_auc'))} | {_fmt(r.get('fit_seconds'), 1)}"
            f" | {_fmt(r.get('peak_rss_mb'), 0)} |")
    datasets, domain, tables = cross_tables(record, reports)
    if datasets:
        lines += ["", "## Cross-dataset (video ROC-AUC, all items of each dataset)", "",
                  "| head · features | " + " | ".join(
                      f"{_md(d)}{' (in-domain)' if domain[d] else ''}" for d in datasets)
                  + " |",
                  "|---|" + "---:|" * len(datasets)]
        for r, cells in zip(reports, tables):
            row = []
            for d in datasets:
                cell = cells.get((d, "*"))
                row.append("–" if cell is None else
                           f"{_fmt((cell.get('video') or {}).get('roc_auc'))} "
                           f"({cell.get('real', 0)}r/{cell.get('fake', 0)}f)")
            lines.append(f"| {_md(_label(r))} | " + " | ".join(row) + " |")
    excluded, failures = _failures(record)
    statuses = _grouped([f for _, f in failures], lambda f: str(f.get("status", "")))
    lines += ["", "## Failures", "",
              f"- selected items with no score: {len(excluded)}",
              f"- cache failures: {len(failures)}"
              + (" (" + ", ".join(f"{_md(k)}: {len(v)}" for k, v in statuses.items()) + ")"
                 if statuses else "")]
    cache = record.get("cache") or {}
    env = record.get("environment") or {}
    versions = env.get("versions") or {}
    protocol = record.get("protocol") or {}
    lines += ["", "## Provenance", "",
              (f"- cache: {_md_code(cache.get('path', ''))} ({_md(cache.get('items', '?'))} "
               f"items, by dataset {_md_code(json.dumps(cache.get('by_dataset', {})))})"),
              (f"- features: {_md(', '.join(record.get('feature_configs') or {}) or '–')}; "
               f"extractor: {_md_code(json.dumps(record.get('extractor_config') or {}))}"),
              f"- protocol: {_md_code(json.dumps(protocol))}",
              f"- aggregation: {_md_code(json.dumps(record.get('aggregation')))}",
              (f"- machine: {_md(env.get('platform', '?'))}, {_md(env.get('cpu', '?'))}, "
               f"{_md(env.get('cores', '?'))} cores, {_md(env.get('memory_gb', '?'))} GB"),
              "- versions: " + ", ".join(f"{_md(k)} {_md(v)}" for k, v in versions.items()), "",
              "## Figures", ""]
    lines += [f"![{_md(name[:-4])}](<{quote(figs.path(name))}>)" for name in figs.files
              if not name.startswith("timeline-") and not name.startswith("confusion-")]
    return "\n".join(lines) + "\n"


# --- writing -----------------------------------------------------------------------------------

def _write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Replace ``folder`` by one holding exactly ``files``: written aside, then renamed."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    old = folder.with_name(f".{folder.name}.{os.getpid()}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def render(record: dict[str, Any], *, figures_folder: str, timelines: int = 6,
           explanations: Sequence[tuple[str, bytes]] = ()) -> tuple[str, str, dict[str, bytes]]:
    """(HTML, markdown, PNG files by name) of a run record; nothing is written."""
    from fakeprobe.evaluation.plots import palette

    reports = sorted(record.get("reports") or [], key=lambda r: -_video_auc(r))
    if not reports:
        raise FakeprobeError("the run record holds no evaluation to report")
    colours = palette(len(reports))
    figs = _Figures(figures_folder)
    videos = _video_series(reports, colours)
    frames = _frame_series(reports, colours)
    bodies = {
        "metrics": _section_metrics(reports),
        "curves": _section_curves(figs, videos, frames),
        "confusion": _section_confusion(figs, reports),
        "cross-dataset": _section_cross(figs, record, reports, colours),
        "timelines": _section_timelines(figs, record, reports, timelines),
        "explanations": _section_explanations(figs, explanations),
        "failures": _section_failures(record),
        "provenance": _section_provenance(record),
    }
    best = reports[0]
    toc = "".join(f'<li><a href="#{sid}">{_esc(title)}</a></li>' for sid, title in SECTIONS)
    sections = "".join(f'<section id="{sid}" data-section="{sid}"><h2>{_esc(title)}</h2>'
                       f"{bodies[sid]}</section>" for sid, title in SECTIONS)
    cache = record.get("cache") or {}
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>fakeprobe report: {_esc(_label(best))}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>fakeprobe report</h1><p class=lead>{_esc(record.get('kind', ''))} "
        f"run, {_esc(record.get('created', ''))}, cache <code>{_esc(cache.get('path', ''))}"
        f"</code> ({_esc(cache.get('items', '?'))} items). Best: <b>{_esc(_label(best))}"
        f"</b>, video ROC-AUC {_fmt((best.get('video') or {}).get('roc_auc'))}.</p>"
        f"<pre>{_esc(record.get('command', ''))}</pre>"
        f'<nav id="toc"><b>Contents</b><ol>{toc}</ol></nav>{sections}</main>'
        f"<script>{_IMAGE_CHECK}</script></body></html>")
    return page, _markdown(record, reports, figs), figs.files


def markdown_path(out_html: Path | str) -> Path:
    """Where the markdown summary of the report ``out_html`` goes: beside it, stem ``.md``."""
    out_html = Path(out_html)
    markdown = out_html.with_suffix(".md")
    return out_html.with_name(out_html.name + ".md") if markdown == out_html else markdown


def write_report(record: dict[str, Any], out_html: Path | str, *, timelines: int = 6,
                 explanations: Sequence[tuple[str, bytes]] = ()) -> Written:
    """Write ``out_html``, the markdown summary beside it (same stem, ``.md``) and every figure
    as a PNG in ``<stem>_files/``; each file appears whole or not at all."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    folder = out_html.with_name(f"{out_html.stem}_files")
    markdown = markdown_path(out_html)
    page, summary, files = render(record, figures_folder=folder.name, timelines=timelines,
                                  explanations=explanations)
    _write_folder(folder, files)
    write_bytes(markdown, summary.encode("utf-8"))
    write_bytes(out_html, page.encode("utf-8"))
    return Written(out_html, markdown, folder, len(files))
