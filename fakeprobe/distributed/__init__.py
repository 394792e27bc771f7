"""Extraction and heads past one machine, on a Dask cluster (``pip install "fakeprobe[dask]"``).

``extract --engine dask`` splits the media list into tasks: each worker process holds the
detector and the backbones once (:class:`~fakeprobe.distributed.extract.ExtractorPlugin`),
decodes, detects and embeds its items and stages each one as a plain run does; the driver
commits the staged items into the cache under the writer lock as they arrive. Without an
address the cluster is a ``LocalCluster`` of worker processes on this machine; with one, every
worker must reach the cache's staging folder (``<cache>.staging/``) on a shared filesystem at
the same path.

``fit-xgb --engine dask`` cross-validates the XGBoost head through ``xgboost.dask`` on the
cache's features read in chunks, and ``fit-logreg --engine dask`` a logistic head fitted out of
core by SGD over the same chunks (:mod:`~fakeprobe.distributed.heads`), so the feature matrix
never has to fit in one process's memory; with ``--out`` the final model is fitted the same way
and saved as a plain model file, and ``compare --engine dask`` tabulates both heads.
"""

from __future__ import annotations

from fakeprobe.errors import FakeprobeError

#: The one line a missing extra gives.
INSTALL_HINT = 'pip install "fakeprobe[dask]"'


def require_dask(*modules: str) -> None:
    """Raise :class:`FakeprobeError` with the install command when Dask (or one of
    ``modules``, e.g. ``dask.dataframe``, which ``xgboost.dask`` needs) is missing."""
    import importlib

    try:
        for name in ("dask", "distributed", *modules):
            importlib.import_module(name)
    except ImportError as exc:
        raise FakeprobeError(f"--engine dask needs Dask ({exc.name} is not installed): "
                             f"{INSTALL_HINT}") from None
