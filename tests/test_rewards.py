"""Rewards (METHOD §5): accuracy per Video-R1 answer type, format, and the consensus-frame term."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from videocfr.train.rewards import AccuracyReward, ConsensusFrameReward, FormatReward
from videocfr.vlm.answers import answer_accuracy, extract_answer, word_error_rate
from videocfr.vlm.coverage import coverage, js_divergence


def _c(answer: str) -> str:
    return f"<think>hmm</think><answer>{answer}</answer>"


# --- accuracy ----------------------------------------------------------------------------------


def test_wer_known_numbers():
    assert word_error_rate("a b c d", "a x c") == pytest.approx(2 / 4)  # 1 sub + 1 del
    assert word_error_rate("", "a") == 1.0


def test_unknown_problem_type_and_mode_raise_any_truth_string_does_not():
    with pytest.raises(ValueError, match="unknown problem_type"):
        answer_accuracy("A", "A", "yes/no")
    with pytest.raises(ValueError, match="answer mode"):
        answer_accuracy("A", "A", "multiple choice", mode="fuzzy")
    for truth in ("42", "Yes", "", "<answer></answer>", "  ", "B. a dog", "<answer>"):
        assert answer_accuracy("A", truth, "multiple choice") in (0.0, 1.0)


def test_accuracy_reward_columns_and_conversational():
    r = AccuracyReward()
    completions = [
        _c("B"),
        [{"role": "assistant", "content": _c("3.14")}],
        "no tags at all B",
    ]
    out = r(None, completions, solution=["<answer>B</answer>", "<answer>3.14</answer>", "B"],
            problem_type=["multiple choice", "numerical", "multiple choice"])
    assert out == [1.0, 1.0, 0.0]
    # native records: `answer` column, default type
    assert AccuracyReward("multiple choice")(None, [_c("A")], answer=["A"]) == [1.0]
    with pytest.raises(ValueError, match="problem_type"):
        r(None, [_c("A")], answer=["A"])
    with pytest.raises(ValueError, match="has 2 values for 1"):
        r(None, [_c("A")], answer=["A", "B"], problem_type=["multiple choice"])
    assert r.__name__ == "accuracy"


def test_extract_answer():
    assert extract_answer("<think>x</think><answer>\n B \n</answer>") == "B"
    assert extract_answer("<answer>A</answer><answer>B</answer>") == "A"
    assert extract_answer("B") == ""


# --- format --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("<think>reason</think><answer>B</answer>", 1.0),
        ("<think>multi\nline</think>\n<answer>B</answer>", 1.0),
        ("<think>r</think><answer>B</answer>\n", 0.0),
        ("<answer>B</answer>", 0.0),
        ("<think>reason</think>", 0.0),
        ("Sure! <think>r</think><answer>B</answer>", 0.0),
        ("<think>r</think><answer>B</answer> extra text", 0.0),
        ("<answer>B</answer><think>r</think>", 0.0),
    ],
    ids=["ok", "newlines", "trailing-newline", "no-think", "no-answer", "prefix", "suffix",
         "swapped"],
)
def test_format_reward(completion, expected):
    assert FormatReward()(None, [completion]) == [expected]


# --- consensus-frame term ----------------------------------------------------------------------

PRIOR = np.array([0.05, 0.05, 0.6, 0.2, 0.05, 0.05], np.float32)  # grouped: [0.1, 0.8, 0.1]
ALPHA = np.array([0.2, 0.5, 0.3], np.float32)
R_COV_DOT = 0.1 * 0.2 + 0.8 * 0.5 + 0.1 * 0.3  # 0.45


def _js(p, q):
    m = [(a + b) / 2 for a, b in zip(p, q)]
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m) if x > 0)  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def test_coverage_dot_and_js():
    assert coverage(ALPHA, [0.1, 0.8, 0.1], "dot") == pytest.approx(R_COV_DOT)
    js = _js([0.1, 0.8, 0.1], [0.2, 0.5, 0.3])
    assert coverage(ALPHA, [0.1, 0.8, 0.1], "js") == pytest.approx(1 - js, rel=1e-6)
    # JS in base 2: disjoint distributions -> JS = 1 -> coverage 0; identical -> 1
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    assert coverage(np.array([0.3, 0.7]), np.array([0.3, 0.7]), "js") == pytest.approx(1.0)
    with pytest.raises(ValueError, match="3 temporal groups but the grouped prior has 2"):
        coverage(ALPHA, np.array([0.5, 0.5]))


@pytest.mark.parametrize(
    "gate, acc, expected_gate",
    [("soft", 1.0, 1.0), ("soft", 0.4, 0.4), ("soft", 0.0, 0.0), ("hard", 0.4, 1.0),
     ("hard", 0.005, 0.0), ("hard", 0.02, 1.0), ("soft", 1.5, 1.0)],
    ids=["soft-correct", "soft-partial", "soft-wrong", "hard-partial", "hard-below-0.01",
         "hard-above-0.01", "soft-clipped"],
)
def test_cf_gate(gate, acc, expected_gate):
    r = ConsensusFrameReward(lam=5.0, gate=gate)
    (out,) = r(None, [_c("x")], frame_usage=[ALPHA], prior=[PRIOR], acc_rewards=[acc])
    assert out == pytest.approx(5.0 * expected_gate * R_COV_DOT, rel=1e-6)


def test_cf_computes_accuracy_itself_with_partial_credit():
    r = ConsensusFrameReward(lam=2.0, gate="soft", alignment="js")
    out = r(None, [_c("8"), _c("10")], frame_usage=[ALPHA, torch.tensor(ALPHA)],
            prior=[PRIOR, torch.tensor(PRIOR)], solution=["10", "10"],
            problem_type=["regression", "regression"])
    cov = 1 - _js([0.1, 0.8, 0.1], [0.2, 0.5, 0.3])
    assert out[0] == pytest.approx(2.0 * 0.8 * cov, rel=1e-5)
    assert out[1] == pytest.approx(2.0 * 1.0 * cov, rel=1e-5)


def test_cf_no_prior_is_none_and_counted():
    r = ConsensusFrameReward()
    out = r(None, [_c("A")] * 4, frame_usage=[ALPHA, None, ALPHA, ALPHA],
            prior=[PRIOR, PRIOR, None, PRIOR], acc_rewards=[1.0, 1.0, 1.0, 0.0])
    assert out[1] is None and out[2] is None
    assert out[0] == pytest.approx(5.0 * R_COV_DOT, rel=1e-6) and out[3] == 0.0
    assert r.num_no_prior == 2 and r.last_stats["no_prior"] == 2
    assert r.last_stats["r_cov_mean"] == pytest.approx(R_COV_DOT, rel=1e-6)
    r(None, [_c("A")], frame_usage=[None], prior=[None], acc_rewards=[1.0])
    assert r.num_no_prior == 3 and math.isnan(r.last_stats["r_cov_mean"])


def test_cf_length_mismatch_raises_never_truncates():
    r = ConsensusFrameReward()
    with pytest.raises(ValueError, match="temporal groups"):
        r(None, [_c("A")], frame_usage=[ALPHA[:2]], prior=[PRIOR], acc_rewards=[1.0])
    with pytest.raises(ValueError, match="even"):
        r(None, [_c("A")], frame_usage=[ALPHA], prior=[PRIOR[:5]], acc_rewards=[1.0])


def test_cf_config_errors_and_pickle():
    with pytest.raises(ValueError, match="gate"):
        ConsensusFrameReward(gate="sigmoid")
    with pytest.raises(ValueError, match="alignment"):
        ConsensusFrameReward(alignment="kl")
    with pytest.raises(ValueError, match="lam"):
        ConsensusFrameReward(lam=-1)
    r = pickle.loads(pickle.dumps(ConsensusFrameReward(lam=3.0, gate="hard")))
    assert (r.lam, r.gate, r.__name__) == (3.0, "hard", "consensus_frame")
    assert pickle.loads(pickle.dumps(FormatReward())).__name__ == "format"
