"""Reading a model's decisions: ``explain`` (occlusion heatmaps of cached items) and ``report``
(one self-contained HTML report of a run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from fakeprobe.app._result import Wrapped
from fakeprobe.app.options import parse_weights
from fakeprobe.app.outputs import check_outputs
from fakeprobe.errors import FakeprobeError, InvalidOption

#: What hides an occluded patch, and the units of the heat.
FILLS = ("blur", "grey")
SPACES = ("logit", "proba")


class ExplainResult(Wrapped):
    """Explanations of cached items: ``items`` (per item its score, label, top frames and
    their hottest face regions), ``failures``, the ``pngs`` and ``json_path`` written."""


class ReportResult(Wrapped):
    """The files a report wrote: ``html``, ``markdown``, the ``figures`` folder and its count
    of ``images``."""


def explain(model: Path | str, cache: Path | str, out_dir: Path | str, *,
            ids: Sequence[str] = (), top_fakes: int | None = None, top_frames: int = 4,
            fill: str = "blur", patch: int | None = None, space: str = "logit",
            weights: Iterable[str] | Mapping[str, str] | None = None, device: str = "auto",
            progress: Callable[[str], None] | None = None) -> ExplainResult:
    """Which frames and which face regions drove a model's score of cached items: the items
    ``ids`` and the ``top_fakes`` most fake-scored ones (5 when neither is given). Writes one
    PNG per item and explanations.json in ``out_dir``; returns the explanations (``to_dict()``
    for JSON). Loading a model file runs no code from it."""
    from fakeprobe.evaluation.explain import explain_items
    from fakeprobe.fileio import check_output_folder

    check_output_folder(out_dir, inputs=[model, cache])
    if fill not in FILLS:
        raise InvalidOption(f"use {' or '.join(FILLS)}", "--fill")
    if space not in SPACES:
        raise InvalidOption(f"use {' or '.join(SPACES)}", "--space")
    return ExplainResult(explain_items(
        model, cache, out_dir, ids=list(ids), top_fakes=top_fakes if top_fakes or ids else 5,
        top_k=top_frames, patch=patch, fill=fill, space=space, device=device,
        weights=parse_weights(weights), progress=progress))


def explanations(record: dict[str, Any], run: Path, model: Path | None, cache: Path | None,
                 n: int, progress: Callable[[str], None] | None = None
                 ) -> list[tuple[str, bytes]]:
    """(title, PNG) occlusion explanations of the ``n`` most fake-scored items of the cache
    (the run's, or ``cache``), through ``model`` (or the run, when it is a model file)."""
    from fakeprobe.classifiers.model import load_model
    from fakeprobe.evaluation.explain import (ModelScorer, explain_video, render_explanation,
                                              top_scoring)

    model_path = model or (run if record.get("model") else None)
    if model_path is None:
        raise FakeprobeError("--explain needs a model: pass a model file, or --model MODEL")
    cache_path = Path(cache or record.get("cache", {}).get("path") or "")
    if not cache_path.is_file():
        raise FakeprobeError(f"--explain needs the cache; {cache_path} is not there (--cache)")
    loaded = load_model(model_path)
    scorer = ModelScorer(loaded)
    out = []
    for video_id, score in top_scoring(loaded, cache_path, n):
        if progress:
            progress(video_id)
        expl = explain_video(loaded, cache_path, video_id, scorer=scorer)
        out.append((f"{video_id} (video score {score:.3f})", render_explanation(expl)))
    return out


def report(run: Path | str, out: Path | str, *, timelines: int = 6, explain: int = 0,
           model: Path | str | None = None, cache: Path | str | None = None,
           force: bool = False, progress: Callable[[str], None] | None = None
           ) -> ReportResult:
    """Write one self-contained HTML report of a run record or a model file's stored
    evaluation (markdown and PNGs beside it); ``explain``: occlusion heatmaps of the N most
    fake-scored items (needs a model and the cache). Returns the written paths (frozen,
    ``to_dict()``). Of a model file only its provenance and evaluation (JSON) are read,
    unless ``explain`` asks for the model."""
    from fakeprobe.evaluation.report import markdown_path, write_report
    from fakeprobe.evaluation.runs import load_run

    run, out = Path(run), Path(out)
    model = Path(model) if model is not None else None
    cache = Path(cache) if cache is not None else None
    check_outputs([(out, "html", "--out"), (markdown_path(out), "markdown",
                                            "--out (its markdown)")], [run, model, cache], force)
    record = load_run(run)
    figures = explanations(record, run, model, cache, explain, progress) if explain else []
    return ReportResult(write_report(record, out, timelines=timelines, explanations=figures))
