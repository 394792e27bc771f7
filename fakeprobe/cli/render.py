"""How results look in a terminal: rich tables, sparklines and progress bars."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def failures_table(failures: list[dict[str, str]], title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "status", "error"):
        table.add_column(column)
    for failure in failures:
        table.add_row(escape(failure["id"]), failure["status"], escape(failure["error"]))
    return table


def key_value_table(title: str, rows, show_header: bool = False) -> Table:
    table = Table(title=title, show_header=show_header)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def extract_summary(summary) -> list[Table]:
    """The counts and stage times of an extraction, and its failures."""
    rows = [
        ("items found", summary.found), ("extracted now", summary.extracted),
        ("feature sets added to cached items", summary.features_added),
        ("already cached", summary.already_done), ("failed", summary.failed),
        ("frames sampled", summary.rows), ("frames with a face", summary.faces),
        ("seconds", f"{summary.seconds:.1f}"),
    ]
    workers = {"decode", "detect", "align"}
    for stage, secs in sorted(summary.stage_seconds.items()):
        where = " (all workers)" if stage in workers else ""
        rows.append((f"  time in {stage}{where}", f"{secs:.1f} s"))
    tables = [key_value_table(f"extract -> {summary.cache}", rows)]
    if summary.failures:
        tables.append(failures_table(summary.failures, "failures (recorded in the cache)"))
    return tables


def info_tables(cache, summary: dict) -> list[Table]:
    """A cache's summary: head counts, counts per category, feature sets, config, failures."""
    head = Table(title=str(cache), show_header=False)
    head.add_column(style="bold")
    head.add_column()
    for key in ("schema_version", "fakeprobe_version", "created", "updated", "items", "rows",
                "rows_with_face", "crops", "staged_not_committed"):
        if key in summary:
            head.add_row(key, str(summary[key]))
    tables = [head]
    for key in ("by_label", "by_status", "by_kind", "by_dataset", "by_method"):
        table = Table(title=key.replace("_", " "))
        table.add_column(key.split("_", 1)[1])
        table.add_column("items", justify="right")
        for name, count in summary[key].items():
            table.add_row(escape(str(name)), str(count))
        tables.append(table)
    features = Table(title="feature sets")
    for column in ("name", "dim", "items done", "weights"):
        features.add_column(column)
    for name, cfg in summary["feature_sets"].items():
        features.add_row(name, str(cfg.get("dim")), str(cfg.get("items_done")),
                         str(cfg.get("weights", cfg.get("sha256", "")))[:40])
    tables.append(features)
    config = Table(title="extractor config", show_header=False)
    config.add_column(style="bold")
    config.add_column()
    for key, value in summary["extractor_config"].items():
        config.add_row(key, str(value))
    tables.append(config)
    if summary["failures"]:
        tables.append(failures_table(summary["failures"],
                                     f"failures ({len(summary['failures'])})"))
    if summary["warnings"]:
        tables.append(failures_table(summary["warnings"], f"read with a caveat "
                                     f"({len(summary['warnings'])}): their frames are used"))
    return tables


def components_tables(data: dict) -> list[Table]:
    """One table per component kind: name, whether it can run here, description."""
    tables = []
    for kind, entries in data.items():
        table = Table(title=f"{kind}s")
        for column in ("name", "available", "description"):
            table.add_column(column)
        for entry in entries:
            available = "yes" if entry["available"] else f"no: {entry['hint']}"
            table.add_row(entry["name"], available, entry["description"])
        tables.append(table)
    return tables


def metrics_tables(reports, title: str) -> list[Table]:
    """Two compact tables: ranking metrics and cost, then the metrics at the threshold."""
    from rich import box

    from fakeprobe.classifiers.metrics import fmt

    def table(heading: str, columns: list[str]) -> Table:
        t = Table(title=heading, box=box.SIMPLE_HEAD, pad_edge=False)
        for column in columns:
            t.add_column(column, justify="left" if column in ("head", "features") else "right",
                         no_wrap=True, min_width=min(len(column), 9))
        return t

    ranking = table(title, ["head", "features", "video AUC", "PR-AUC", "log loss", "EER",
                            "frame AUC", "videos", "fit s", "pred s", "MiB"])
    decisions = table("at the threshold picked on training folds (video level)",
                      ["head", "features", "thr", "acc", "bal acc", "prec", "recall", "F1",
                       "spec", "FPR", "FNR", "TN/FP/FN/TP"])
    for r in reports:
        v, f, c = r.video, r.frame, r.video["confusion"]
        feats = "+".join(r.features)
        ranking.add_row(r.head, feats, fmt(v["roc_auc"]), fmt(v["pr_auc"]), fmt(v["log_loss"]),
                        fmt(v["eer"]), fmt(f["roc_auc"]), str(v["n"]), f"{r.fit_seconds:.1f}",
                        f"{r.predict_seconds:.2f}", f"{r.peak_rss_mb:.0f}")
        decisions.add_row(r.head, feats, fmt(v["threshold"], 2), fmt(v["accuracy"]),
                          fmt(v["balanced_accuracy"]), fmt(v["precision"]), fmt(v["recall"]),
                          fmt(v["f1"]), fmt(v["specificity"]), fmt(v["fpr"]), fmt(v["fnr"]),
                          f"{c['tn']}/{c['fp']}/{c['fn']}/{c['tp']}")
    return [ranking, decisions]


def sparkline(values: list[float]) -> str:
    """Frame scores (0..1) as a strip of block characters, at most 40 wide."""
    if not values:
        return ""
    bars = "▁▂▃▄▅▆▇█"
    step = max(1, len(values) // 40)
    sampled = [max(values[i : i + step]) for i in range(0, len(values), step)]
    return "".join(bars[min(int(v * len(bars)), len(bars) - 1)] for v in sampled)


def predictions_table(result) -> Table:
    table = Table(title=f"predict with {result.model_name} (threshold {result.threshold:.3f})")
    for column in ("item", "fake probability", "label", "frames", "timeline", "note"):
        table.add_column(column, justify="right" if column in ("fake probability", "frames")
                         else "left")
    for p in result.predictions:
        table.add_row(escape(p.id), "-" if p.score is None else f"{p.score:.3f}",
                      (f"[red]{p.label}[/]" if p.label == "fake" else p.label) or "-",
                      str(p.frames_used), sparkline([t["score"] for t in p.timeline]),
                      escape(p.error) or ("" if p.status == "ok" else p.status))
    return table


def explain_table(result, title: str) -> Table:
    table = Table(title=title)
    for column in ("item", "score", "label", "true", "top frames (frame: score)",
                   "hottest regions (#1)", "s"):
        table.add_column(column, justify="right" if column in ("score", "s") else "left")
    for item in result.items:
        top = item.top_frames
        table.add_row(escape(item.id), f"{item.score:.3f}", item.label, item.true_label or "-",
                      ", ".join(f"{f.frame_index}: {f.score:.2f}" for f in top),
                      ", ".join(r["region"] for r in top[0].regions) or "-",
                      f"{item.seconds:.1f}")
    return table


def derive_table(summary) -> Table:
    table = Table(title=f"derive -> {summary.cache} ({summary.seconds:.1f} s)")
    for column in ("feature set", "dim", "items computed now", "already done",
                   "base not extracted"):
        table.add_column(column, justify="left" if column == "feature set" else "right")
    for name, counts in summary.feature_sets.items():
        table.add_row(name, str(counts["dim"]), str(counts["computed"]),
                      str(counts["already_done"]), str(counts["no_base"]))
    return table


class ProgressReporter:
    """A rich progress bar with items/s and ETA; failures are printed above it."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            SpinnerColumn(), TextColumn("[bold]extract[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), TextColumn("[red]{task.fields[failed]}"),
            console=console, transient=False,
        )
        self.task = None
        self.failed = 0

    def __enter__(self) -> "ProgressReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("extract", total=total, rate="", failed="")

    def advance(self, item, status: str, message: str = "") -> None:
        if message:
            self.failed += 1
            self.progress.console.print(f"[yellow]skip[/] {escape(item.id)}: {escape(message)}",
                                        highlight=False, soft_wrap=True)
        self.progress.advance(self.task)
        task = self.progress.tasks[self.task]
        speed = task.finished_speed or task.speed
        self.progress.update(
            self.task, rate=f"{speed:.2f} items/s" if speed else "",
            failed=f"{self.failed} failed" if self.failed else "")


class FinetuneReporter:
    """A progress bar over the batches of the running epoch, and one line per finished epoch."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}[/]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=console, transient=True)
        self.task = None

    def __enter__(self) -> "FinetuneReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def message(self, text: str) -> None:
        self.progress.console.print(f"[dim]{text}[/]", highlight=False)

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("epoch", total=batches, epoch=f"{epoch}/{epochs}",
                                           loss="")

    def batch(self, done: int, loss: float) -> None:
        self.progress.update(self.task, completed=done, loss=f"{loss:.4f}")

    def end_epoch(self, log) -> None:
        def num(value: float) -> str:
            return f"{value:.4f}" if math.isfinite(value) else "-"

        self.progress.console.print(
            f"epoch {log.epoch:3d}  loss {num(log.train_loss)}  val loss {num(log.val_loss)}  "
            f"val AUC {num(log.val_auc)}  video AUC {num(log.val_video_auc)}  "
            f"{log.seconds:6.1f} s  {log.crops_per_second:5.1f} crops/s"
            f"{'  [green]best[/]' if log.improved else ''}", highlight=False)
