"""Fine-tuning on stored crops, the ``finetuned`` backbone and the ``finetune`` command.

One real (tiny) fine-tune of MobileNetV2 at 64 px on a synthetic cache is shared by the module;
the rest either reads its files or re-runs from copies of its checkpoint.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import write_video
from typer.testing import CliRunner

from fakeprobe.core.config import CONTEXT_MARGIN, ExtractorConfig
from fakeprobe.core.geometry import CropSpec
from fakeprobe.errors import ConfigMismatch, FakeprobeError
from fakeprobe.extractor.align import recrop
from fakeprobe.extractor.components import BACKBONES
from fakeprobe.features import cache as fcache
from fakeprobe.pipeline.run import extract
from fakeprobe.training.finetune import (AugmentConfig, FinetuneConfig, FinetuneError,
                                         SilentReporter, checkpoint_dir, finetune, load_crops,
                                         sidecar_path, split_items)

STORED = 64  # --keep-crops of the test cache
#: The settings of the shared run: small, fast, every part of the network trained.
RUN = FinetuneConfig(input_size=64, epochs=1, batch_size=8, val_fraction=0.25, seed=0)
METHODS = (("real", "original"), ("fake", "Deepfakes"), ("fake", "self_blend"))


def make_media(root: Path, n_groups: int = 4) -> Path:
    """A CSV manifest of ``n_groups`` groups, each a real video, a fake and a self-blend."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["path,label,group,dataset,method"]
    for g in range(n_groups):
        for k, (label, method) in enumerate(METHODS):
            name = f"g{g}_{method}.mp4"
            write_video(root / name, n_frames=8, seed=10 * g + k)
            lines.append(f"{name},{label},g{g},synthetic,{method}")
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


@pytest.fixture(scope="module")
def crop_cache(tmp_path_factory) -> Path:
    """A cache of 12 synthetic videos (4 groups x real, Deepfakes, self_blend), 4 frames each,
    found by the stub detector, with 64 px crops stored (``keep_crops=64``)."""
    root = tmp_path_factory.mktemp("ft")
    manifest = make_media(root / "media")
    config = ExtractorConfig(frames=4, detector="test-blob", backbones=("test-colour",),
                             keep_crops=STORED)
    summary = extract([manifest], root / "crops.h5", config)
    assert (summary.extracted, summary.failed) == (12, 0)
    return root / "crops.h5"


@pytest.fixture(scope="module")
def trained(crop_cache):
    """One epoch of fine-tuning (:data:`RUN`) on ``crop_cache``: (result, model path)."""
    out = crop_cache.parent / "net" / "net.keras"
    out.parent.mkdir()
    result = finetune(crop_cache, out, RUN, device="cpu")
    return result, out


def copy_run(out: Path, dest: Path) -> Path:
    """The model and its checkpoint folder, copied under ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(out, dest / out.name)
    shutil.copytree(checkpoint_dir(out), checkpoint_dir(dest / out.name))
    return dest / out.name


# --- data and split -------------------------------------------------------------------------

def test_split_never_puts_a_group_on_both_sides():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{g}" for g in range(10)], 3)
    labels = np.tile([0, 1, 1], 10)
    self_blend = np.tile([False, False, True], 10)
    for fold in range(5):
        for fakes in ("all", "real", "self-blend"):
            split = split_items(labels, groups, self_blend, val_fraction=0.2, val_fold=fold,
                                fakes=fakes, seed=int(rng.integers(100)))
            assert not set(groups[split.train]) & set(groups[split.val])
            assert set(groups[split.val]) == set(split.val_groups)
            # validation: reals and true fakes only, since there are true fakes
            assert not self_blend[split.val].any() and len(split.val)
            assert set(labels[split.val]) == {0, 1}
            train_fakes = split.train[labels[split.train] == 1]
            if fakes == "real":
                assert not self_blend[train_fakes].any()
            elif fakes == "self-blend":
                assert self_blend[train_fakes].all()
            else:
                assert self_blend[train_fakes].any() and not self_blend[train_fakes].all()


def test_validation_falls_back_to_self_blend_without_true_fakes():
    groups = np.repeat(["a", "b", "c", "d"], 2)
    labels = np.tile([0, 1], 4)
    split = split_items(labels, groups, labels == 1, val_fraction=0.25)
    assert split.val_uses_self_blend and set(labels[split.val]) == {0, 1}
    with pytest.raises(FinetuneError, match="single class"):
        split_items(labels, groups, labels == 1, val_fraction=0.25, fakes="real")


def test_crops_are_cut_to_the_input_size(crop_cache):
    data = load_crops(crop_cache, input_size=48)
    assert data.crops.shape[1:] == (48, 48, 3) and data.crops.dtype == np.uint8
    assert len(data.ids) == 12 and data.self_blend.sum() == 4
    with fcache.CacheReader(crop_cache) as cache:
        first = cache.crops(slice(0, 1))
    expected = recrop(first, CropSpec(STORED, CONTEXT_MARGIN), CropSpec(48, CONTEXT_MARGIN))
    np.testing.assert_array_equal(data.crops[0], expected[0])
    with pytest.raises(FinetuneError, match="upsampled"):
        load_crops(crop_cache, input_size=96)
    assert load_crops(crop_cache, input_size=96, allow_upsample=True).upsampled


def test_a_cache_without_crops_is_refused_clearly(tmp_path):
    manifest = make_media(tmp_path / "media", n_groups=2)
    path = tmp_path / "nocrops.h5"
    extract([manifest], path, ExtractorConfig(frames=2, detector="test-blob",
                                              backbones=("test-colour",)))
    with pytest.raises(FinetuneError, match="--keep-crops"):
        finetune(path, tmp_path / "net.keras", RUN, device="cpu")
    assert not (tmp_path / "net.keras").exists()


def test_augmentation_is_seeded_and_keeps_shape():
    crops = np.random.default_rng(0).integers(0, 256, (6, 40, 40, 3), dtype=np.uint8)
    config = AugmentConfig(flip=1, jitter=1, blur=1, jpeg=1, cutout=1)
    a = config.apply(crops, np.random.default_rng(1))
    b = config.apply(crops, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a.shape == crops.shape and a.dtype == np.uint8 and (a != crops).any()
    np.testing.assert_array_equal(AugmentConfig.only([]).apply(crops, np.random.default_rng()),
                                  crops)
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentConfig.only(["rotate"])


# --- the run and its files ------------------------------------------------------------------

def test_finetune_writes_the_best_model_with_provenance(trained, crop_cache):
    result, out = trained
    assert (result.epochs_run, result.resumed_from, result.best_epoch) == (1, 0, 1)
    assert [h["epoch"] for h in result.history] == [1]
    assert result.train_items + result.val_items <= 12 and result.val_items >= 2
    assert np.isfinite(result.history[0]["train_loss"])
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.read("fakeprobe.json"))
    assert meta["base"] == "mobilenet-v2" and meta["input_size"] == 64
    assert meta["crop_margin"] == CONTEXT_MARGIN and meta["seed"] == 0
    assert meta["training_cache"]["path"] == str(crop_cache.resolve())
    assert meta["versions"]["tensorflow"] and meta["history"][0]["epoch"] == 1
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["epochs_run"] == 1 and sidecar["best_epoch"] == 1
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["epoch"] == 1 and (checkpoint_dir(out) / state["last"]).is_file()
    assert not list(checkpoint_dir(out).glob(".*tmp*"))


def test_the_model_loads_as_the_finetuned_backbone(trained, crop_cache):
    _, out = trained
    backbone = BACKBONES.create("finetuned", device="cpu", weights=str(out), batch_size=4)
    assert backbone.crop == CropSpec(64, CONTEXT_MARGIN) and backbone.dim == 128
    crops = load_crops(crop_cache, input_size=64).crops[:7]
    vectors = backbone.embed(crops)
    assert vectors.shape == (7, 128) and vectors.dtype == np.float32
    assert np.isfinite(vectors).all()
    config = backbone.config()
    assert config["name"] == "finetuned" and config["crop_size"] == 64
    from fakeprobe.core.checksums import sha256_file

    assert config["weights_sha256"] == sha256_file(out)
    with pytest.raises(FakeprobeError, match="--weights finetuned="):
        BACKBONES.create("finetuned", device="cpu")


def test_extract_adds_finetuned_features_from_stored_crops(trained, crop_cache, tmp_path,
                                                           monkeypatch):
    from fakeprobe.pipeline import run as pipeline

    _, out = trained
    cache = tmp_path / "c.h5"
    shutil.copy(crop_cache, cache)
    manifest = crop_cache.parent / "media" / "manifest.csv"

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the crops were stored")

    monkeypatch.setattr(pipeline, "read_media", no_decoding)
    config = ExtractorConfig(frames=4, detector="test-blob", keep_crops=STORED,
                             backbones=("test-colour", "finetuned"))
    summary = extract([manifest], cache, config, weights={"finetuned": str(out)})
    assert (summary.features_added, summary.failed) == (12, 0)
    with fcache.CacheReader(cache) as reader:
        features = reader.features("finetuned")
        face = reader.frames(("has_face",))["has_face"]
        stored = reader.crops(np.flatnonzero(face))
        assert reader.feature_sets["finetuned"]["weights_sha256"]
    assert np.isfinite(features[face]).all() and features.shape[1] == 128
    backbone = BACKBONES.create("finetuned", device="cpu", weights=str(out))
    spec = CropSpec(STORED, CONTEXT_MARGIN)  # what the extractor feeds: the recropped crops
    np.testing.assert_allclose(features[face], backbone.embed(recrop(stored, spec, spec)),
                               rtol=1e-4, atol=1e-4)

    # another fine-tuned network under the same name is refused by the cache
    other = tmp_path / "other.keras"
    shutil.copy(out, other)
    with zipfile.ZipFile(other, "a") as archive:
        archive.writestr("note.txt", "another network")
    with pytest.raises(ConfigMismatch, match="weights_sha256"):
        extract([manifest], cache, config, weights={"finetuned": str(other)})


def test_resume_continues_after_the_last_epoch_and_survives_ctrl_c(trained, crop_cache,
                                                                    tmp_path):
    first, out = trained
    out = copy_run(out, tmp_path / "run")

    class CtrlC(SilentReporter):
        """Presses Ctrl-C after the first batch of epoch 3."""

        def __init__(self):
            self.epoch = 0

        def start_epoch(self, epoch, epochs, batches):
            self.epoch = epoch

        def batch(self, done, loss):
            if self.epoch == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(crop_cache, out, replace(RUN, epochs=3), device="cpu", progress=CtrlC())
    state = json.loads((checkpoint_dir(out) / "state.json").read_text())
    assert state["epoch"] == 2  # epoch 2 was saved, the interrupted epoch 3 was not
    assert state["history"][0] == first.history[0]  # epoch 1 was not trained again
    assert list(checkpoint_dir(out).glob("epoch-*.keras")) == [checkpoint_dir(out) /
                                                              "epoch-0002.keras"]

    logs = []
    result = finetune(crop_cache, out, replace(RUN, epochs=3), device="cpu",
                      progress=logs.append)
    assert result.resumed_from == 2 and result.epochs_run == 3
    assert [log.epoch for log in logs] == [3]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[:2] == state["history"]

    again = finetune(crop_cache, out, replace(RUN, epochs=3), device="cpu")
    assert (again.resumed_from, again.epochs_run, len(again.history)) == (3, 3, 3)


def test_changed_settings_are_refused_unless_restarted(trained, crop_cache, tmp_path):
    _, out = trained
    out = copy_run(out, tmp_path / "run")
    with pytest.raises(FinetuneError, match="lr: 0.0001 vs 0.001"):
        finetune(crop_cache, out, replace(RUN, lr=1e-3), device="cpu")
    with pytest.raises(FinetuneError, match="must end in .keras"):
        finetune(crop_cache, tmp_path / "net.h5", RUN, device="cpu")


# --- the command ------------------------------------------------------------------------------

def test_finetune_command(crop_cache, tmp_path):
    from fakeprobe.cli import app

    out = tmp_path / "cli.keras"
    args = ["finetune", str(crop_cache), "--out", str(out), "--input-size", "48",
            "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25",
            "--freeze-until", "-1", "--augment", "flip,jpeg", "--embedding-dim", "16",
            "--fakes", "real", "--device", "cpu", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{"):])
    assert data["epochs_run"] == 1 and data["input_size"] == 48 and data["embedding_dim"] == 16
    assert out.is_file() and sidecar_path(out).is_file()

    bad = CliRunner().invoke(app, ["finetune", str(crop_cache), "--out", str(out),
                                   "--augment", "rotate"])
    assert bad.exit_code != 0 and "unknown augmentation" in bad.output
    refused = CliRunner().invoke(app, args[:-1] + ["--lr", "0.01"])
    assert refused.exit_code == 1 and "other settings" in refused.output


def test_extract_command_takes_finetuned_colon_path(trained, crop_cache, tmp_path):
    """``-b finetuned:NET.keras`` is ``-b finetuned --weights finetuned=NET.keras``."""
    from fakeprobe.cli import app

    _, out = trained
    cache = tmp_path / "c.h5"
    shutil.copy(crop_cache, cache)
    manifest = crop_cache.parent / "media" / "manifest.csv"
    common = ["extract", str(manifest), "--out", str(cache), "--detector", "test-blob",
              "--frames", "4", "--keep-crops", str(STORED), "-b", "test-colour"]
    missing = CliRunner().invoke(app, common + ["-b", f"finetuned:{tmp_path / 'none.keras'}"])
    assert missing.exit_code != 0 and "no such file" in missing.output
    result = CliRunner().invoke(app, common + ["-b", f"finetuned:{out}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["features_added"] == 12
    with fcache.CacheReader(cache) as reader:
        assert reader.feature_sets["finetuned"]["weights_sha256"]
