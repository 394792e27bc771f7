"""The README's Python API example, runnable as it stands.

    .venv/bin/python scripts/api_example.py [FFPP_DIR] [WORKDIR]

FFPP_DIR defaults to ``../shared/data/ffpp`` (a FaceForensics++ tree), WORKDIR to
``runs/api-example``. Extracts 8 frames of every video, compares three heads on grouped folds,
fits one and scores two videos with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fakeprobe


def main(ffpp: Path, workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    cache = workdir / "ffpp.h5"

    # 1. Faces and features into an HDF5 cache. Running it again adds only what is new.
    extracted = fakeprobe.extract(ffpp, cache, frames=8)
    s = extracted.summary
    print(f"{s.extracted} videos extracted now, {s.faces} of {s.rows} frames with a face")

    # 2. Heads side by side on identical grouped folds (a fake and its source real together).
    compared = fakeprobe.compare(cache, ["logreg", "svm", "xgb"])
    for r in compared.sorted():
        print(f"{r.head:6s} video ROC-AUC {r.video['roc_auc']:.3f}  EER {r.video['eer']:.3f}"
              f"  ({r.protocol})")

    # 3. One head fitted on every video; the model file carries its provenance.
    model = workdir / "logreg.fpm"
    fitted = fakeprobe.fit(cache, "logreg", model, force=True)
    print(f"threshold {fitted.report.threshold:.3f}")

    # 4. Videos scored with the model's own extraction settings.
    videos = sorted(ffpp.glob("original_sequences/actors/c40/videos/*.mp4"))[:1]
    videos += sorted(ffpp.glob("manipulated_sequences/Deepfakes/c40/videos/*.mp4"))[:1]
    predicted = fakeprobe.predict(model, videos, csv=workdir / "scores.csv", force=True)
    for p in predicted.predictions:
        print(f"{p.id}: {p.label} (P(fake) {p.score:.3f}, {p.frames_used} frames)")

    # 5. Errors raised on purpose are typed.
    try:
        fakeprobe.extract(ffpp, cache, frames=16)
    except fakeprobe.ConfigMismatch as exc:
        print(type(exc).__name__, "-", exc)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(Path(args[0]) if args else Path("../shared/data/ffpp"),
         Path(args[1]) if len(args) > 1 else Path("runs/api-example"))
