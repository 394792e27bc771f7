"""Option types shared by several commands (``Annotated`` aliases), with choices named from the
registries. Importing this module imports no network or HDF5 library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def names(kind: str) -> str:
    """The names a choice accepts (``detector``, ``backbone``, ``head``, ``aggregate``,
    ``smoothing``), for help texts."""
    from fakeprobe.app.cache import choices

    return ", ".join(choices(kind))


DETECTOR_HELP = f"Face detector: {names('detector')}."


CacheArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="An HDF5 cache written by `fakeprobe extract`.")]
ModelArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                          help="A model file from fit-*.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", help="Replace an existing output file even when it is of another kind (a "
    "cache, a model, a video...). An output that is one of the inputs is refused anyway.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or gpu.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random state of splits and heads.")]
WeightsOpt = Annotated[list[str], typer.Option(
    help="Local weights for a backbone, as BACKBONE=PATH (for the keras.applications family "
    "offline, or when the model was extracted with such weights).")]

# --- self-blending ------------------------------------------------------------------------------

BlendSeedOpt = Annotated[int, typer.Option(
    "--blend-seed", help="Seed of the self-blend parameters (one draw per item and face "
    "track, from the seed and the source's id).")]
BlendMaskOpt = Annotated[Optional[str], typer.Option(
    "--blend-mask", help="Self-blend mask: hull (of the face outline) or ellipse.")]
BlendConfigOpt = Annotated[Optional[Path], typer.Option(
    "--blend-config", exists=True, dir_okay=False,
    help="JSON of self-blend ranges (keys of fakeprobe.synth.blend.BlendConfig: mask, erode, "
    "blur, blend_ratio, scale, shift, hue, saturation, brightness, contrast, sharpen_or_blur, "
    "sharpen_amount, filter_sigma); `fakeprobe synth --show-config` prints the defaults.")]

# --- which items --------------------------------------------------------------------------------

DatasetOpt = Annotated[list[str], typer.Option(
    "--dataset", help="Keep items whose dataset matches (shell pattern, repeatable).")]
MethodOpt = Annotated[list[str], typer.Option(
    "--method", help="Keep items whose method matches (e.g. Deepfakes, original_*).")]
XDatasetOpt = Annotated[list[str], typer.Option(
    "--exclude-dataset", help="Drop items whose dataset matches.")]
XMethodOpt = Annotated[list[str], typer.Option(
    "--exclude-method", help="Drop items whose method matches (leave one method out).")]
XGroupOpt = Annotated[list[str], typer.Option(
    "--exclude-group", help="Drop items whose group matches, e.g. 'ffpp:actor:*' (the FF++ "
    "actor originals and their pseudo-fakes).")]

# --- heads --------------------------------------------------------------------------------------

FeaturesOpt = Annotated[list[str], typer.Option(
    "--features", "-f", help="Cached feature set(s); repeat to concatenate (default: the "
    "cache's first backbone). In `compare`, each --features is one row; join with '+' to "
    "concatenate, e.g. efficientnet-lite0+spectrum.")]
AggOpt = Annotated[str, typer.Option(
    "--aggregate", help=f"Frame-to-video rule: {names('aggregate')}.")]
SmoothOpt = Annotated[str, typer.Option(
    "--smooth", help=f"Temporal smoothing before aggregation: {names('smoothing')}.")]
WindowOpt = Annotated[int, typer.Option(min=1, help="Window (frames) of moving/median "
                                        "smoothing.")]
AlphaOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Weight of the new frame in "
                                         "exponential smoothing.")]
CvOpt = Annotated[int, typer.Option("--cv", min=2, help="Folds of grouped cross-validation.")]
HoldoutOpt = Annotated[Optional[float], typer.Option(
    min=0.05, max=0.95, help="Instead of CV: hold out this share of the groups.")]
EvalOpt = Annotated[Optional[Path], typer.Option(
    "--eval", exists=True, dir_okay=False,
    help="Instead of CV: train on CACHE (after the filters), test on every labelled item of "
    "this other cache (cross-dataset).")]
SearchOpt = Annotated[Optional[str], typer.Option(
    help="Hyperparameter search inside the training folds: grid, random or bayes (Optuna's "
    "TPE sampler, seeded; needs fakeprobe[bayes]).")]
NIterOpt = Annotated[int, typer.Option(
    "--n-iter", min=1, help="Candidates of --search random, trials of --search bayes.")]
SmoteOpt = Annotated[bool, typer.Option(
    "--smote", help="Balance classes by SMOTE oversampling inside each training fold instead "
    "of sample weights (needs fakeprobe[smote]).")]
TrainDatasetOpt = Annotated[list[str], typer.Option(
    "--train-dataset", help="Train only on items whose dataset matches (shell pattern, "
    "repeatable); every selected item is still split by group and scored, so the other "
    "datasets are out-of-domain columns of the same folds (cross-dataset evaluation).")]
TrainMethodOpt = Annotated[list[str], typer.Option(
    "--train-method", help="Train only on fakes of these methods (and every real); the other "
    "methods are scored unseen (leave-methods-out).")]
TrainFakesOpt = Annotated[str, typer.Option(
    "--train-fakes", help="Which fakes train: all, real (true fakes only) or self-blend "
    "(pseudo-fakes from `extract --self-blend` only). Pseudo-fakes are never scored.")]
ScoreBlendOpt = Annotated[bool, typer.Option(
    "--score-self-blend", help="Also score pseudo-fakes (method self_blend), for data with no "
    "true fakes such as `fakeprobe sample`: it then measures how well blends are found, not "
    "deepfakes.")]
SaveRunOpt = Annotated[Optional[Path], typer.Option(
    "--save-run", dir_okay=False, help="Write the run record (every score, per frame too, "
    "with provenance) as JSON for `fakeprobe report`.")]
ReportOpt = Annotated[Optional[Path], typer.Option(
    "--report", dir_okay=False, help="Write a self-contained HTML report (plots, tables, "
    "timelines; a markdown summary and PNGs beside it).")]


def selection(dataset, method, exclude_dataset, exclude_method, exclude_group=()):
    """The item selection of the shared filter options."""
    from fakeprobe.app.protocol import make_selection

    return make_selection(dataset, method, exclude_dataset, exclude_method, exclude_group)
