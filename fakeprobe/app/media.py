"""Media in: ``extract`` faces and features into a cache, ``synth`` self-blended pseudo-fakes,
``sample`` a small offline data set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from fakeprobe.app._result import JsonResult, Wrapped
from fakeprobe.app.options import backbones_and_weights, blend_config, cache_settings
from fakeprobe.errors import FakeprobeError, InvalidOption


@dataclass(frozen=True)
class ExtractResult(JsonResult):
    """What an extraction did (``summary``: counts, timings, failures), with the extractor
    config it ran with and the settings it took from the existing cache (``inherited``)."""

    summary: Any  # fakeprobe's ExtractSummary
    config: Any  # ExtractorConfig
    inherited: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """At least one item is usable in the cache after this run."""
        return self.summary.ok

    def to_dict(self) -> dict[str, Any]:
        return self.summary.to_dict()


def extract(inputs: Iterable[Path | str] | Path | str, out: Path | str, *, workers: int = 2,
            batch_size: int = 32, device: str = "auto",
            weights: Iterable[str] | Mapping[str, str] | None = None,
            detector_weights: Path | str | None = None, commit_every: float = 600.0,
            frame_folders: bool = False, self_blend: bool = False, blend_seed: int = 0,
            blend_mask: str | None = None,
            blend_config_file: Path | str | Mapping[str, Any] | None = None,
            reporter=None, log: Callable[[str], None] | None = None,
            engine: str = "local", address: str | None = None,
            **settings: Any) -> ExtractResult:
    """Extract faces and features of labelled media into the HDF5 cache ``out``.

    ``settings`` are :class:`~fakeprobe.core.config.ExtractorConfig` fields (``frames``,
    ``fps``, ``detector``, ``backbones``, ``keep_crops``...); on an existing cache, those not
    given are the cache's own (said through ``log``), else the defaults. A backbone
    ``NAME:PATH`` also names its weights file. Re-running skips what is cached and adds what
    is new; a crash or Ctrl-C loses nothing (``KeyboardInterrupt`` propagates after the
    finished items are committed). ``reporter`` follows the extractor's progress protocol.
    ``engine="dask"`` runs the items as tasks on a Dask cluster (the scheduler at ``address``,
    or ``workers`` local processes): see :mod:`fakeprobe.distributed`.
    """
    from fakeprobe.core.config import ExtractorConfig
    from fakeprobe.pipeline.run import extract as run_extract
    from fakeprobe.pipeline.steps import SelfBlend
    from fakeprobe.features.cache import writer as cache_writer
    from fakeprobe.fileio import check_output

    inputs = [Path(inputs)] if isinstance(inputs, (str, Path)) else [Path(p) for p in inputs]
    out = Path(out)
    if settings.get("fps") is not None and "frames" in settings:
        raise InvalidOption("--frames and --fps are two ways to sample; give one (with --fps, "
                            "--max-frames caps the count)", "--fps")
    weight_files: dict[str, str] = {}
    if "backbones" in settings:
        names = settings["backbones"]
        names = [names] if isinstance(names, str) else list(names)
        settings["backbones"], weight_files = backbones_and_weights(names, weights)
    else:
        _, weight_files = backbones_and_weights((), weights)
    inherited = cache_settings(out, settings)
    changed = {k: v for k, v in inherited.items() if k != "backbones"}
    if changed and log:
        log(f"{out}'s settings for what was not given: "
            + ", ".join(f"{k} {v}" for k, v in changed.items()))
    try:
        config = ExtractorConfig(**{**settings, **inherited})
    except TypeError as exc:
        raise InvalidOption(str(exc)) from None
    except ValueError as exc:  # e.g. min_face_score nan, which no range check catches
        raise InvalidOption(str(exc)) from None
    blending = (SelfBlend(blend_config(blend_config_file, blend_mask), blend_seed)
                if self_blend else None)
    check_output(out, "cache", inputs=inputs, force=None, option="--out")
    attrs = {"self_blend": blending.to_attr()} if blending else {}
    if engine not in ("local", "dask"):
        raise InvalidOption(f"unknown engine {engine!r}: local or dask", "--engine")
    if engine == "dask":
        from fakeprobe.distributed import require_dask

        require_dask()
        from fakeprobe.distributed.extract import extract as run_extract  # noqa: F811
    cluster = {"address": address, "log": log} if engine == "dask" else {}
    with cache_writer(out, config, attrs, log=log):
        summary = run_extract(
            inputs, out, config, **cluster, workers=workers, device=device, batch_size=batch_size,
            weights=weight_files,
            detector_weights=str(detector_weights) if detector_weights else None,
            commit_every=commit_every, frame_folders=frame_folders, reporter=reporter,
            self_blend=blending)
    return ExtractResult(summary, config, inherited)


def interrupted_note(cache_path: Path | str) -> str:
    """What an interrupted writer leaves: items in the cache, items only staged beside it."""
    from fakeprobe.features.cache import CacheReader, staged_files, staging_dir

    try:
        with CacheReader(cache_path) as reader:
            line = f"{cache_path} holds {reader.n_videos} committed item(s)"
    except FakeprobeError:
        line = f"no cache written at {cache_path} yet"
    staged = len(staged_files(cache_path))
    if staged:
        line += (f"; {staged} finished item(s) are staged in {staging_dir(cache_path)}, not in "
                 "the cache yet: the next run commits them")
    return line + "; run the same command again to resume"


class SynthResult(Wrapped):
    """What a synthesis wrote: ``written``, ``failed``, ``skipped_not_real``, per item
    ``results``, the ``labels_csv`` manifest, ``problems``."""


class SampleResult(Wrapped):
    """The sample made: ``clips``, the ``photos`` filmed, faces found per frame, the
    ``labels_csv`` and ``holdout_csv`` manifests, ``problems``."""


def synth(inputs: Iterable[Path | str], out_dir: Path | str, *, seed: int = 0,
          blend_mask: str | None = None,
          blend_config_file: Path | str | Mapping[str, Any] | None = None,
          detector: str = "yunet", detect_size: int = 640, max_frames: int | None = None,
          contact_sheet: Path | str | None = None, force: bool = False,
          progress: Callable | None = None, on_start: Callable[[int], None] | None = None
          ) -> SynthResult:
    """Write self-blended pseudo-fakes of real videos and images under ``out_dir``, with the
    manifest ``labels.csv``; ``contact_sheet``: also a PNG of real crops beside their blends.
    Returns the synthesis summary (``to_dict()`` for JSON)."""
    from fakeprobe.app.outputs import check_outputs
    from fakeprobe.fileio import check_output_folder
    from fakeprobe.synth.media import synthesize

    config = blend_config(blend_config_file, blend_mask)
    inputs = [Path(p) for p in inputs]
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise FakeprobeError(f"no such file or folder: {', '.join(missing)}")
    check_output_folder(out_dir, inputs=inputs)
    check_outputs([(contact_sheet, "image", "--contact-sheet")], inputs, force)
    summary = synthesize(inputs, out_dir, config=config, seed=seed, detector=detector,
                         detect_size=detect_size, max_frames=max_frames, progress=progress,
                         on_start=on_start)
    if contact_sheet is not None:
        from fakeprobe.synth.sheet import contact_sheet as make_sheet

        make_sheet([r for r in summary.results if r.status == "ok"], contact_sheet,
                   config=config, seed=seed, detector=detector, detect_size=detect_size)
    return SynthResult(summary)


def sample(out_dir: Path | str, *, clips: int = 6, holdout: int = 1, seconds: float = 2.0,
           seed: int = 0, progress: Callable[[str], None] | None = None) -> SampleResult:
    """Make a small labelled video sample offline (face photos filmed by a moving virtual
    camera, and their self-blends): a pipeline check, not a deepfake data set. Returns the
    sample's summary (a dataclass)."""
    from fakeprobe.fileio import check_output_folder
    from fakeprobe.synth.sample import make_sample

    check_output_folder(out_dir)
    return SampleResult(make_sample(out_dir, clips_per_photo=clips, holdout_per_photo=holdout,
                                    seed=seed, seconds=seconds, progress=progress))
