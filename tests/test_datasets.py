"""Finding labelled media: every layout, groups, ids, absent and bad entries."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import write_image, write_video
from fakeprobe.datasets import discover, parse_label
from fakeprobe.errors import LayoutError


def touch_video(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, n_frames=3)


def test_real_fake_folders_at_any_depth(tmp_path):
    root = tmp_path / "set"
    touch_video(root / "real" / "a.mp4")
    touch_video(root / "real" / "deep" / "er" / "b.mp4")
    touch_video(root / "fake" / "gan" / "c.mp4")
    (root / "fake" / "notes.txt").write_text("not media")
    found = discover([root])
    by_id = {i.id: i for i in found.items}
    assert sorted(by_id) == ["set/fake/gan/c.mp4", "set/real/a.mp4", "set/real/deep/er/b.mp4"]
    assert by_id["set/real/deep/er/b.mp4"].label == "real"
    assert by_id["set/fake/gan/c.mp4"].label == "fake"
    assert by_id["set/fake/gan/c.mp4"].method == "gan"
    assert all(i.group == i.id for i in found.items)
    assert all(i.dataset == "set" for i in found.items)


def test_ffpp_groups_link_fakes_to_both_sources_across_compressions(tmp_path):
    root = tmp_path / "ffpp"
    for comp in ("c23", "c40"):
        for vid in ("100", "200", "300"):
            touch_video(root / f"original_sequences/youtube/{comp}/videos/{vid}.mp4")
    touch_video(root / "manipulated_sequences/Deepfakes/c40/videos/100_200.mp4")
    touch_video(root / "manipulated_sequences/FaceSwap/c23/videos/200_100.mp4")
    touch_video(root / "original_sequences/actors/c40/videos/05__kitchen.mp4")
    found = discover([root])
    groups = {i.id.split("ffpp/")[1]: i.group for i in found.items}
    pair = groups["original_sequences/youtube/c40/videos/100.mp4"]
    assert pair == "ffpp:100-200"
    assert groups["original_sequences/youtube/c23/videos/200.mp4"] == pair
    assert groups["manipulated_sequences/Deepfakes/c40/videos/100_200.mp4"] == pair
    assert groups["manipulated_sequences/FaceSwap/c23/videos/200_100.mp4"] == pair
    assert groups["original_sequences/youtube/c40/videos/300.mp4"] == "ffpp:300"
    assert groups["original_sequences/actors/c40/videos/05__kitchen.mp4"] == "ffpp:actor:05"
    methods = Counter((i.label, i.method, i.dataset) for i in found.items)
    assert methods[("fake", "Deepfakes", "FaceForensics++ c40")] == 1
    assert methods[("real", "original_youtube", "FaceForensics++ c23")] == 3


def test_dfdc_metadata_labels_groups_and_absent_files(tmp_path):
    part = tmp_path / "dfdc" / "part_0"
    touch_video(part / "fake1.mp4")
    touch_video(part / "orig.mp4")
    touch_video(part / "unlisted.mp4")
    (part / "metadata.json").write_text(json.dumps({
        "fake1.mp4": {"label": "FAKE", "original": "orig.mp4"},
        "orig.mp4": {"label": "REAL", "original": None},
        "gone.mp4": {"label": "FAKE", "original": "orig.mp4"},
    }))
    only_meta = tmp_path / "dfdc" / "part_1"
    only_meta.mkdir()
    (only_meta / "metadata.json").write_text(json.dumps({"x.mp4": {"label": "REAL"}}))
    found = discover([tmp_path / "dfdc"])
    by_name = {Path(i.id).name: i for i in found.items}
    assert by_name["fake1.mp4"].label == "fake"
    assert by_name["fake1.mp4"].group == by_name["orig.mp4"].group == "dfdc:orig"
    assert by_name["unlisted.mp4"].label is None
    assert {i.id for i in found.missing} == {"dfdc/part_0/gone.mp4", "dfdc/part_1/x.mp4"}
    assert not found.problems


def test_dfdc_bad_metadata_is_a_problem_not_a_crash(tmp_path):
    touch_video(tmp_path / "d" / "v.mp4")
    (tmp_path / "d" / "metadata.json").write_text("{not json")
    found = discover([tmp_path / "d"])
    assert [i.label for i in found.items] == [None]
    assert any("unreadable DFDC metadata" in p for p in found.problems)


def test_csv_manifest_relative_paths_groups_and_bad_rows(tmp_path):
    data = tmp_path / "data"
    touch_video(data / "clips" / "a.mp4")
    write_image(data / "clips" / "b.png")
    manifest = data / "list.csv"
    manifest.write_text(
        "path,label,group\n"
        "clips/a.mp4,fake,g1\n"
        "clips/b.png,REAL,\n"
        "clips/c.mp4,real,g1\n"
        "clips/d.mp4,maybe,g2\n"
        "clips/e.txt,real,\n"
    )
    found = discover([manifest])
    by_id = {i.id: i for i in found.items}
    assert set(by_id) == {"data/clips/a.mp4", "data/clips/b.png", "data/clips/c.mp4"}
    assert by_id["data/clips/a.mp4"].group == "g1"
    assert by_id["data/clips/b.png"].group == "data/clips/b.png"
    assert by_id["data/clips/b.png"].label == "real" and by_id["data/clips/b.png"].kind == "image"
    assert [i.id for i in found.missing] == ["data/clips/c.mp4"]
    assert any(":5: unknown label" in p for p in found.problems)
    assert any(":6:" in p and "not a video" in p for p in found.problems)
    # the same file found through the folder gets the same id
    assert discover([data / "clips"]).items[0].id == "clips/a.mp4"


def test_csv_without_path_column_is_a_layout_error(tmp_path):
    bad = tmp_path / "m.csv"
    bad.write_text("file,label\nx.mp4,real\n")
    with pytest.raises(LayoutError, match="'path' column"):
        discover([bad])


def test_unlabelled_files_folders_and_frame_folders(tmp_path):
    video = touch_video(tmp_path / "in" / "clip.mp4")
    frames = tmp_path / "in" / "shots" / "clip2"
    frames.mkdir(parents=True)
    for k in (1, 2, 10):
        write_image(frames / f"{k}.png")
    single = discover([video])
    assert [(i.id, i.label, i.kind) for i in single.items] == [("clip.mp4", None, "video")]
    as_images = discover([tmp_path / "in"])
    assert Counter(i.kind for i in as_images.items) == {"image": 3, "video": 1}
    as_frames = discover([tmp_path / "in"], frame_folders=True)
    assert sorted((i.id, i.kind) for i in as_frames.items) == [
        ("in/clip.mp4", "video"), ("in/shots/clip2", "frames")]


def test_missing_input_and_duplicate_ids(tmp_path):
    with pytest.raises(LayoutError, match="no such file"):
        discover([tmp_path / "nope"])
    video = touch_video(tmp_path / "a" / "x.mp4")
    found = discover([video, video])
    assert len(found.items) == 1


@pytest.mark.parametrize("text,label", [("REAL", "real"), ("fake", "fake"), ("1", "fake"),
                                        ("0", "real"), ("", None), (None, None)])
def test_parse_label(text, label):
    assert parse_label(text) == label


@pytest.mark.shared_data
def test_shared_data_root_and_its_manifest_agree(shared_data):
    found = discover([shared_data])
    # dfdc_faces/ has its own manifest (the top-level one lists the other folders only)
    present = [i for i in found.items if i.exists and "/dfdc_faces/" not in f"/{i.id}"]
    assert Counter(i.kind for i in present) == {"video": 73, "image": 200}
    assert len(found.missing) == 6  # DFDC metadata lists videos that are not there
    via_csv = discover([shared_data / "manifest.csv"])
    assert {i.id for i in present} == {i.id for i in via_csv.items}
    ffpp = [i for i in present if i.dataset.startswith("FaceForensics++")]
    pairs = {i.group for i in ffpp if "original_youtube" == i.method and "c40" in i.dataset}
    assert len(pairs) == 5
    by_id = {i.id: i for i in present}
    fake = by_id["data/ffpp/manipulated_sequences/Deepfakes/c40/videos/183_253.mp4"]
    real = by_id["data/ffpp/original_sequences/youtube/c40/videos/253.mp4"]
    assert fake.group == real.group and fake.label == "fake" and real.label == "real"
