"""Training: grouped cross-validation, hold-out and cross-dataset evaluation of the heads with
their hyperparameter search (:mod:`~fakeprobe.training.cv`, :mod:`~fakeprobe.training.search`),
and fine-tuning of a backbone on stored face crops (:mod:`~fakeprobe.training.finetune`).

It sits above :mod:`fakeprobe.classifiers` (the heads it fits) and below the evaluation and
application layers; see ``docs/architecture.md``.
"""
