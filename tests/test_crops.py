"""Face crops of cached rows (fakeprobe.features.crops): stored crops served or cut, the rest
re-read and re-aligned, and a lost medium recorded, on caches extracted with the stub
components."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fakeprobe.core.config import CONTEXT_MARGIN, ExtractorConfig
from fakeprobe.extractor.align import align_face, recrop
from fakeprobe.extractor.base import CropSpec
from fakeprobe.extractor.frames import read_media
from fakeprobe.pipeline.run import extract
from fakeprobe.features.cache import CacheReader
from fakeprobe.features.crops import CropError, RowCrops, row_crops, serves, stored_spec

from conftest import write_image, write_video

STORED = CropSpec(64, CONTEXT_MARGIN)


@pytest.fixture(scope="module")
def caches(tmp_path_factory) -> dict[str, Path]:
    """The same media (two videos with a face, one without, one image) extracted twice: ``crops``
    keeps 64 px crops, ``bare`` keeps none. The media stay in ``media``."""
    root = tmp_path_factory.mktemp("crops")
    media = root / "media"
    (media / "real").mkdir(parents=True)
    write_video(media / "real" / "a.mp4", seed=0)
    write_video(media / "real" / "b.mp4", seed=3)
    write_video(media / "real" / "empty.mp4", blobs=0, seed=5)
    write_image(media / "real" / "c.png")
    out = {"media": media}
    for name, keep in (("crops", 64), ("bare", 0)):
        out[name] = root / f"{name}.h5"
        extract([media], out[name], ExtractorConfig(frames=6, detector="test-blob",
                                                    keep_crops=keep, backbones=("test-grey",)))
    return out


def _rows(cache: Path, item: str) -> np.ndarray:
    """Absolute rows of ``item`` (an id ending) that hold a face."""
    with CacheReader(cache) as reader:
        videos = reader.videos()
        has_face = reader.frames(("has_face",))["has_face"]
        (i,) = [k for k, vid in enumerate(videos["id"]) if vid.endswith(item)]
        start, count = int(videos["row_start"][i]), int(videos["row_count"][i])
    rows = np.arange(start, start + count)
    return rows[has_face[rows]]


def _aligned_by_hand(cache: Path, rows: np.ndarray, spec: CropSpec) -> np.ndarray:
    """What extraction does: read the item's frames at the cached indices, align the cached
    landmarks."""
    with CacheReader(cache) as reader:
        videos = reader.videos()
        frames = reader.frames(("video", "frame_index", "landmarks"))
        config = reader.config
    item = int(frames["video"][rows[0]])
    _, images = read_media(Path(videos["path"][item]), videos["kind"][item],
                           np.unique(frames["frame_index"][rows]), count=config.frames)
    by_index = {f.index: f.image for f in images}
    return np.stack([align_face(by_index[int(frames["frame_index"][r])],
                                frames["landmarks"][r], spec) for r in rows])


def test_stored_crops_are_served_as_they_are_in_the_order_asked(caches):
    rows = np.concatenate([_rows(caches["crops"], "b.mp4"), _rows(caches["crops"], "a.mp4")])
    rows = rows[::-1].copy()  # unsorted, across two items
    with CacheReader(caches["crops"]) as reader:
        assert stored_spec(reader) == STORED
        got = row_crops(reader, rows, STORED)
        expected = np.stack([reader.crops(slice(r, r + 1))[0] for r in rows])
    assert isinstance(got, RowCrops) and len(got) == len(rows) > 6
    assert np.array_equal(got[STORED], expected)
    assert expected.reshape(len(rows), -1).any(axis=1).all()  # real faces, not zeros
    assert got.count("stored") == len(rows) and got.ok.all() and not got.reasons


def test_a_smaller_geometry_is_cut_from_the_stored_crops(caches):
    rows = _rows(caches["crops"], "a.mp4")
    small, tight = CropSpec(32, CONTEXT_MARGIN), CropSpec(24, 0.0)
    with CacheReader(caches["crops"]) as reader:
        got = row_crops(reader, rows, [small, tight], media=False)
        stored = reader.crops(rows)
    assert np.array_equal(got[small], recrop(stored, STORED, small))
    assert np.array_equal(got[tight], recrop(stored, STORED, tight))
    assert (got.source == "stored").all()


def test_without_stored_crops_the_frames_are_re_read_and_aligned_as_extraction_did(caches):
    """The bare cache's re-aligned crops are the very crops the other cache stored."""
    rows, twins = _rows(caches["bare"], "a.mp4"), _rows(caches["crops"], "a.mp4")
    with CacheReader(caches["bare"]) as reader:
        assert stored_spec(reader) is None
        got = row_crops(reader, rows, STORED)
        frames = reader.frames(("frame_index", "track"))
    with CacheReader(caches["crops"]) as reader:
        stored = reader.crops(twins)
        twin_frames = reader.frames(("frame_index", "track"))
    for column in ("frame_index", "track"):  # the same faces (items may sit elsewhere)
        assert np.array_equal(frames[column][rows], twin_frames[column][twins])
    assert (got.source == "media").all() and not got.reasons
    assert np.array_equal(got[STORED], stored)


def test_a_larger_geometry_is_re_read_unless_upsampling_is_allowed(caches):
    rows = _rows(caches["crops"], "b.mp4")
    big, wide = CropSpec(96, CONTEXT_MARGIN), CropSpec(48, 0.3)
    assert not serves(STORED, big) and serves(STORED, big, upsample=True)
    assert not serves(STORED, wide, upsample=True)  # a wider view cannot be cut
    with CacheReader(caches["crops"]) as reader:
        fresh = row_crops(reader, rows, [big, wide])
        scaled = row_crops(reader, rows, big, upsample=True)
        stored = reader.crops(rows)
    assert (fresh.source == "media").all()
    assert np.array_equal(fresh[big], _aligned_by_hand(caches["crops"], rows, big))
    assert np.array_equal(fresh[wide], _aligned_by_hand(caches["crops"], rows, wide))
    assert (scaled.source == "stored").all()
    assert np.array_equal(scaled[big], recrop(stored, STORED, big))


def test_an_image_row_is_re_read_and_a_faceless_row_is_a_reason(caches):
    with CacheReader(caches["bare"]) as reader:
        videos = reader.videos()
        has_face = reader.frames(("has_face",))["has_face"]
    image_rows = _rows(caches["bare"], "c.png")
    (empty,) = [k for k, vid in enumerate(videos["id"]) if vid.endswith("empty.mp4")]
    faceless = np.arange(videos["row_start"][empty],
                         videos["row_start"][empty] + videos["row_count"][empty])
    assert len(image_rows) == 1 and len(faceless) and not has_face[faceless].any()
    with CacheReader(caches["bare"]) as reader:
        got = row_crops(reader, np.concatenate([image_rows, faceless]), STORED)
    assert got.source[0] == "media" and got[STORED][0].max() > 200  # the bright "face"
    assert set(got.reasons) == set(range(1, 1 + len(faceless)))
    assert all("no face" in why for why in got.reasons.values())
    assert not got[STORED][1:].any()


@pytest.mark.parametrize("damage", ["deleted", "garbled"])
def test_a_missing_or_unreadable_medium_is_recorded_not_raised(caches, tmp_path, damage):
    media = tmp_path / "m"
    shutil.copytree(caches["media"] / "real", media / "real")
    cache = tmp_path / "c.h5"
    extract([media], cache, ExtractorConfig(frames=6, detector="test-blob",
                                            backbones=("test-grey",)))
    lost, kept = _rows(cache, "a.mp4"), _rows(cache, "b.mp4")
    if damage == "deleted":
        (media / "real" / "a.mp4").unlink()
    else:
        (media / "real" / "a.mp4").write_bytes(b"not a video at all" * 50)
    rows = np.concatenate([lost, kept])
    with CacheReader(cache) as reader:
        got = row_crops(reader, rows, STORED)
        with pytest.raises(CropError, match="cannot re-read") as caught:
            row_crops(reader, rows, STORED, strict=True)
    assert set(got.reasons) == set(range(len(lost))) == set(caught.value.reasons)
    assert all("a.mp4: cannot re-read the frames" in why for why in got.reasons.values())
    assert (got.source[:len(lost)] == "").all() and not got[STORED][:len(lost)].any()
    assert (got.source[len(lost):] == "media").all()
    assert np.array_equal(got[STORED][len(lost):], _aligned_by_hand(cache, kept, STORED))


def test_without_media_a_cache_without_crops_gives_reasons_or_a_typed_error(caches):
    rows = _rows(caches["bare"], "a.mp4")
    with CacheReader(caches["bare"]) as reader:
        got = row_crops(reader, rows, STORED, media=False)
        assert not got.ok.any() and len(got.reasons) == len(rows)
        assert "stores no face crops" in got.reasons[0]
        with pytest.raises(CropError, match="keep-crops"):
            row_crops(reader, rows, STORED, media=False, strict=True)
    with CacheReader(caches["crops"]) as reader:
        with pytest.raises(CropError, match="cannot give 96 px"):
            row_crops(reader, rows, CropSpec(96, CONTEXT_MARGIN), media=False, strict=True)


def test_rows_are_checked_and_a_slice_or_nothing_is_fine(caches):
    with CacheReader(caches["crops"]) as reader:
        n = reader.n_rows
        with pytest.raises(IndexError):
            row_crops(reader, [n], STORED)
        assert len(row_crops(reader, [], STORED)) == 0
        some = row_crops(reader, slice(0, 3), STORED)
        assert np.array_equal(some.rows, [0, 1, 2])


def test_a_self_blended_item_is_never_re_read_from_its_source(tmp_path):
    """A pseudo-fake's path holds the real footage it was blended from: re-reading it would
    give the real face under the fake label, so the row gets a reason instead."""
    from fakeprobe.datasets import SELF_BLEND_METHOD
    from fakeprobe.features import cache as fcache

    media = write_video(tmp_path / "v.mp4", n_frames=12)
    frame_index = np.array([0, 6])
    box = np.array([[5 + i, 10, 16, 20] for i in frame_index], np.float32)
    unit = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    marks = np.stack([unit * b[2:] + b[:2] for b in box]).astype(np.float32)
    rows = fcache.FrameRows(frame_index=frame_index, timestamp=frame_index / 25.0, box=box,
                            landmarks=marks, score=np.ones(2, np.float32),
                            track=np.zeros(2, np.int32), has_face=np.ones(2, bool))
    cache = tmp_path / "c.h5"
    for vid, method, label in (("v", "", "real"), ("v~blend", SELF_BLEND_METHOD, "fake")):
        record = fcache.VideoRecord(id=vid, path=str(media), kind="video", label=label,
                                    group="v", method=method)
        fcache.stage(cache, fcache.StagedItem(record, rows=rows,
                                              features={"f": np.zeros((2, 2), np.float32)}))
    fcache.commit(cache, ExtractorConfig(frames=4, backbones=("f",)), {"f": {"dim": 2}})
    with CacheReader(cache) as reader:
        videos = reader.videos()
        (real,) = np.flatnonzero(videos["id"] == "v")
        (fake,) = np.flatnonzero(videos["id"] == "v~blend")
        start = videos["row_start"]
        got = row_crops(reader, [start[real], start[fake]], STORED)
    assert list(got.source) == ["media", ""]
    assert "self-blended" in got.reasons[1] and not got[STORED][1].any()
