"""Fresh blends: self-blend twins blended anew from their source real crop at every draw."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fakeprobe.core.geometry import CropSpec
from fakeprobe.pipeline.run import extract
from fakeprobe.pipeline.steps import SelfBlend
from fakeprobe.synth.blend import BlendConfig
from fakeprobe.training.finetune import FinetuneConfig, FinetuneError, finetune, load_crops
from fakeprobe.training.finetune import run as finetune_run
from fakeprobe.training.finetune.blends import blend_sources, fresh_blend

SPEC = CropSpec(64, 0.1)


def test_twin_rows_are_paired_with_their_source_rows_frame_by_frame():
    ids = np.array(["a", "a#self_blend", "b", "c#self_blend", "d#self_blend", "d"])
    # a: rows 0-2; its twin: rows 3-5; b: row 6; c's twin (no c loaded): row 7;
    # d's twin: rows 8-10 against d's two rows 11-12 (pairs cycle)
    item = np.array([0, 0, 0, 1, 1, 1, 2, 3, 4, 4, 4, 5, 5])
    source = blend_sources(ids, item)
    assert source.tolist() == [-1, -1, -1, 0, 1, 2, -1, -1, 11, 12, 11, -1, -1]


def _face(size: int = SPEC.size) -> np.ndarray:
    """A smooth synthetic face-like crop (a bright ellipse on a darker textured background)."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:size, :size] / size
    base = 80 + 120 * np.exp(-(((x - 0.5) / 0.3) ** 2 + ((y - 0.55) / 0.38) ** 2))
    img = np.stack([base, base * 0.8, base * 0.6], -1) + rng.normal(0, 6, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_fresh_blend_is_seeded_changes_the_face_and_leaves_the_corners():
    crop = _face()
    one = fresh_blend(crop, SPEC, np.random.default_rng(7))
    again = fresh_blend(crop, SPEC, np.random.default_rng(7))
    other = fresh_blend(crop, SPEC, np.random.default_rng(8))
    assert one.shape == crop.shape and one.dtype == np.uint8
    assert np.array_equal(one, again)
    assert not np.array_equal(one, other)
    changed = np.abs(one.astype(int) - crop).sum(-1) > 0
    centre, corner = changed[24:40, 24:40], changed[:6, :6]
    assert centre.mean() > 0.5 and not corner.any()


@pytest.fixture(scope="module")
def twin_cache(tmp_path_factory):
    """Two reals, two fakes (one per group) and a self-blend twin of each real, crops stored."""
    from conftest import write_video

    from fakeprobe.core.config import ExtractorConfig

    root = tmp_path_factory.mktemp("fresh")
    lines = ["path,label,group,dataset,method"]
    for g in range(4):
        for k, (label, method) in enumerate((("real", "original"), ("fake", "Deepfakes"))):
            name = f"g{g}_{method}.mp4"
            write_video(root / name, n_frames=6, seed=10 * g + k)
            lines.append(f"{name},{label},g{g},synthetic,{method}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    config = ExtractorConfig(frames=3, detector="test-blob", backbones=("test-colour",),
                             keep_crops=64)
    summary = extract([root / "manifest.csv"], root / "twins.h5", config,
                      self_blend=SelfBlend(BlendConfig(), seed=0))
    assert summary.failed == 0 and summary.extracted == 12
    no_twins = root / "plain.h5"
    extract([root / "manifest.csv"], no_twins, replace(config))
    return root / "twins.h5", no_twins


RUN = FinetuneConfig(input_size=64, epochs=1, batch_size=4, val_fraction=0.25, seed=0,
                     freeze_until=-1, embedding_dim=8, fresh_blends=True)


def test_training_blends_every_twin_it_draws_anew(twin_cache, tmp_path, monkeypatch):
    path, _ = twin_cache
    calls = []

    def counting(crop, spec, rng, config=None):
        calls.append(spec)
        return fresh_blend(crop, spec, rng, config)

    monkeypatch.setattr(finetune_run, "fresh_blend", counting)
    result = finetune(path, tmp_path / "net.keras", RUN, device="cpu")
    data = load_crops(path, input_size=64)
    train_items = set(range(len(data.ids))) - {
        k for k, g in enumerate(data.groups) if g in result.val_groups}
    train_twins = sum(int((data.item == k).sum()) for k in train_items
                      if data.ids[k].endswith("#self_blend"))
    # every drawn twin row is blended anew (batches are padded with repeats, so at least once)
    assert train_twins > 0 and len(calls) >= train_twins
    assert all(spec.size == 64 for spec in calls)
    assert any("blended anew" in w for w in result.warnings)


def test_fresh_blends_without_twins_are_refused_in_one_line(twin_cache, tmp_path):
    _, plain = twin_cache
    with pytest.raises(FinetuneError, match="--self-blend"):
        finetune(plain, tmp_path / "net.keras", RUN, device="cpu")


def test_the_finetune_command_passes_fresh_blends_on(twin_cache, tmp_path):
    from typer.testing import CliRunner

    from fakeprobe.cli import app

    _, plain = twin_cache
    result = CliRunner().invoke(app, ["finetune", str(plain), "--out", str(tmp_path / "n.keras"),
                                      "--fresh-blends", "--device", "cpu"])
    assert result.exit_code == 1 and "--self-blend" in result.output
    assert not (tmp_path / "n.keras").exists()
