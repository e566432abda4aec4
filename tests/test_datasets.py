"""Dataset readers: native JSON/JSONL, Video-R1 JSON, dataset YAMLs, the demo dataset."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from videocfr.precompute.datasets import (
    DatasetError,
    load_dataset,
    load_dataset_config,
    resolve_dataset_yaml,
    video_id_from_path,
)
from videocfr.vlm.answers import parse_solution as parse_answer

NATIVE = [
    {"video_id": "v2", "video": "b.mp4", "question_id": "q1", "question": "What?",
     "options": ["A. x", "B. y"], "answer": "A", "problem_type": "multiple choice"},
    {"video_id": "v1", "video": "a.mp4", "question_id": "q1", "question": "Why?",
     "answer": "because"},
    {"video_id": "v2", "video": "b.mp4", "question_id": "q2", "question": "How many?",
     "answer": "3", "problem_type": "numerical"},
]


def write_yaml(tmp_path: Path, annotation: str, **extra) -> Path:
    lines = [f"annotation: {annotation}", "video_root: videos"]
    lines += [f"{k}: {json.dumps(v)}" for k, v in extra.items()]
    path = tmp_path / "mydata.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_videos(tmp_path: Path, names: list[str]) -> None:
    for name in names:
        p = tmp_path / "videos" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not decoded here")


@pytest.mark.parametrize("as_jsonl", [True, False], ids=["jsonl", "json"])
def test_native_grouped_by_video(tmp_path, as_jsonl):
    ann = tmp_path / ("ann.jsonl" if as_jsonl else "ann.json")
    ann.write_text("\n".join(json.dumps(r) for r in NATIVE) if as_jsonl else json.dumps(NATIVE))
    make_videos(tmp_path, ["a.mp4", "b.mp4"])
    ds = load_dataset(str(write_yaml(tmp_path, ann.name)))
    assert [v.video_id for v in ds.videos] == ["v1", "v2"]  # sorted by id
    v2 = ds.videos[1]
    assert [q.question_id for q in v2.questions] == ["q1", "q2"]  # file order
    assert v2.questions[0].options == ["A. x", "B. y"]
    assert v2.questions[1].problem_type == "numerical"
    assert ds.videos[0].questions[0].problem_type == "free-form"  # no options, no type
    assert v2.abs_path == (tmp_path / "videos" / "b.mp4").resolve()
    assert ds.config.name == "mydata" and ds.config.format == "native"
    assert ds.num_questions == 3 and ds.missing_videos() == []


def test_missing_field_names_field_and_record(tmp_path):
    records = [dict(NATIVE[0]), dict(NATIVE[1])]
    del records[1]["question"]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    with pytest.raises(DatasetError, match=r"record 1 \(0-based\) has no field 'question'"):
        load_dataset(str(write_yaml(tmp_path, ann.name)))


def test_bad_jsonl_line_is_named(tmp_path):
    ann = tmp_path / "ann.jsonl"
    ann.write_text(json.dumps(NATIVE[0]) + "\n{oops\n")
    with pytest.raises(DatasetError, match="line 2"):
        load_dataset(str(write_yaml(tmp_path, ann.name)))


def test_missing_video_file_is_reported_not_fatal(tmp_path, caplog):
    ann = tmp_path / "ann.jsonl"
    ann.write_text("\n".join(json.dumps(r) for r in NATIVE))
    make_videos(tmp_path, ["a.mp4"])
    with caplog.at_level(logging.WARNING, logger="videocfr.precompute.datasets"):
        ds = load_dataset(str(write_yaml(tmp_path, ann.name)))
    assert [v.video_id for v in ds.missing_videos()] == ["v2"]
    assert any("b.mp4" in r.message for r in caplog.records)


def test_duplicate_question_and_conflicting_path(tmp_path):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps([NATIVE[0], NATIVE[0]]))
    with pytest.raises(DatasetError, match=r"records 0 and 1 .* question 'q1' of video 'v2'"):
        load_dataset(str(write_yaml(tmp_path, ann.name)))
    other = dict(NATIVE[2], video="c.mp4")
    ann.write_text(json.dumps([NATIVE[0], other]))
    with pytest.raises(DatasetError, match="one id, one file"):
        load_dataset(str(write_yaml(tmp_path, ann.name)))


VIDEO_R1 = [
    {"problem_id": 1, "problem": "What colour is the car?", "data_type": "video",
     "problem_type": "multiple choice", "options": ["A. red", "B. blue"],
     "solution": "<answer>B</answer>", "path": "./LLaVA-Video-178K/clips/car_01.mp4",
     "data_source": "LLaVA-Video-178K"},
    {"problem_id": 2, "problem": "How many cats?", "data_type": "image",
     "problem_type": "numerical", "options": [], "solution": "<answer>2</answer>",
     "path": "./images/cats.jpg"},
    {"problem_id": 3, "problem": "How many cars pass?", "data_type": "video",
     "problem_type": "numerical", "options": [], "solution": "<answer> 4 </answer>",
     "path": "./LLaVA-Video-178K/clips/car_01.mp4"},
]


def test_video_r1_format(tmp_path):
    ann = tmp_path / "Video-R1-mini.json"
    ann.write_text(json.dumps(VIDEO_R1))
    make_videos(tmp_path, ["LLaVA-Video-178K/clips/car_01.mp4"])
    ds = load_dataset(str(write_yaml(tmp_path, ann.name)))  # format auto-detected
    assert ds.config.format == "video-r1"
    assert ds.skipped_images == 1 and ds.num_records == 3
    assert [v.video_id for v in ds.videos] == ["LLaVA-Video-178K/clips/car_01"]
    qs = ds.videos[0].questions
    assert [(q.question_id, q.answer, q.problem_type) for q in qs] == [
        ("1", "B", "multiple choice"), ("3", "4", "numerical")]
    assert qs[0].options == ["A. red", "B. blue"]
    assert ds.missing_videos() == []


def test_video_r1_missing_field(tmp_path):
    rec = dict(VIDEO_R1[0])
    del rec["solution"]
    ann = tmp_path / "r1.json"
    ann.write_text(json.dumps([VIDEO_R1[0], rec]))
    with pytest.raises(DatasetError, match=r"record 1 \(0-based\) has no field 'solution'"):
        load_dataset(str(write_yaml(tmp_path, ann.name, format="video-r1")))


def test_helpers():
    assert parse_answer("<answer>B</answer>") == "B"
    assert parse_answer("<think>hm</think><answer> 3.5 </answer>") == "3.5"
    assert parse_answer("C") == "C"
    assert video_id_from_path("./a/b/c.mp4") == "a/b/c"
    assert video_id_from_path("x.webm") == "x"


def test_dataset_yaml_unknown_key_and_lookup(tmp_path, monkeypatch):
    path = write_yaml(tmp_path, "ann.json", sampleing={"num_frames": 8})
    with pytest.raises(DatasetError, match="unknown key 'sampleing'"):
        load_dataset_config(str(path))
    with pytest.raises(DatasetError, match="available: .*demo"):
        resolve_dataset_yaml("no-such-dataset")
    assert resolve_dataset_yaml("demo").name == "demo.yaml"  # the repo's configs/datasets
    cfg = load_dataset_config(str(write_yaml(tmp_path, "ann.json", sampling={"num_frames": 8})))
    assert cfg.sampling == {"num_frames": 8}
    assert cfg.annotation == str((tmp_path / "ann.json").resolve())  # relative to the YAML


@pytest.mark.slow
def test_demo_dataset_builds_and_loads(tmp_path):
    from videocfr.precompute.datasets import DatasetConfig
    from videocfr.precompute.demo import NEEDLE_CLIPS, REAL_CLIPS

    cfg = DatasetConfig(name="demo", annotation=str(tmp_path / "demo" / "annotations.jsonl"),
                        video_root=str(tmp_path / "demo"), builtin="demo")
    ds = load_dataset(cfg)
    assert len(ds.videos) == len(REAL_CLIPS) + len(NEEDLE_CLIPS)
    assert ds.missing_videos() == []
    records = [json.loads(x) for x in Path(cfg.annotation).read_text().splitlines()]
    needles = [r for r in records if "needle_frames" in r]
    assert len(needles) == len(NEEDLE_CLIPS)
    for r in needles:
        a, b = r["needle_frames"]
        assert 0 < a < b and r["answer"] in "ABCD"
    import decord

    red = next(r for r in needles if r["video_id"] == "needle_red")
    a, b = red["needle_frames"]
    vr = decord.VideoReader(str(tmp_path / "demo" / "needle_red.mp4"))
    inside = vr[(a + b) // 2].asnumpy().astype(int)
    outside = vr[max(0, a - 10)].asnumpy().astype(int)
    assert inside[..., 0].mean() > 150 and inside[..., 2].mean() < 180  # the red flash
    assert abs(inside - outside).mean() > 30  # visually distinct from the haystack


def test_answer_fields_are_validated_at_load_named_and_counted(tmp_path):
    # unknown and list-valued problem types, a missing and an empty solution: all four named,
    # counted, before any video is read (Video-R1 format; native records the same way).
    good = dict(VIDEO_R1[0])
    bad = [dict(good, problem_id=f"p{i}", path=f"./v/clip{i}.mp4") for i in range(4)]
    bad[0]["problem_type"] = "yes/no"
    bad[1]["problem_type"] = ["multiple choice"]
    del bad[2]["solution"]
    bad[3]["solution"] = "<answer> </answer>"
    ann = tmp_path / "r1.json"
    ann.write_text(json.dumps([good, *bad]))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(write_yaml(tmp_path, ann.name, format="video-r1")))
    msg = str(err.value)
    assert "4 of 5 records" in msg
    for needle in ("record 1 (0-based) has an unknown problem_type 'yes/no'",
                   "record 2 (0-based) has an unknown problem_type ['multiple choice']",
                   "record 3 (0-based) has no field 'solution'",
                   "record 4 (0-based) has an empty 'solution'"):
        assert needle in msg
    native = [dict(NATIVE[0], answer=""), dict(NATIVE[1], problem_type="counting")]
    ann = tmp_path / "native.json"
    ann.write_text(json.dumps(native))
    with pytest.raises(DatasetError, match="2 of 2 records"):
        load_dataset(str(write_yaml(tmp_path, ann.name)))
