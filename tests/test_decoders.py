"""The decoder interface (vlm.decoders): decord and PyAV agree on the index and the frames' numbers.

Every decoded frame is matched to the source frames the clip was encoded from (a moving square
makes each frame distinct): frame i must be nearest to source frame i, for both backends and
both read methods. Pixel differences between the backends are printed, not asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import videos as clips
from videocfr.vlm.decoders import DECODERS, cache_decoder, get_decoder
from videocfr.vlm.video import read_frames

pytest.importorskip("decord")
pytest.importorskip("av")

CUTS, N = [30, 55], 80


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    path = clips.colour_segments(root, CUTS, N, size=(96, 64))
    return path, clips.segment_frames(CUTS, N, (96, 64)).astype(np.float32)


def nearest_source(frames: np.ndarray, source: np.ndarray) -> list[int]:
    """For each decoded frame, the index of the source frame with the least mean |difference|."""
    diff = np.abs(frames.astype(np.float32)[:, None] - source[None]).mean(axis=(2, 3, 4))
    return diff.argmin(axis=1).tolist()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_probe_counts_every_frame(clip, name):
    info = get_decoder(name).probe(clip[0])
    assert (info.num_frames, info.width, info.height) == (N, 96, 64)
    assert info.fps == pytest.approx(25.0, rel=1e-3)


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("method", ["sequential", "seek"])
def test_read_at_returns_the_frames_of_those_numbers(clip, name, method):
    path, source = clip
    idx = np.array([0, 1, 7, 7, 29, 30, 31, 54, 55, 70, 79])
    frames = read_frames(path, idx, method, decoder=name)
    assert frames.shape == (len(idx), 64, 96, 3) and frames.dtype == np.uint8
    assert nearest_source(frames, source) == idx.tolist()


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_scan_yields_every_frame_in_order(clip, name):
    path, source = clip
    got = list(get_decoder(name).scan(path, 20, 40))
    assert [i for i, _ in got] == list(range(20, 40))
    assert nearest_source(np.stack([f for _, f in got]), source) == list(range(20, 40))


def test_backends_differ_by_little(clip):
    path, _ = clip
    idx = np.arange(0, N, 5)
    a = read_frames(path, idx, decoder="decord").astype(np.int16)
    b = read_frames(path, idx, decoder="pyav").astype(np.int16)
    d = np.abs(a - b)
    print(f"decord vs pyav at native size: max |diff| {int(d.max())}, mean {d.mean():.3f} "
          f"grey levels over {len(idx)} frames")


def test_out_of_range_and_unknown_names_say_what_to_fix(clip):
    path, _ = clip
    for name in DECODERS:
        with pytest.raises(ValueError, match="the file has 80 frames"):
            read_frames(path, np.array([5, 80]), decoder=name)
    with pytest.raises(ValueError, match="decoder 'opencv' unknown"):
        read_frames(path, np.array([0]), decoder="opencv")


def test_a_cache_reads_with_the_backend_it_recorded():
    assert cache_decoder({}) == "decord"  # the default is recorded only when set
    assert cache_decoder({"sampling": {"num_frames": 8}}) == "decord"
    assert cache_decoder({"sampling": {"decoder": "pyav"}}) == "pyav"
    with pytest.raises(ValueError, match="cannot read"):
        cache_decoder({"sampling": {"decoder": "opencv"}})
