"""benchmarks/refocus_world.py's content-free control: every question's frame embeddings come from
another haystack of the same K whose needle lies elsewhere; all else stays the question's own."""

from __future__ import annotations

import numpy as np
import pytest
from videocfr.cache_format import QuestionRecord, VideoRecord
from videocfr.cache_format.fusion import QFRAME_ARRAYS
from videocfr.selector.data import SelectorSample, make_batch


def _sample(rng, vid: str, k: int, second: int, dim: int = 6) -> SelectorSample:
    video = VideoRecord(video_id=vid, path=f"videos/{vid}.mp4", content_hash="",
                        frame_indices=np.arange(k) * 8 + 4, timestamps=np.arange(k) + 0.5,
                        duration=float(k), embeddings=rng.standard_normal((k, dim)))
    arrays = {name: np.full(k, 1.0 / k, np.float32) for name in QFRAME_ARRAYS}
    question = QuestionRecord(video_id=vid, question_id="needle", question=f"what about {vid}?",
                              options=["A. red", "B. blue"], answer="A",
                              problem_type="multiple choice",
                              text_embedding=rng.standard_normal(dim), **arrays)
    needle = np.zeros(k, bool)
    needle[second] = True
    return SelectorSample(video=video, question=question,
                          times=((np.arange(k) + 0.5) / k).astype(np.float32), needle=needle)


def _samples():
    rng = np.random.default_rng(0)
    out = []
    for k in (10, 14):  # two lengths; per length 3 depths x 2 needle kinds (same second)
        for second in (1, 4, 8):
            for kind in ("frame", "overlay"):
                out.append(_sample(rng, f"{kind}-L{k}-s{second}", k, second))
    return out


def test_control_moves_every_question_to_another_video(refocus_world):
    samples = _samples()
    donor = refocus_world.donors(samples, seed=0)
    view = refocus_world.shuffled(samples, donor)
    assert len(view) == len(samples)
    for i, (s, c, d) in enumerate(zip(samples, view, donor)):
        src = samples[int(d)]
        assert int(d) != i and src.video.video_id != s.video.video_id
        assert src.num_candidates == s.num_candidates  # same K: shapes unchanged
        assert not (src.needle & s.needle).any()  # the donor's needle is elsewhere
        assert c.video.embeddings is src.video.embeddings
        assert not np.array_equal(c.video.embeddings, s.video.embeddings)
        # the question, its text embedding, times, needle and frames to decode stay its own
        assert c.question is s.question
        np.testing.assert_array_equal(c.question.text_embedding, s.question.text_embedding)
        np.testing.assert_array_equal(c.times, s.times)
        np.testing.assert_array_equal(c.needle, s.needle)
        assert (c.video.video_id, c.video.path) == (s.video.video_id, s.video.path)
        np.testing.assert_array_equal(c.video.frame_indices, s.video.frame_indices)
    assert sorted(donor.tolist()) == list(range(len(samples)))  # a permutation
    # the originals are untouched, and the batch the policy reads holds the donors' frames
    assert all(s.video.embeddings is not v.video.embeddings for s, v in zip(samples, view))
    batch = make_batch(view)
    for i, d in enumerate(donor):
        k = samples[i].num_candidates
        np.testing.assert_allclose(batch.frames[i, :k].numpy(),
                                   samples[int(d)].video.embeddings.astype(np.float32))
        np.testing.assert_allclose(batch.question[i].numpy(),
                                   samples[i].question.text_embedding.astype(np.float32))
    np.testing.assert_array_equal(refocus_world.donors(samples, seed=0), donor)  # seeded


def test_control_refuses_a_length_without_a_donor(refocus_world):
    rng = np.random.default_rng(1)
    samples = [_sample(rng, "a", 10, 3), _sample(rng, "b", 10, 3), _sample(rng, "c", 12, 2),
               _sample(rng, "d", 12, 5)]
    with pytest.raises(ValueError, match="K=10"):
        refocus_world.donors(samples, seed=0, tries=50)


def test_train_and_test_grids_must_not_share_lengths_or_depths(refocus_world):
    cfg = refocus_world.BuildConfig
    refocus_world.check_held_out(cfg(lengths=(40, 70), depths=(0.1, 0.3)),
                                 cfg(lengths=(50,), depths=(0.0, 0.2)))
    with pytest.raises(ValueError, match="lengths"):
        refocus_world.check_held_out(cfg(lengths=(40, 50), depths=(0.1,)),
                                     cfg(lengths=(50,), depths=(0.2,)))
    with pytest.raises(ValueError, match="depths"):
        refocus_world.check_held_out(cfg(lengths=(40,), depths=(0.1, 0.2)),
                                     cfg(lengths=(50,), depths=(0.2,)))
