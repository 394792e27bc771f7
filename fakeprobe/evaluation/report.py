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

The sections are built in :mod:`~fakeprobe.evaluation.report_tables` (metrics, failures,
provenance) and :mod:`~fakeprobe.evaluation.report_figures` (curves, confusion matrices,
cross-dataset bars, timelines with face thumbnails, explanations) from the small parts of
:mod:`~fakeprobe.evaluation.report_format`; this module assembles the page and the markdown
summary and writes them. The names of those parts stay importable from here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fakeprobe.errors import FakeprobeError
from fakeprobe.evaluation.report_figures import (THUMB_SIZE, TOP_FRAMES, _frame_series,
                                                 _section_confusion, _section_cross,
                                                 _section_curves, _section_explanations,
                                                 _section_timelines, _video_series)
from fakeprobe.evaluation.report_format import (_esc, _Figures, _fmt, _grouped, _label, _md,
                                                _md_code, _video_auc)
from fakeprobe.evaluation.report_tables import (COSTS, METRICS, _failures, _section_failures,
                                                _section_metrics, _section_provenance,
                                                cross_tables, in_domain)
from fakeprobe.fileio import write_bytes

#: Sections of the report, in order: (id, title).
SECTIONS = (
    ("metrics", "Metrics"), ("curves", "Curves"), ("confusion", "Confusion matrices"),
    ("cross-dataset", "Cross-dataset and per method"), ("timelines", "Timelines"),
    ("explanations", "Explanations"), ("failures", "Failures"), ("provenance", "Provenance"),
)
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


__all__ = [
    "COSTS",
    "METRICS",
    "SECTIONS",
    "THUMB_SIZE",
    "TOP_FRAMES",
    "Written",
    "cross_tables",
    "in_domain",
    "markdown_path",
    "render",
    "write_report",
]
