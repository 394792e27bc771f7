"""The HDF5 feature cache: this package is the one place that reads and writes it.

Layout (schema version 2)::

    /                 attrs: schema_version, fakeprobe_version, created, updated,
                      extractor_config (JSON), self_blend (JSON, with --self-blend)
    /videos/<column>  one entry per media item: id, path, kind, label (1 fake, 0 real, -1 none),
                      group, dataset, method, fps, width, height, n_frames, status, error,
                      row_start, row_count
    /frames/<column>  one row per sampled frame and face: video (index into /videos), frame_index,
                      timestamp, box (x, y, w, h), landmarks (5 x 2), score, track, has_face
    /features/<name>/data   (rows, dim) float32, NaN on rows without a face
    /features/<name>/done   (videos,) bool: the feature set was computed for that video
                      attrs: config (JSON: backbone settings and weights checksum)
    /crops            (rows, S, S, 3) uint8 RGB aligned faces, gzip, only with --keep-crops
    /commits/<column> one entry per commit: finished, items, rows, fakeprobe_version

A frame with no face is a row with ``has_face=False`` and NaN box, landmarks and features; a
media item that could not be read has a status other than ``ok``/``no_face`` and no rows.
Version 1 (no ``/commits``) is read as it is and becomes version 2 on its next commit.

A cache is one file the user names (``cache.h5``); beside it live, while they are needed,
``cache.h5.lock`` (the writer lock, during a run), ``cache.h5.staging/`` (finished items not
committed yet) and ``cache.h5.journal`` (during a commit, or after one was killed). Copy, move
or delete ``cache.h5`` with its ``.staging`` folder and ``.journal`` file when they exist.

Crash safety: extraction never writes the HDF5 file directly. Each finished item is first
*staged* (:mod:`~fakeprobe.features.cache.staging`). A *commit* (:mod:`~.commit`) appends the
staged items to the cache in place, through an undo journal (:mod:`~.journal`) that lets it roll
the file back to what it was before the commit, byte for byte; staged files are removed only
after the commit point. A crash, ``kill -9`` or Ctrl-C at any moment therefore leaves the
previous cache (or the committed one) plus whole staged items, which the next run commits:
nothing is lost and, since items are keyed by id, nothing is duplicated. A commit's cost is
proportional to what it adds, not to the size of the cache.

One writer at a time (:mod:`~.lock`): ``extract`` and ``derive`` hold a lock on
``<cache>.lock`` for their whole run, and a commit takes it too. Readers
(:class:`CacheReader`) validate the structure when they open a cache and turn any read error
into :class:`CacheCorrupt`: one line, never a traceback.
"""

from __future__ import annotations

import shutil  # noqa: F401  (tests reach the standard modules the cache uses through it)

import numpy as np  # noqa: F401

from fakeprobe.core.schema import LABEL_CODES, LABEL_NAMES, READ_STATUSES
from fakeprobe.features.cache.commit import BATCH_BYTES, COMMIT_MARGIN_BYTES, commit  # noqa: F401
from fakeprobe.features.cache.journal import PAUSE_VARIABLE, journal_path, recover
from fakeprobe.features.cache.lock import (holds_lock, lock_path, run_settings, staging_dir,
                                           writer)
from fakeprobe.features.cache.merge import Merger
from fakeprobe.features.cache.reader import CacheReader, summarize
from fakeprobe.features.cache.schema import (READABLE_VERSIONS, SCHEMA_VERSION, FrameRows,
                                             StagedItem, VideoRecord, check_config,
                                             compatible_versions, feature_config_differences,
                                             retried)
from fakeprobe.features.cache.staging import load_staged, stage, staged_files

__all__ = [
    "BATCH_BYTES", "COMMIT_MARGIN_BYTES", "LABEL_CODES", "LABEL_NAMES", "PAUSE_VARIABLE",
    "READABLE_VERSIONS", "READ_STATUSES", "SCHEMA_VERSION", "CacheReader", "FrameRows",
    "Merger", "StagedItem", "VideoRecord", "check_config", "commit", "compatible_versions",
    "feature_config_differences", "holds_lock", "journal_path", "load_staged", "lock_path",
    "recover", "retried", "run_settings", "stage", "staged_files", "staging_dir", "summarize",
    "writer",
]
