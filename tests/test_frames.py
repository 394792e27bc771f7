"""Frame sampling and decoding, including every kind of bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import write_image, write_video
from fakeprobe.errors import MediaError
from fakeprobe.extractor.frames import read_media, sample_indices


def test_sample_indices_evenly_spaced_and_short_videos():
    assert sample_indices(300, count=4).tolist() == [0, 100, 199, 299]
    assert sample_indices(3, count=32).tolist() == [0, 1, 2]
    assert sample_indices(0, count=32).tolist() == []


def test_sample_indices_at_a_rate():
    idx = sample_indices(100, count=32, fps=5, video_fps=25.0)
    assert idx.tolist() == list(range(0, 100, 5))
    assert len(sample_indices(10_000, count=32, fps=30, video_fps=30.0, max_frames=7)) == 7


def test_read_video_keeps_indices_timestamps_and_size(tmp_path):
    path = write_video(tmp_path / "v.mp4", n_frames=20, size=(64, 48), fps=10)
    info, frames = read_media(path, "video", count=5)
    assert (info.width, info.height, info.n_frames) == (64, 48, 20)
    assert [f.index for f in frames] == [0, 5, 10, 14, 19]
    assert frames[1].timestamp == pytest.approx(0.5)
    assert frames[0].image.shape == (48, 64, 3)


def test_read_video_at_given_indices_matches_sequential_decode(tmp_path):
    path = write_video(tmp_path / "v.mp4", n_frames=15)
    _, picked = read_media(path, "video", np.array([3, 11]))
    capture = cv2.VideoCapture(str(path))
    every = [capture.read()[1] for _ in range(15)]
    assert np.array_equal(picked[0].image, every[3])
    assert np.array_equal(picked[1].image, every[11])


def _rotated_copy(source: Path, target: Path) -> Path:
    import imageio_ffmpeg  # a dev dependency: an ffmpeg binary to write rotation metadata

    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-display_rotation", "90", "-i",
                    str(source), "-c", "copy", str(target)], check=True)
    return target


def test_rotation_metadata_is_honoured(tmp_path):
    landscape = write_video(tmp_path / "land.mp4", n_frames=4, size=(96, 64), blobs=1)
    rotated = _rotated_copy(landscape, tmp_path / "rot.mp4")
    info, frames = read_media(rotated, "video", count=2)
    assert frames[0].image.shape == (96, 64, 3)  # portrait, upright
    assert (info.width, info.height) == (64, 96)


@pytest.mark.parametrize("maker,status,message", [
    (lambda p: p.write_bytes(b""), "decode_error", "empty file"),
    (lambda p: p.write_text("this is not a video\n" * 50), "decode_error", "cannot open"),
], ids=["empty-file", "text-named-mp4"])
def test_bad_video_files(tmp_path, maker, status, message):
    path = tmp_path / "bad.mp4"
    maker(path)
    with pytest.raises(MediaError, match=message) as caught:
        read_media(path, "video")
    assert caught.value.status == status


def test_truncated_video_gives_the_frames_before_the_damage_or_a_clear_error(tmp_path):
    whole = write_video(tmp_path / "whole.mp4", n_frames=30, size=(96, 72))
    data = whole.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        _, frames = read_media(cut, "video", count=30)
    except MediaError as error:  # the index (moov atom) of an mp4 sits at the end
        assert error.status == "decode_error"
    else:
        assert 0 < len(frames) < 30


def test_corrupt_video_body(tmp_path):
    whole = write_video(tmp_path / "v.avi", n_frames=20)
    data = bytearray(whole.read_bytes())
    data[200:] = bytes(len(data) - 200)  # keep the header, zero the rest
    bad = tmp_path / "zeroed.mp4"
    bad.write_bytes(bytes(data))
    with pytest.raises(MediaError):
        read_media(bad, "video")


def test_zero_frame_video(tmp_path):
    path = tmp_path / "zero.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 48))
    writer.release()
    with pytest.raises(MediaError) as caught:
        read_media(path, "video")
    assert caught.value.status in ("decode_error", "empty")


def test_huge_frames_are_refused_before_decoding(tmp_path):
    video = write_video(tmp_path / "v.mp4", size=(96, 72))
    with pytest.raises(MediaError, match="over the limit") as caught:
        read_media(video, "video", max_pixels=96 * 72 - 1)
    assert caught.value.status == "too_large"
    image = write_image(tmp_path / "i.png", size=(80, 60))
    with pytest.raises(MediaError, match="over the limit"):
        read_media(image, "image", max_pixels=100)


def test_unreadable_and_missing_images(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff" + b"garbage" * 10)
    with pytest.raises(MediaError, match="image"):
        read_media(bad, "image")
    with pytest.raises(MediaError) as caught:
        read_media(tmp_path / "absent.png", "image")
    assert caught.value.status == "missing"


def test_image_is_one_frame(tmp_path):
    path = write_image(tmp_path / "x.png", size=(50, 40))
    info, frames = read_media(path, "image")
    assert len(frames) == 1 and frames[0].image.shape == (40, 50, 3)
    assert (info.width, info.height, info.n_frames) == (50, 40, 1)


def test_frame_folder_in_natural_order(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    for k in (1, 2, 10):
        image = np.full((20, 20, 3), k * 20, np.uint8)
        cv2.imwrite(str(folder / f"f{k}.png"), image)
    info, frames = read_media(folder, "frames", count=3)
    assert info.n_frames == 3
    assert [int(f.image[0, 0, 0]) for f in frames] == [20, 40, 200]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MediaError, match="no image"):
        read_media(empty, "frames")


# --- PyAV: only what the sampled frames need, the same frames as a sequential decode ----------

def _h264(tmp_path: Path, n_frames: int, gop: int, name: str = "h264.mp4") -> Path:
    """An H.264 clip with B-frames (non-reference) and a key frame every ``gop`` frames."""
    import imageio_ffmpeg  # a dev dependency: an ffmpeg binary with libx264

    source = write_video(tmp_path / f"src-{name}", n_frames=n_frames, size=(96, 72))
    target = tmp_path / name
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i",
                    str(source), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-bf", "3",
                    "-b-pyramid", "none", "-x264-params",
                    f"keyint={gop}:min-keyint={gop}:scenecut=0", str(target)], check=True)
    return target


def _opencv_every_frame(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    every = []
    while True:
        ok, image = capture.read()
        if not ok:
            return every
        every.append(image)


def _decode_spy(monkeypatch) -> list[int]:
    """Counts the packets handed to the decoder (the flush, ``None``, is not counted)."""
    import av.video.codeccontext as codeccontext

    sent: list[int] = []
    real = codeccontext.VideoCodecContext.decode

    def decode(self, packet=None):
        if packet is not None:
            sent.append(packet.pts)
        return real(self, packet)

    monkeypatch.setattr(codeccontext.VideoCodecContext, "decode", decode)
    return sent


def test_pyav_reads_the_sampled_frames_of_a_sequential_decode(tmp_path):
    from fakeprobe.extractor import video_av
    from fakeprobe.extractor.frames import read_video_opencv

    path = _h264(tmp_path, n_frames=90, gop=30)
    every = _opencv_every_frame(path)
    info, frames = video_av.read_video_av(path, count=7)
    assert [f.index for f in frames] == sample_indices(90, count=7).tolist()
    for frame in frames:
        assert np.array_equal(frame.image, every[frame.index])
    assert (info, [f.index for f in frames]) == (
        lambda r: (r[0], [f.index for f in r[1]]))(read_video_opencv(path, count=7))


def test_pyav_skips_non_reference_frames_and_groups_without_a_sample(tmp_path, monkeypatch):
    from fakeprobe.extractor import video_av

    path = _h264(tmp_path, n_frames=90, gop=30)
    sent = _decode_spy(monkeypatch)
    every = _opencv_every_frame(path)
    _, frames = video_av.read_video_av(path, np.array([5, 6]))
    assert [f.index for f in frames] == [5, 6]
    assert all(np.array_equal(f.image, every[f.index]) for f in frames)
    # frames 0..6 of the first group at most, never the B-frames before them; nothing after
    assert 0 < len(sent) < 7


def test_pyav_seeks_across_long_gaps(tmp_path, monkeypatch):
    from fakeprobe.extractor import video_av

    path = _h264(tmp_path, n_frames=200, gop=10)
    monkeypatch.setattr(video_av, "SEEK_GAP", 20)
    sent = _decode_spy(monkeypatch)
    sought = []
    import av.container.input as av_input
    real_seek = av_input.InputContainer.seek

    def seek(self, *args, **kwargs):
        sought.append(args[0])
        return real_seek(self, *args, **kwargs)

    monkeypatch.setattr(av_input.InputContainer, "seek", seek)
    every = _opencv_every_frame(path)
    info, frames = video_av.read_video_av(path, count=3)
    assert [f.index for f in frames] == [0, 100, 199] and not info.warning
    assert all(np.array_equal(f.image, every[f.index]) for f in frames)
    assert len(sought) == 2 and len(sent) <= 3 * 10


def test_pyav_keyframes_only_takes_the_nearest_key_frame(tmp_path, monkeypatch):
    path = _h264(tmp_path, n_frames=100, gop=10)
    sent = _decode_spy(monkeypatch)
    every = _opencv_every_frame(path)
    _, frames = read_media(path, "video", np.array([3, 14, 16, 58, 99]), keyframes_only=True)
    assert [f.index for f in frames] == [0, 10, 20, 60, 90]
    assert all(np.array_equal(f.image, every[f.index]) for f in frames)
    assert len(sent) == 5  # key frames only


def test_opencv_reads_what_pyav_cannot_open(tmp_path, monkeypatch):
    from fakeprobe.extractor import video_av

    path = write_video(tmp_path / "v.mp4", n_frames=20)
    monkeypatch.setattr(video_av, "_open", lambda p: None)
    info, frames = read_media(path, "video", count=5)
    assert [f.index for f in frames] == [0, 5, 10, 14, 19] and info.n_frames == 20


def test_extract_with_keyframes_only_caches_key_frames_and_keeps_them_on_rerun(
        tmp_path, stub_config):
    from dataclasses import replace

    from fakeprobe.features import cache as fcache
    from fakeprobe.pipeline.run import extract

    folder = tmp_path / "in" / "real"
    folder.mkdir(parents=True)
    _h264(folder, n_frames=100, gop=10, name="clip.mp4")
    (folder / "src-clip.mp4").unlink()
    config = replace(stub_config, keyframes_only=True)
    cache = tmp_path / "c.h5"
    for _ in range(2):  # the rerun reads the cached frames again, not new key frames
        summary = extract([tmp_path / "in"], cache, config)
        assert summary.failed == 0
    with fcache.CacheReader(cache) as reader:
        assert reader.frames()["frame_index"].tolist() == [0, 20, 40, 60, 80, 90]
        stored = reader.config
    assert stored.keyframes_only and stored.row_differences(config) == {}


@pytest.mark.parametrize("degrees", ["90", "-90", "180"])
def test_pyav_turns_rotated_videos_upright_as_opencv_does(tmp_path, degrees):
    import imageio_ffmpeg

    from fakeprobe.extractor import video_av
    from fakeprobe.extractor.frames import read_video_opencv

    landscape = write_video(tmp_path / "land.mp4", n_frames=4, size=(96, 64), blobs=1)
    rotated = tmp_path / "rot.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
                    "-display_rotation", degrees, "-i", str(landscape), "-c", "copy",
                    str(rotated)], check=True)
    info, frames = video_av.read_video_av(rotated, count=2)
    reference_info, reference = read_video_opencv(rotated, count=2)
    assert info == reference_info
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, reference))
    assert frames[0].image.shape[:2] == ((64, 96) if degrees == "180" else (96, 64))
