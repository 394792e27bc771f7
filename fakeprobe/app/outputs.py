"""Output files: refuse bad output paths before any work, write CSV tables atomically."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional, Sequence

from fakeprobe.errors import OutputError

if TYPE_CHECKING:
    from fakeprobe.app.scoring import PredictResult


def check_outputs(outputs: Sequence[tuple[Optional[Path | str], str, str]],
                  inputs: Iterable[Path | str | None] = (), force: bool = False) -> None:
    """Refuse, before any work, the outputs ``(path, kind, option)`` that are inputs, existing
    files of another kind (unless ``force``), twice the same file, or not writable."""
    from fakeprobe.fileio import check_output

    inputs = [Path(i) for i in inputs if i is not None]
    seen: dict[Path, str] = {}
    for path, kind, option in outputs:
        if path is None:
            continue
        path = Path(path)
        key = path.resolve()
        if key in seen:
            raise OutputError(f"{option} and {seen[key]} name the same file {path}")
        seen[key] = option
        check_output(path, kind, inputs=inputs, force=force, option=option)


def run_outputs(save_run: Path | str | None, report: Path | str | None
                ) -> list[tuple[Optional[Path], str, str]]:
    """The outputs of a run record and an HTML report (the HTML, and its markdown beside it)."""
    outputs = [(Path(save_run) if save_run else None, "run", "--save-run"),
               (Path(report) if report else None, "html", "--report")]
    if report:
        from fakeprobe.evaluation.report import markdown_path

        outputs.append((markdown_path(report), "markdown", "--report (its markdown)"))
    return outputs


def csv_text(value: str) -> str:
    """A text cell that a spreadsheet will not run: one starting with ``= + - @`` (or a tab
    or carriage return) gets a leading ``'`` (OWASP's advice against CSV injection)."""
    return "'" + value if value.startswith(("=", "+", "-", "@", "\t", "\r")) else value


def write_predictions_csv(result: "PredictResult", path: Path | str) -> Path:
    """One row per item (id, path, status, fake probability, label, threshold, frames used,
    error), written atomically: a crash leaves the old file or none, never half a table."""
    from fakeprobe.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "path", "status", "fake_probability", "label", "threshold",
                         "frames_used", "error"])
        for p in result.predictions:
            writer.writerow([csv_text(p.id), csv_text(p.path), p.status,
                             "" if p.score is None else f"{p.score:.6f}", p.label or "",
                             f"{result.threshold:.6f}", p.frames_used, csv_text(p.error)])
    return Path(path)


def write_timeline_csv(result: "PredictResult", path: Path | str) -> Path:
    """One row per scored frame (id, frame, time in seconds, track, fake probability),
    written atomically."""
    from fakeprobe.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "frame", "time", "track", "fake_probability"])
        for p in result.predictions:
            for point in p.timeline:
                time_s = point["time"]
                writer.writerow([csv_text(p.id), point["frame"],
                                 f"{time_s:.3f}" if math.isfinite(time_s) else "",
                                 point["track"], f"{point['score']:.6f}"])
    return Path(path)
