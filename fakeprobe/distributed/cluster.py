"""The cluster a run works on: a scheduler at ``address``, or a local one made for the run."""

from __future__ import annotations

import contextlib
from typing import Iterator

from fakeprobe.distributed import require_dask


@contextlib.contextmanager
def connect(address: str | None = None, workers: int = 2,
            memory_limit: str | int | None = None) -> Iterator:
    """A ``distributed.Client``: connected to the scheduler at ``address``, or to a
    ``LocalCluster`` of ``workers`` processes (one thread each) that lives as long as the
    block. ``memory_limit`` is per local worker (Dask's default: the machine's memory shared
    out)."""
    require_dask()
    from distributed import Client, LocalCluster

    if address:
        with Client(address) as client:
            yield client
        return
    with LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                      dashboard_address=":0", memory_limit=memory_limit or "auto",
                      silence_logs=40) as cluster, Client(cluster) as client:
        yield client
