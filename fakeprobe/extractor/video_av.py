"""Decoding only the packets the sampled frames need, with PyAV (FFmpeg's bindings).

Sampling 32 of 300 frames with a sequential reader decodes all 300. Here one cheap pass over
the container reads every packet's timestamp, key-frame flag and (for H.264 and HEVC) whether
any other frame refers to it, without decoding anything. From that the decoder is handed only:

* the packets of the sampled frames;
* the reference packets between the key frame before a sampled frame and that frame (a
  non-reference frame, about half of an H.264 stream, is skipped unless it is sampled itself);
* nothing of a group of pictures that holds no sampled frame, and nothing after the last one:
  when the next needed packet lies more than :data:`SEEK_GAP` packets ahead the reader seeks to
  its key frame instead of reading the packets in between.

The frames kept are the same frames, pixel for pixel, as a sequential decode gives: a frame's
index is its rank in presentation order, as with OpenCV's frame counter. Frame threading lets
FFmpeg decode several frames at once.

``keyframes_only`` takes, for each sampled frame, the nearest key frame instead, and decodes key
frames only: for long videos, where even the reference frames cost too much. The frames then
differ from the sampled ones (by up to half a group of pictures, typically 4 s).

:func:`read_video_av` returns ``None`` when PyAV is missing or cannot open the file (or finds no
presentation timestamps), and the caller falls back to OpenCV.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

import numpy as np

from fakeprobe.errors import MediaError
from fakeprobe.extractor.frames import (
    Frame,
    MediaInfo,
    check_memory,
    check_size,
    sample_indices,
    truncation,
)

#: Seek instead of reading through when the next packet needed lies more than this many
#: packets ahead (and beyond a key frame). Reading a packet costs far less than decoding it, so
#: only long gaps (sparse samples of long videos) are worth a seek.
SEEK_GAP = 250
#: Codecs whose key frames decode on their own, so groups of pictures holding no sampled frame
#: can be skipped. Any other codec (GIF, whose frames draw over the previous ones, ...) is decoded
#: from its first frame up to the last sampled one.
_KEYFRAME_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "vp8", "vp9",
                              "av1", "mjpeg", "prores"})


def _nal_length_size(codec: str, extradata: bytes | None) -> int | None:
    """Bytes of the length before each NAL unit (AVCC / hvcC packets), or None when the
    packets are not in that form (Annex B start codes, or another codec)."""
    if not extradata:
        return None
    if codec == "h264" and len(extradata) >= 5 and extradata[0] == 1:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) >= 23 and extradata[0] == 1:
        return (extradata[21] & 3) + 1
    return None


def is_reference(codec: str, data: memoryview, length_size: int | None) -> bool:
    """Whether another frame may refer to this packet's frame. True when unsure: only an
    H.264 slice with ``nal_ref_idc`` 0, or an HEVC sub-layer non-reference picture, is not."""
    if length_size is None:
        return True
    position = 0
    while position + length_size < len(data):
        size = int.from_bytes(data[position:position + length_size], "big")
        header = data[position + length_size]
        if codec == "h264":
            kind = header & 31
            if kind in (1, 5):  # coded slice (non-IDR, IDR)
                return (header >> 5) & 3 != 0
        else:
            kind = (header >> 1) & 63
            if kind <= 31:  # VCL NAL unit; types 0, 2, ..., 14 are sub-layer non-reference
                return not (kind <= 14 and kind % 2 == 0)
        if size <= 0:
            return True
        position += length_size + size
    return True


class _Scan:
    """What the container holds, packet by packet, in decode order (no decoding)."""

    def __init__(self) -> None:
        self.pts: list[int] = []
        self.key: list[bool] = []
        self.ref: list[bool] = []

    def ranks(self) -> tuple[np.ndarray, dict[int, int]]:
        """Display index of each packet (its rank in presentation order) and the packet
        position of each pts."""
        order = np.argsort(np.asarray(self.pts, dtype=np.int64), kind="stable")
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        return rank, {pts: position for position, pts in enumerate(self.pts)}


def _open(path: Path):
    """``(container, handle)`` or None when PyAV is missing or cannot open the file."""
    try:
        import av
    except ImportError:
        return None
    handle = None
    name = os.fspath(path)
    try:
        try:
            name.encode("utf-8")
            source = name
        except UnicodeEncodeError:  # a name that is not UTF-8: read through an open file
            handle = open(path, "rb")
            source = handle
        container = av.open(source, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError, UnicodeError):
        if handle is not None:
            handle.close()
        return None
    if not container.streams.video:
        container.close()
        if handle is not None:
            handle.close()
        return None
    return container, handle


def _close(opened) -> None:
    container, handle = opened
    container.close()
    if handle is not None:
        handle.close()


def _scan(container, stream) -> _Scan:
    import av

    codec = stream.codec_context.name
    length_size = _nal_length_size(codec, stream.codec_context.extradata)
    scan = _Scan()
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            scan.pts.append(packet.pts)
            scan.key.append(bool(packet.is_keyframe))
            scan.ref.append(is_reference(codec, memoryview(packet), length_size))
    except av.FFmpegError:  # damaged container: the packets before the damage are kept
        pass
    return scan


def _plan(scan: _Scan, rank: np.ndarray, pos_of_rank: np.ndarray, wanted: np.ndarray,
          codec: str, keyframes_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Which packets to decode (a boolean mask in decode order) and the display indices
    to keep."""
    n = len(scan.pts)
    needed = np.zeros(n, dtype=bool)
    wanted = wanted[(wanted >= 0) & (wanted < n)]
    if wanted.size == 0:
        return needed, wanted
    key_positions = [p for p in range(n) if scan.key[p]]
    independent = codec in _KEYFRAME_CODECS and key_positions and key_positions[0] == 0
    if keyframes_only and independent:
        key_ranks = np.sort(rank[key_positions])
        slot = np.clip(np.searchsorted(key_ranks, wanted), 1, len(key_ranks) - 1) \
            if len(key_ranks) > 1 else np.zeros(len(wanted), dtype=np.int64)
        before, after = key_ranks[slot - 1 if len(key_ranks) > 1 else slot], key_ranks[slot]
        keep = np.unique(np.where(np.abs(wanted - before) <= np.abs(after - wanted),
                                  before, after))
        needed[pos_of_rank[keep]] = True
        return needed, keep
    ref = np.asarray(scan.ref, dtype=bool)
    for target in wanted:
        position = int(pos_of_rank[target])
        if not independent:
            needed[: position + 1] = True
            continue
        # the last key frame at or before this packet that is shown no later than it (a
        # leading picture of an open GOP needs the group before)
        slot = bisect.bisect_right(key_positions, position) - 1
        while slot > 0 and rank[key_positions[slot]] > target:
            slot -= 1
        start = key_positions[max(slot, 0)]
        needed[start:position] |= ref[start:position]
        needed[position] = True
    return needed, wanted


def read_video_av(
    path: Path, indices: np.ndarray | None = None, *, count: int = 32, fps: float | None = None,
    max_frames: int = 300, max_pixels: int = 40_000_000, keyframes_only: bool = False,
) -> tuple[MediaInfo, list[Frame]] | None:
    """The sampled frames of a video, decoding only what they need; None when PyAV cannot
    read the file (the caller then uses OpenCV). Same contract as ``frames.read_video``."""
    opened = _open(path)
    if opened is None:
        return None
    try:
        container = opened[0]
        stream = container.streams.video[0]
        context = stream.codec_context
        width, height = context.width, context.height
        if width <= 0 or height <= 0:
            return None
        check_size(width, height, max_pixels, "the video frame")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        video_fps = float(rate) if rate else float("nan")
        scan = _scan(container, stream)
        if any(pts is None for pts in scan.pts):
            return None  # no presentation order to index frames by: OpenCV counts them
        n_frames = int(stream.frames) if stream.frames and stream.frames > 0 else len(scan.pts)
        if not scan.pts:
            if stream.frames and stream.frames > 0:
                raise MediaError("no frame could be decoded (corrupt or truncated video)")
            raise MediaError("the video holds no decodable frame", status="empty")
        wanted = np.asarray(indices if indices is not None else sample_indices(
            n_frames, count=count, fps=fps, video_fps=video_fps, max_frames=max_frames
        ), dtype=np.int64)
        check_memory(len(wanted), width, height)
        rank, pos_of_pts = scan.ranks()
        pos_of_rank = np.empty(len(rank), dtype=np.int64)
        pos_of_rank[rank] = np.arange(len(rank))
        needed, keep = _plan(scan, rank, pos_of_rank, wanted, context.name, keyframes_only)
        frames, decoded = _decode(path, needed, keep, scan, rank, pos_of_pts, video_fps)
    finally:
        _close(opened)
    if not frames:
        raise MediaError("no frame could be decoded (corrupt or truncated video)")
    frames.sort(key=lambda frame: frame.index)
    out_height, out_width = frames[0].image.shape[:2]  # upright size, after any rotation
    # frames that exist: every packet the container gave, unless decoding failed earlier
    warning = truncation(n_frames, decoded, wanted, len(frames))
    return MediaInfo(video_fps, out_width, out_height, n_frames, warning), frames


def _decode(path: Path, needed: np.ndarray, keep: np.ndarray, scan: _Scan, rank: np.ndarray,
            pos_of_pts: dict[int, int], video_fps: float) -> tuple[list[Frame], int]:
    """Decode the ``needed`` packets; the frames whose display index is in ``keep``, and how
    many frames the video gave before decoding failed (all of them when it did not)."""
    import av

    reopened = _open(path)
    if reopened is None:
        raise MediaError("cannot open as a video (not a video, corrupt, or unsupported codec)")
    container = reopened[0]
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame threading: several frames decoded at once
    context = stream.codec_context
    to_keep = set(int(i) for i in keep)
    kept: dict[int, Frame] = {}
    good = len(scan.pts)
    needed_positions = np.flatnonzero(needed)
    key_positions = [p for p in range(len(scan.pts)) if scan.key[p]]

    def take(decoded) -> None:
        for frame in decoded:
            position = pos_of_pts.get(frame.pts)
            if position is None:
                continue
            index = int(rank[position])
            if index in to_keep and index not in kept:
                kept[index] = Frame(index, index / video_fps if np.isfinite(video_fps)
                                    else float("nan"), _bgr(frame))

    try:
        slot = 0  # the next needed packet, into needed_positions
        last = -1  # the furthest packet position read so far
        may_seek = True
        just_sought = False
        while True:
            restart = False
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                position = pos_of_pts.get(packet.pts)
                if position is None:
                    continue
                if just_sought and position <= last:
                    may_seek = False  # the seek went back: read on without seeking
                just_sought = False
                last = max(last, position)
                while slot < len(needed_positions) and needed_positions[slot] < position:
                    slot += 1
                if slot >= len(needed_positions):
                    break  # nothing left to decode
                upcoming = int(needed_positions[slot])
                if may_seek and upcoming - position > SEEK_GAP:
                    key = key_positions[bisect.bisect_right(key_positions, upcoming) - 1]
                    if key - position > SEEK_GAP:
                        take(context.decode(None))  # the frames in flight, then jump
                        context.flush_buffers()
                        container.seek(int(scan.pts[key]), stream=stream, backward=True,
                                       any_frame=False)
                        just_sought = restart = True
                        break
                if not needed[position]:
                    continue
                try:
                    take(context.decode(packet))
                except av.FFmpegError:  # damaged data: stop here, as a sequential reader does
                    good = min(good, int(rank[position]))
                    break
                if len(kept) == len(to_keep):
                    break
            if not restart:
                break
        try:
            take(context.decode(None))
        except av.FFmpegError:
            pass
    except av.FFmpegError:  # a failed seek or read: what was decoded is kept
        good = min(good, last + 1)
    finally:
        _close(reopened)
    return list(kept.values()), good


def _bgr(frame) -> np.ndarray:
    """A decoded frame as upright BGR uint8 (the display matrix's rotation applied)."""
    image = frame.to_ndarray(format="bgr24")
    rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    if rotation:
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image
