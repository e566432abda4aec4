"""lmms-eval runs the tiny Qwen2.5-VL on a videocfr selection file, as a user runs it.

A local task (YAML + utils.py) over synthetic clips with multiple-choice questions; the cache's
records carry the clips' true content hashes; `videocfr select --selection-file` writes the
frames; `lmms-eval eval --model videocfr_qwen2_5_vl` answers; the same samples through
`videocfr evaluate qa --mode generate` give the same per-sample answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import videos as clips
from synthetic_cache import TEST_CONFIG, TEST_MODEL, make_question, make_video
from videocfr.cache_format import ShardWriter, finalize_cache
from videocfr.cache_format.io import sha256_file
from videocfr.cache_format.selections import SelectionError, SelectionFile

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install -e '.[lmms]')")

BIN = Path(sys.executable).parent
N = 4
TASK_YAML = """\
task: videocfr_synth
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: 24
  until: ["<|im_end|>"]
  do_sample: false
  temperature: 0
process_results: !function utils.process_results
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0
"""
TASK_UTILS = '''\
from videocfr.vlm.prompts import build_prompt
from videocfr.vlm.answers import extract_answer


def doc_to_visual(doc):
    return [doc["video"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return build_prompt(doc["question"], doc["options"], "multiple choice")


def process_results(doc, results):
    return {"acc": float(extract_answer(results[0]).strip() == doc["answer"])}
'''


def _write_cache(root: Path, paths: list[Path], questions: int = 2, k: int = 8) -> None:
    """A cache over real clips: synthetic saliences, the clips' true paths and sha256s."""
    with ShardWriter(root / "cache", TEST_CONFIG, embed_dim=16, model=TEST_MODEL) as writer:
        for i, path in enumerate(paths):
            v = make_video(path.stem, k=k, seed=i, num_frames=250,
                           path=str(path.relative_to(root)))
            v = dataclasses.replace(v, content_hash=sha256_file(path))
            writer.add(v, [make_question(v, f"{path.stem}-{j}", seed=10 * i + j)
                           for j in range(questions)])
    finalize_cache(root / "cache")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from videocfr.selector.select import main as select_main
    from videocfr.vlm.tiny import tiny_model_and_processor

    root = tmp_path_factory.mktemp("lmms")
    (root / "videos").mkdir()
    paths = [clips.colour_segments(root / "videos", [60 + 40 * i], 250, size=(64, 48),
                                   name=f"clip{i}.mp4") for i in range(2)]
    _write_cache(root, paths)
    model, processor = tiny_model_and_processor(seed=0)
    with torch.no_grad():  # random weights x8: greedy answers then depend on frames and text
        for w in model.parameters():
            if w.ndim >= 2:
                w.mul_(8.0)
    model.save_pretrained(root / "tiny")
    processor.save_pretrained(root / "tiny")
    from videocfr.cache_format import Cache

    cache = Cache(root / "cache")
    docs, evals = [], []
    for vid, qid in cache.keys():
        q = cache.question(vid, qid)
        docs.append({"question_id": qid, "question": q.question, "options": q.options,
                     "answer": q.answer, "video": str(root / cache.video(vid).path)})
        evals.append({"video_id": vid, "question_id": qid, "answer": q.answer})
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "eval.json").write_text(json.dumps(evals))
    task = root / "tasks" / "videocfr_synth"
    task.mkdir(parents=True)
    (task / "videocfr_synth.yaml").write_text(TASK_YAML.format(docs=root / "docs.jsonl"))
    (task / "utils.py").write_text(TASK_UTILS)
    assert select_main(["--cache", str(root / "cache"), "--strategy", "prior-topn", "--n",
                        str(N), "--selection-file", str(root / "sel.json")]) == 0
    return root


def lmms_eval(root: Path, out: Path, model_args: str):
    """Run lmms-eval's console script as a user does (outside the source checkout)."""
    env = {**os.environ, "HF_HOME": str(root / "hf"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    cmd = [str(BIN / "lmms-eval"), "eval", "--model", "videocfr_qwen2_5_vl", "--model_args",
           model_args, "--tasks", "videocfr_synth", "--include_path", str(root / "tasks"),
           "--batch_size", "1", "--device", "cpu", "--log_samples", "--output_path", str(out)]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_lmms_eval_answers_equal_evaluate_qa_on_the_same_frames(world, tmp_path):
    from videocfr.evaluate.qa import main as qa_main

    start = time.perf_counter()
    run = lmms_eval(world, tmp_path / "out",
                    f"pretrained={world / 'tiny'},selection={world / 'sel.json'},"
                    f"cache={world / 'cache'},max_num_frames={N}")
    wall = time.perf_counter() - start
    print(f"lmms-eval wall {wall:.1f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    found = list((tmp_path / "out").rglob("*_results.json"))  # lmms-eval exits 0 on errors too
    assert len(found) == 1, run.stdout[-3000:] + run.stderr[-3000:]
    (results,) = found
    doc = json.loads(results.read_text())
    assert set(doc["results"]["videocfr_synth"]) >= {"acc,none"}
    (samples,) = (tmp_path / "out").rglob("*_samples_videocfr_synth.jsonl")
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert len(rows) == 4
    docs = [json.loads(line) for line in (world / "docs.jsonl").read_text().splitlines()]
    # the log keeps `resps` (the model's raw text) only where it differs from filtered_resps
    lmms = {docs[r["doc_id"]]["question_id"]: r.get("resps", r["filtered_resps"]) for r in rows}

    # the same samples and budget through `videocfr evaluate qa`: prior-topn (the file's
    # strategy) and, as the control, uniform frames
    assert qa_main(["--data", str(world / "eval.json"), "--cache", str(world / "cache"),
                    "--model", str(world / "tiny"), "--strategies", "prior-topn,uniform",
                    "--budgets", str(N), "--mode", "generate", "--max-new-tokens", "24",
                    "--video-root", str(world), "-o", str(tmp_path / "qa")]) == 0
    qa_rows = [json.loads(line) for line in (tmp_path / "qa/samples.jsonl").read_text()
               .splitlines()]
    qa = {s: {r["question_id"]: r for r in qa_rows if r["strategy"] == s}
          for s in ("prior-topn", "uniform")}
    sel = SelectionFile(world / "sel.json")
    for qid, r in qa["prior-topn"].items():  # the file holds the positions evaluate qa chose
        entry = sel.videos[f"videos/{r['video_id']}.mp4"]["questions"][qid]
        assert entry["positions"] == r["positions"]
    assert {q: r["prediction"] for q, r in qa["prior-topn"].items()} == lmms
    assert len(set(lmms.values())) > 1  # answers differ per sample
    other = [q for q in lmms if qa["uniform"][q]["positions"] != qa["prior-topn"][q]["positions"]]
    assert other and any(qa["uniform"][q]["prediction"] != lmms[q] for q in other)  # frames matter


def test_selection_file_records_frames_hashes_and_strategy(world):
    from videocfr.cache_format import Cache

    sel = SelectionFile(world / "sel.json")
    cache = Cache(world / "cache")
    assert sel.n == N and len(sel) == 4 and sel.config_hash == cache.config_hash
    assert sel.strategy == {"kind": "registry", "spec": "prior-topn", "seed": 0}
    s = sel.sample(str(world / "videos/clip1.mp4"), "clip1-1")
    video = cache.video("clip1")
    q = cache.question("clip1", "clip1-1")
    top = np.sort(np.argsort(-q.prior, kind="stable")[:N])  # prior-topn by hand
    assert s.frame_indices.tolist() == video.frame_indices[top].tolist()
    assert s.timestamps.tolist() == video.timestamps[top].tolist()
    assert s.content_hash == sha256_file(world / "videos/clip1.mp4")
    # found from any folder the harness keeps the videos in; question by text when no id
    assert sel.sample("/elsewhere/videos/clip1.mp4", None, f"Q: {q.question}\n").question_id \
        == "clip1-1"


def test_tspo_export_has_frame_idx_per_question(world, tmp_path):
    from videocfr.selector.select import main as select_main

    out = tmp_path / "tspo.json"
    assert select_main(["--cache", str(world / "cache"), "--strategy", "uniform", "--n", "4",
                        "--tspo-json", str(out)]) == 0
    recs = json.loads(out.read_text())
    assert len(recs) == 4
    # uniform over K = 8 candidates: positions 1, 3, 5, 7 of linspace(0, 249, 8) rounded
    idx = np.linspace(0, 249, 8).round()[[1, 3, 5, 7]].tolist()
    assert all(r["frame_idx"] == idx for r in recs)
    assert {"question_id", "question", "path", "video_id"} <= set(recs[0])


# --- bad input ---------------------------------------------------------------------------------

def _frames(sel_path: Path, **kw):
    from videocfr.evaluate.lmms import SelectedFrames

    return SelectedFrames(SelectionFile(sel_path), **kw)


def _edit(world: Path, tmp_path: Path, fn) -> Path:
    doc = json.loads((world / "sel.json").read_text())
    fn(doc)
    out = tmp_path / "sel.json"
    out.write_text(json.dumps(doc))
    return out


def test_a_video_of_other_content_is_refused_naming_file_and_sample(world, tmp_path):
    other = tmp_path / "videos" / "clip0.mp4"  # same name, other pictures
    other.parent.mkdir()
    clips.colour_segments(other.parent, [30], 250, size=(64, 48), name="clip0.mp4")
    with pytest.raises(SelectionError, match=r"sel\.json: sample clip0/clip0-0 .*content hash"):
        _frames(world / "sel.json").frames(str(other), {"question_id": "clip0-0"}, "")


def test_a_selection_from_another_cache_is_refused(world, tmp_path):
    with pytest.raises(SelectionError, match="config hash .* not the given cache's"):
        _frames(world / "sel.json", cache_hash="0" * 64)


def test_indices_past_the_end_of_the_video_are_refused(world, tmp_path):
    def past(doc):
        q = doc["videos"]["videos/clip0.mp4"]["questions"]["clip0-0"]
        q["frame_indices"][-1] = 400  # the clip has 250 frames

    sel = _edit(world, tmp_path, past)
    frames = _frames(sel, check_hash=True)
    with pytest.raises(SelectionError, match=r"sample clip0/clip0-0 .*400 but the file has 250"):
        frames.frames(str(world / "videos/clip0.mp4"), {"question_id": "clip0-0"}, "")


def test_a_video_not_in_the_file_is_an_error_unless_a_fallback_is_named(world, tmp_path):
    stray = clips.colour_segments(tmp_path, [20], 100, size=(64, 48), name="stray.mp4")
    with pytest.raises(SelectionError, match=r"video .*stray\.mp4 is not in selection file"):
        _frames(world / "sel.json").frames(str(stray), {}, "")
    frames, times, label = _frames(world / "sel.json", fallback="uniform").frames(
        str(stray), {}, "")
    assert label == "fallback uniform" and frames.shape[0] == N
    assert times.tolist() == pytest.approx([12 / 25, 37 / 25, 62 / 25, 87 / 25])
    with pytest.raises(SelectionError, match="only 'uniform'"):
        _frames(world / "sel.json", fallback="prior-topn")


def test_a_budget_unlike_the_tasks_frame_setting_is_refused(world):
    from videocfr.evaluate.lmms import VideocfrQwen25VL

    with pytest.raises(SelectionError, match=r"sel\.json holds n=4 frames per sample, the task "
                                             r"asks for max_num_frames=8; select with"):
        VideocfrQwen25VL(pretrained="tiny", selection=str(world / "sel.json"), max_num_frames=8)
    model = VideocfrQwen25VL(pretrained="tiny", selection=str(world / "sel.json"))
    with pytest.raises(SelectionError, match="task t sets max_num_frames=16"):
        req = type("Req", (), {"args": ("ctx", {"max_num_frames": 16}, None, 0, "t", "test")})
        model.generate_until([req])


def test_unknown_versions_and_damaged_files_say_what_to_do(world, tmp_path):
    with pytest.raises(SelectionError, match="version 2; this videocfr reads version 1"):
        SelectionFile(_edit(world, tmp_path, lambda d: d.update(version=2)))
    with pytest.raises(SelectionError, match="strictly ascending"):
        SelectionFile(_edit(world, tmp_path, lambda d: d["videos"]["videos/clip0.mp4"][
            "questions"]["clip0-0"]["frame_indices"].reverse()))
    with pytest.raises(SelectionError, match="not found"):
        SelectionFile(tmp_path / "none.json")


def test_an_lmms_eval_without_the_entry_point_registry_is_named(tmp_path):
    """Run where lmms_eval.models.registry_v2 cannot be imported (as in lmms-eval < 0.7)."""
    code = ("import sys; sys.modules['lmms_eval.models.registry_v2'] = None\n"
            "from videocfr.evaluate.lmms import check_lmms_eval, LmmsEvalMissing\n"
            "try:\n    check_lmms_eval()\nexcept LmmsEvalMissing as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert "has no entry-point model registry" in out.stdout, out.stderr[-2000:]
    assert "pip install 'lmms-eval==0.7.3'" in out.stdout


def test_lmms_check_command_finds_the_model(tmp_path):
    out = subprocess.run([str(BIN / "videocfr"), "evaluate", "lmms-check"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "videocfr_qwen2_5_vl" in out.stdout and "0.7.3" in out.stdout

