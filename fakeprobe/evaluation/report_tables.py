"""The report's tables and the numbers they hold: metrics per head x feature set (video and
frame level, with cost), in-domain and cross-dataset cells, failures and provenance."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Sequence
from typing import Any

from fakeprobe.evaluation.report_format import (_count_table, _detail_table, _esc, _fmt,
                                                _grouped, _kv_table, _label, _num)

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
