"""The bad-input corpus: every bad file is a VideoDecodeError that says what is wrong and how
to fix it, directly and through the worker; a hang and a crash of the worker are failed records
and the next video still decodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import videos
from videocfr.precompute.decode import DecodedVideo, SamplingConfig, VideoDecodeError, decode_video
from videocfr.precompute.worker import FAULT_ENV, iter_decoded

# (maker, words the message must contain): "fix" words check that the message says what to do.
CORPUS = {
    "missing": (lambda d: d / "no_such_video.mp4", ["file not found", "video root"]),
    "zero-byte": (videos.zero_byte, ["empty file", "0 bytes", "re-download"]),
    "text-as-mp4": (videos.text_as_mp4, ["not a video file"]),
    "audio-only": (videos.audio_only, ["no video stream", "audio-only"]),
    "truncated": (videos.truncated_clip, ["truncated or corrupt", "MP4", "re-download"]),
    "truncated-faststart": (lambda d: videos.truncated_clip(d, faststart=True, name="fs.mp4"),
                            ["truncated or corrupt", "re-download"]),
    "corrupt-middle": (videos.corrupt_clip, ["decoding failed at frames", "corrupt", "re-encode"]),
    "one-frame": (videos.one_frame_clip, ["only 1 frame", "at least 2"]),
    "vfr": (videos.vfr_clip, ["variable frame rate", "constant frame rate", "ffmpeg"]),
}

SMALL = SamplingConfig(num_frames=8)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    return {name: maker(d) for name, (maker, _) in CORPUS.items()}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    return [videos.colour_segments(d, [20], 50, name=f"good{i}.mp4") for i in range(3)]


@pytest.mark.parametrize("name", list(CORPUS))
def test_bad_file_gives_specific_error(corpus, name):
    with pytest.raises(VideoDecodeError) as info:
        decode_video(corpus[name], SMALL)
    message = str(info.value)
    assert str(corpus[name]) in message  # names the file
    for words in CORPUS[name][1]:
        assert words.lower() in message.lower(), message


def test_iter_decoded_keeps_order_and_turns_bad_files_into_errors(corpus, good):
    items = [("g0", good[0]), *((n, p) for n, p in corpus.items()), ("g1", good[1])]
    results = list(iter_decoded(items, SMALL, timeout_s=60))
    assert [item for item, _ in results] == items
    for (key, _), result in results:
        if key.startswith("g"):
            assert isinstance(result, DecodedVideo), result
            assert result.scenes.tolist() == [[0, 20], [20, 50]]
        else:
            assert isinstance(result, VideoDecodeError)
            assert CORPUS[key][1][0] in str(result)


def test_hang_is_killed_by_the_timeout_and_the_next_video_decodes(good, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, f"hang:{good[1].name}")
    items = [("a", good[0]), ("hang", good[1]), ("b", good[2])]
    results = dict(iter_decoded(items, SMALL, timeout_s=2.0))
    assert isinstance(results[items[0]], DecodedVideo)
    assert isinstance(results[items[1]], VideoDecodeError)
    assert "decode timed out after 2 s" in str(results[items[1]])
    assert isinstance(results[items[2]], DecodedVideo)


def test_worker_crash_is_a_failed_record_and_the_worker_restarts(good, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, f"crash:{good[0].name}")
    items = [("crash", good[0]), ("b", good[1]), ("c", good[2])]
    results = list(iter_decoded(items, SMALL, timeout_s=60))
    assert isinstance(results[0][1], VideoDecodeError)
    assert "crashed" in str(results[0][1]) and "SIGSEGV" in str(results[0][1])
    assert all(isinstance(r, DecodedVideo) for _, r in results[1:])


def test_consumer_leaving_early_stops_the_worker(good):
    gen = iter_decoded([(i, good[0]) for i in range(20)], SMALL, prefetch=1)
    first = next(gen)
    assert first[0] == (0, good[0]) and isinstance(first[1], DecodedVideo)
    gen.close()  # must return promptly and leave no worker behind


def test_iter_decoded_argument_errors():
    with pytest.raises(ValueError, match="timeout_s"):
        next(iter_decoded([], timeout_s=0))
    with pytest.raises(ValueError, match="prefetch"):
        next(iter_decoded([], prefetch=0))
    with pytest.raises(ValueError, match="fork"):
        next(iter_decoded([], mp_context="fork"))


def test_bad_items_are_raised_to_the_caller():
    with pytest.raises(ValueError):
        list(iter_decoded(["not-a-pair"]))


def test_two_workers_split_videos_and_match_one_worker(tmp_path):
    paths = []
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        paths.append(videos.colour_segments(tmp_path / str(i), [40 + 10 * i, 120], 180))
    items = [(i, p) for i, p in enumerate(paths)]
    one = list(iter_decoded(items, SMALL, num_workers=1))
    two = list(iter_decoded(items, SMALL, num_workers=2, min_part_frames=60))  # 2 parts each
    assert [i for i, _ in two] == items
    for (_, a), (_, b) in zip(one, two):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.scenes, b.scenes)


def test_pool_is_reused_across_calls_and_after_a_timeout(good, monkeypatch):
    from videocfr.precompute.worker import DecodePool

    with DecodePool(SMALL, timeout_s=3.0, num_workers=2) as pool:
        pool.start()
        pids = {wk.proc.pid for wk in pool.workers}
        first = list(pool.decode([("a", good[0])]))
        assert isinstance(first[0][1], DecodedVideo)
        assert {wk.proc.pid for wk in pool.workers} == pids  # the same processes
        monkeypatch.setenv(FAULT_ENV, f"hang:{good[1].name}")  # read by newly spawned workers
        for wk in pool.workers:
            wk.close()
        pool.workers[:] = [None, None]
        second = dict(pool.decode([("hang", good[1]), ("b", good[2])]))
        assert "timed out after 3 s" in str(second[("hang", good[1])])
        assert isinstance(second[("b", good[2])], DecodedVideo)
        with pytest.raises(RuntimeError, match="one call at a time"):
            gen = pool.decode([("a", good[0])])
            next(gen)
            next(pool.decode([("b", good[2])]))
        gen.close()
