"""Self-blended pseudo-fakes: masks, the transformed copy, the blend, and seeding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fakeprobe.core.geometry import ARCFACE_TEMPLATE_112
from fakeprobe.synth.blend import (BlendConfig, BlendParams, draw_params, face_mask, face_size,
                                   identity_params, self_blend, transform_source)

KINDS = ("hull", "ellipse")


def landmarks_at(cx: float, cy: float, scale: float = 2.0, angle: float = 0.0) -> np.ndarray:
    """The ArcFace template scaled by ``scale``, rotated by ``angle`` degrees and centred on
    (cx, cy): five landmarks of a synthetic face whose size is ``112 * scale`` pixels."""
    centred = ARCFACE_TEMPLATE_112 - ARCFACE_TEMPLATE_112.mean(axis=0)
    t = np.deg2rad(angle)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return (centred @ rot.T * scale + [cx, cy]).astype(np.float32)


@pytest.fixture
def frame() -> np.ndarray:
    """A 240x320 BGR frame with texture and a smooth colour gradient (so jitter and warps
    change pixels), and a lighter "face" disc around (160, 120)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([xx * 0.6, yy * 0.8, 100 + 0 * xx], axis=2) + rng.normal(0, 12, (240, 320, 3))
    img[(xx - 160) ** 2 + (yy - 120) ** 2 < 70**2] += 60
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_is_one_at_the_face_centre_and_zero_far_away(kind):
    marks = landmarks_at(160, 120)
    hard = face_mask((240, 320), marks, kind)
    assert hard.dtype == np.float32 and hard.shape == (240, 320)
    assert set(np.unique(hard)) <= {0.0, 1.0}
    cx, cy = marks.mean(axis=0).round().astype(int)
    assert hard[cy, cx] == 1.0
    assert hard[:, :20].max() == 0 and hard[:, -20:].max() == 0  # far beyond the ears
    for x, y in marks.round().astype(int):  # eyes, nose and mouth corners are all inside
        assert hard[y, x] == 1.0
    # a plausible share of the template square: 40-80 % of (112 * 2)^2
    assert 0.4 < hard.sum() / face_size(marks) ** 2 < 0.8


@pytest.mark.parametrize("kind", KINDS)
def test_erode_and_blur_shrink_and_soften_within_unit_range(kind):
    marks = landmarks_at(160, 120, angle=15)
    hard = face_mask((240, 320), marks, kind)
    eroded = face_mask((240, 320), marks, kind, erode=0.05)
    soft = face_mask((240, 320), marks, kind, erode=0.05, blur=0.04)
    assert eroded.sum() < hard.sum() and (eroded <= hard).all()
    assert 0.0 <= soft.min() and soft.max() <= 1.0
    assert ((soft > 0) & (soft < 1)).sum() > 0.1 * hard.sum()  # a real soft band
    cx, cy = marks.mean(axis=0).round().astype(int)
    assert soft[cy, cx] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_face_half_outside_the_frame_is_cut_at_the_border(kind):
    marks = landmarks_at(0, 120)  # centred on the left edge
    mask = face_mask((240, 320, 3), marks, kind, erode=0.03, blur=0.03)
    assert mask.shape == (240, 320) and 0 <= mask.min() and mask.max() <= 1
    assert mask[120, 0] == pytest.approx(1.0, abs=1e-4)  # not eroded away from the border
    assert mask[:, 150:].max() == 0.0  # nothing wrapped round to the right
    # a face wholly outside gives an empty mask, no error
    assert face_mask((240, 320), landmarks_at(-500, -500), kind).max() == 0.0
    frame = np.full((240, 320, 3), 90, np.uint8)
    out, weight = self_blend(frame, marks, identity_params(mask=kind, brightness=0.2, blur=0.03))
    assert out.shape == frame.shape and weight.shape == (240, 320)
    assert out[120, 0, 0] > 90 and (out[:, 150:] == 90).all()


@pytest.mark.parametrize("kind", KINDS)
def test_identity_params_return_the_frame(frame, kind):
    marks = landmarks_at(150, 110, angle=-10)
    params = identity_params(mask=kind, erode=0.03, blur=0.03, ratio=0.75)
    assert (transform_source(frame, marks, params) == frame).all()
    out, weight = self_blend(frame, marks, params)
    assert out.dtype == np.uint8 and np.abs(out.astype(int) - frame).max() <= 1
    assert weight.max() == pytest.approx(0.75)


def test_blend_follows_the_formula(frame):
    marks = landmarks_at(160, 120)
    params = identity_params(hue=20.0, saturation=0.7, contrast=1.2, brightness=-0.1,
                             ratio=0.5, blur=0.03)
    src = transform_source(frame, marks, params).astype(np.float32)
    out, weight = self_blend(frame, marks, params)
    w = weight[..., None]
    expected = src * w + frame * (1 - w)
    assert np.abs(out - expected).max() <= 1.0  # src was rounded once more here
    assert (out[weight == 0] == frame[weight == 0]).all()


def test_warp_and_filters_leave_no_black_border(frame):
    marks = landmarks_at(160, 120)
    for params in (identity_params(scale=0.9, shift_x=0.05, shift_y=-0.05),
                   identity_params(filter="sharpen", sharpen_amount=1.0, filter_sigma=0.01),
                   identity_params(filter="blur", filter_sigma=0.01)):
        src = transform_source(frame, marks, params)
        assert src.shape == frame.shape and src.dtype == np.uint8
        assert not (src == frame).all()
        assert src[[0, -1]].max(axis=(1, 2)).min() > 0
        assert src[:, [0, -1]].max(axis=(0, 2)).min() > 0
        assert np.abs(src.astype(int) - frame).mean() < 40


def test_same_seed_same_output_different_seed_differs(frame):
    config = BlendConfig(sharpen_or_blur=1.0)
    marks = landmarks_at(160, 120)
    a = draw_params(config, np.random.default_rng(3))
    b = draw_params(config, np.random.default_rng(3))
    c = draw_params(config, np.random.default_rng(4))
    assert a == b and a != c
    out_a, w_a = self_blend(frame, marks, a)
    out_b, w_b = self_blend(frame, marks, b)
    out_c, _ = self_blend(frame, marks, c)
    assert (out_a == out_b).all() and (w_a == w_b).all()
    assert not (out_a == out_c).all()


def test_draws_stay_inside_the_config():
    config = BlendConfig(mask="ellipse")
    rng = np.random.default_rng(0)
    draws = [draw_params(config, rng) for _ in range(200)]
    assert all(p.mask == "ellipse" and p.ratio in config.blend_ratio for p in draws)
    assert all(config.scale[0] <= p.scale <= config.scale[1] for p in draws)
    assert all(abs(p.shift_x) <= config.shift and abs(p.hue) <= config.hue for p in draws)
    assert {p.filter for p in draws} == {"none", "sharpen", "blur"}
    assert BlendParams.from_dict(draws[0].to_dict()) == draws[0]


def test_config_round_trip_and_validation():
    config = BlendConfig(mask="ellipse", scale=(0.9, 1.1), blend_ratio=(0.5, 1.0))
    assert BlendConfig.from_dict(config.to_dict()) == config
    assert isinstance(config.to_dict()["scale"], list)
    with pytest.raises(ValueError, match="mask"):
        BlendConfig(mask="square")
    with pytest.raises(ValueError, match="scale"):
        BlendConfig(scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="blend_ratio"):
        BlendConfig(blend_ratio=(1.5,))
    with pytest.raises(ValueError, match="landmarks"):
        face_mask((10, 10), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        face_mask((10, 10), np.ones((5, 2)))
    with pytest.raises(ValueError, match="uint8"):
        self_blend(np.zeros((10, 10, 3), np.float32), landmarks_at(5, 5), identity_params())


@pytest.mark.shared_data
def test_real_faces_masks_and_contact_sheet(shared_data, tmp_path):
    """Blends four real FFHQ faces (0, 1, 10, 11: the folder has no 2.jpg); checks the mask
    covers the landmarks with a plausible area, and writes original | blended | mask to
    ``tmp_path/blend_sheet.png`` for a human look."""
    from fakeprobe.extractor.components import DETECTORS

    detector = DETECTORS.create("yunet")
    config = BlendConfig()
    rows = []
    for k, name in enumerate(("0", "1", "10", "11")):
        frame = cv2.imread(str(shared_data / f"images/stylegan2_ffhq/real/{name}.jpg"))
        assert frame is not None
        faces = detector.detect(frame)
        assert faces, f"no face in real/{name}.jpg"
        face = max(faces, key=lambda f: f.area)
        params = draw_params(dataclass_replace(config, mask=KINDS[k % 2]),
                             np.random.default_rng(k))
        hard = face_mask(frame.shape, face.landmarks, params.mask)
        for x, y in face.landmarks.round().astype(int):
            assert hard[y, x] == 1.0
        x, y, w, h = face.box
        assert 0.4 < hard.sum() / (w * h) < 1.2, hard.sum() / (w * h)
        out, weight = self_blend(frame, face.landmarks, params)
        mask_bgr = cv2.cvtColor((weight * 255).round().astype(np.uint8), cv2.COLOR_GRAY2BGR)
        row = np.hstack([frame, out, mask_bgr])
        rows.append(cv2.resize(row, (768, 256), interpolation=cv2.INTER_AREA))
    assert cv2.imwrite(str(tmp_path / "blend_sheet.png"), np.vstack(rows))


def dataclass_replace(config: BlendConfig, **changes) -> BlendConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


@pytest.mark.parametrize("seed", range(6))
def test_blending_the_face_region_equals_blending_the_whole_frame(seed):
    """self_blend transforms only the face's neighbourhood: it must equal the formula applied
    with the copy transformed over the whole frame, also for a face at the frame's edge."""
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    frame = cv2.GaussianBlur(frame, (0, 0), 3)
    marks = ARCFACE_TEMPLATE_112 * 1.2 + [rng.uniform(-40, 220), rng.uniform(-30, 120)]
    config = BlendConfig(scale=(0.9, 1.1), shift=0.05, sharpen_or_blur=1.0)
    params = draw_params(config, rng)
    out, weight = self_blend(frame, marks, params)
    source = transform_source(frame, marks, params).astype(np.float32)
    expected = np.clip(np.rint(source * weight[..., None]
                               + frame.astype(np.float32) * (1 - weight[..., None])), 0, 255)
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
