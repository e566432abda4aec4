"""R_acc against Video-R1's `accuracy_reward`, case by case (METHOD §5, docs/rewards.md).

Each row: (problem type, solution, completion, Video-R1's score, lenient score). The Video-R1
column is what its reward returns for that input, worked out from its rules: the stripped text
of the first `<answer>` of completion and solution; multiple choice: equal strings; numerical:
0 when exactly one has "." or ",", else round(x, 2) equal with commas removed; OCR: clip(1 - WER);
free-form: mean ROUGE-1/2/L F with the Porter stemmer; regression: 1 - clip(relative error).
The lenient column differs only for multiple choice. Cases where the project deliberately
differs from Video-R1 are in DEVIATIONS, with both values.
"""

from __future__ import annotations

import pytest
from videocfr.train.rewards import AccuracyReward
from videocfr.vlm.answers import answer_accuracy, extract_answer

OPTIONS = ["A. a cat", "B. a dog", "C. a car", "D. nothing"]
MC, NUM, OCR, FF, REG = "multiple choice", "numerical", "OCR", "free-form", "regression"


def sol(text: str) -> str:
    return f"<answer>{text}</answer>"


def out(text: str) -> str:
    return f"<think>looking at the frames</think><answer>{text}</answer>"


# hand-worked ROUGE: ref "the dogs are running" ~ hyp "the dog is running" after stemming:
# R1 3/4 tokens -> F 0.75; R2 1 of 3 bigrams each -> F 1/3; RL LCS 3 -> F 0.75
DOGS = (0.75 + 1 / 3 + 0.75) / 3
# ref "the cat sat on the mat" (6), hyp "The cat, sat!" (3): R1 F 2/3, R2 2/5 & 2/2 -> 4/7, RL 2/3
CAT = (2 / 3 + 4 / 7 + 2 / 3) / 3

TABLE = [
    # --- multiple choice: equal strings; lenient: the letter with punctuation or + option text
    (MC, sol("B"), out("B"), 1.0, 1.0),
    (MC, sol("B"), out("  B \n"), 1.0, 1.0),
    (MC, sol(" B "), out("B"), 1.0, 1.0),
    (MC, sol("B"), out("I think it is B"), 0.0, 0.0),
    (MC, sol("A"), out("A B C D"), 0.0, 0.0),
    (MC, sol("B"), out("A B C D"), 0.0, 0.0),
    (MC, sol("B"), out("B C"), 0.0, 0.0),
    (MC, sol("B"), out("B\nC"), 0.0, 0.0),
    (MC, sol("B"), out("B, C"), 0.0, 0.0),
    (MC, sol("B"), out("B a dog"), 0.0, 1.0),
    (MC, sol("B"), out("B. a dog"), 0.0, 1.0),
    (MC, sol("B"), out("(B) a dog"), 0.0, 1.0),
    (MC, sol("B"), out("B. a cat"), 0.0, 0.0),
    (MC, sol("B"), out("B. a dog, I think"), 0.0, 0.0),
    (MC, sol("B"), out("B."), 0.0, 1.0),
    (MC, sol("B"), out("(B)"), 0.0, 1.0),
    (MC, sol("B"), out("B)"), 0.0, 1.0),
    (MC, sol("B"), out("**B**"), 0.0, 1.0),
    (MC, sol("B"), out("b"), 0.0, 0.0),
    (MC, sol("B"), out("Because"), 0.0, 0.0),
    (MC, sol("B"), out("Blue"), 0.0, 0.0),
    (MC, sol("B"), out("Option B"), 0.0, 0.0),
    (MC, sol("B"), out("C"), 0.0, 0.0),
    (MC, sol("B"), out("(C)"), 0.0, 0.0),
    (MC, sol("B"), out(""), 0.0, 0.0),
    (MC, sol("B"), "the answer is B", 0.0, 0.0),
    (MC, sol("B"), "<think>so it is B</think>", 0.0, 0.0),
    (MC, sol("B"), "<answer>B</answer><answer>C</answer>", 1.0, 1.0),
    (MC, sol("B"), "<answer>C</answer><answer>B</answer>", 0.0, 0.0),
    (MC, sol("Yes"), out("Yes"), 1.0, 1.0),
    (MC, sol("Yes"), out("yes"), 0.0, 0.0),
    (MC, sol("Yes"), out("Yes."), 0.0, 0.0),
    (MC, sol("Y"), out("Yes"), 0.0, 0.0),
    # --- numerical: the decimal-point/comma rule, then round(x, 2)
    (NUM, sol("3"), out("3"), 1.0, 1.0),
    (NUM, sol("3"), out("3.0"), 0.0, 0.0),
    (NUM, sol("3.0"), out("3"), 0.0, 0.0),
    (NUM, sol("2.0"), out("2.00"), 1.0, 1.0),
    (NUM, sol("1000"), out("1,000"), 0.0, 0.0),
    (NUM, sol("1,000"), out("1000"), 0.0, 0.0),
    (NUM, sol("1,000"), out("1,000"), 1.0, 1.0),
    (NUM, sol("2.5"), out("2,5"), 0.0, 0.0),  # both have a mark; 25 != 2.5
    (NUM, sol("3.14"), out("3.14159"), 1.0, 1.0),
    (NUM, sol("3.14"), out("3.149"), 0.0, 0.0),
    (NUM, sol("3.14"), out("3.1"), 0.0, 0.0),
    (NUM, sol("0.5"), out(".5"), 1.0, 1.0),
    (NUM, sol("-4"), out("-4"), 1.0, 1.0),
    (NUM, sol("7"), out(" 7 "), 1.0, 1.0),
    (NUM, sol("12"), out("twelve"), 0.0, 0.0),
    (NUM, sol("12"), out("12 apples"), 0.0, 0.0),
    (NUM, sol("12"), out(""), 0.0, 0.0),
    (NUM, sol("12"), "no answer tags: 12", 0.0, 0.0),
    (NUM, sol("12"), out("1e400"), 0.0, 0.0),  # inf: Video-R1 compares inf with 12
    (NUM, sol("12"), out("nan"), 0.0, 0.0),  # round(nan) never equals
    # --- OCR: clip(1 - WER), whitespace words, case-sensitive
    (OCR, sol("STOP"), out("STOP"), 1.0, 1.0),
    (OCR, sol("the quick brown fox"), out("the quick brown dog"), 0.75, 0.75),
    (OCR, sol("a b c d"), out("a b c"), 0.75, 0.75),
    (OCR, sol("Hello World"), out("hello world"), 0.0, 0.0),
    (OCR, sol("EXIT 12"), out("EXIT   12"), 1.0, 1.0),
    (OCR, sol("x"), out("a b c d e f g h i"), 0.0, 0.0),  # WER 9, clipped
    (OCR, sol("open now"), out(""), 0.0, 0.0),
    (OCR, sol("open now"), out("open"), 0.5, 0.5),
    # --- free-form: rouge_score with the stemmer
    (FF, sol("playing guitar"), out("plays guitars"), 1.0, 1.0),
    (FF, sol("The dogs are running"), out("the dog is running"), DOGS, DOGS),
    (FF, sol("the cat sat on the mat"), out("The cat, sat!"), CAT, CAT),
    (FF, sol("He opens the door"), out("He opens the door"), 1.0, 1.0),
    (FF, sol("the cat sat"), out("zebra"), 0.0, 0.0),
    (FF, sol("a man is cooking"), out(""), 0.0, 0.0),
    # --- regression: 1 - clip(relative error)
    (REG, sol("10"), out("10"), 1.0, 1.0),
    (REG, sol("10"), out("8"), 0.8, 0.8),
    (REG, sol("10"), out("12.5"), 0.75, 0.75),
    (REG, sol("10"), out("35"), 0.0, 0.0),
    (REG, sol("-5"), out("-4"), 0.8, 0.8),
    (REG, sol("10"), out("1,0"), 1.0, 1.0),  # commas removed, no decimal rule here
    (REG, sol("10"), out("n/a"), 0.0, 0.0),
    (REG, sol("10"), out("inf"), 0.0, 0.0),  # relative error inf -> clipped to 1
    (REG, sol("10"), out(""), 0.0, 0.0),
    (REG, sol("0"), out("0"), 0.0, 0.0),  # (0 + 1e-9) / (0 + 1e-9) = 1: Video-R1's quirk, kept
]

IDS = [f"{i:02d}-{t}-{c[-40:]!r}" for i, (t, _, c, _, _) in enumerate(TABLE)]


def test_reward_table_is_large_and_covers_every_type():
    assert len(TABLE) >= 60
    assert {row[0] for row in TABLE} == {MC, NUM, OCR, FF, REG}


@pytest.mark.parametrize("problem_type, solution, completion, video_r1, lenient", TABLE, ids=IDS)
def test_reward_matches_video_r1(problem_type, solution, completion, video_r1, lenient):
    got = AccuracyReward()(None, [completion], solution=[solution], problem_type=[problem_type])
    assert got == [pytest.approx(video_r1, abs=1e-6)]


@pytest.mark.parametrize("problem_type, solution, completion, video_r1, lenient", TABLE, ids=IDS)
def test_reward_lenient_mode(problem_type, solution, completion, video_r1, lenient):
    reward = AccuracyReward(mode="lenient")
    got = reward(None, [completion], solution=[solution], problem_type=[problem_type],
                 options=[OPTIONS])
    assert got == [pytest.approx(lenient, abs=1e-6)]
    # the function the evaluation uses gives the same number
    direct = answer_accuracy(extract_answer(completion), solution, problem_type, mode="lenient",
                             options=OPTIONS)
    assert direct == pytest.approx(lenient, abs=1e-6)


def test_reward_lenient_never_accepts_option_text_without_options():
    # "B a dog" is accepted only when the option text can be checked
    assert answer_accuracy("B a dog", "B", MC, mode="lenient") == 0.0
    assert answer_accuracy("B a dog", "B", MC, mode="lenient", options=OPTIONS) == 1.0
    assert answer_accuracy("(B)", "B", MC, mode="lenient") == 1.0


# Deliberate differences (docs/rewards.md): (type, solution, completion, Video-R1, videocfr)
DEVIATIONS = [
    (REG, sol("10"), out("nan"), 1.0, 0.0),  # NaN relative error slips through Video-R1's clip
    (NUM, sol("inf"), out("inf"), 1.0, 0.0),  # non-finite numbers score 0
    (MC, "B", out("B"), 0.0, 1.0),  # an untagged truth is the answer (Video-R1 reads "")
    (MC, "B", "no tags at all", 1.0, 0.0),  # Video-R1: "" == "" pays a missing answer
]


@pytest.mark.parametrize("problem_type, solution, completion, video_r1, ours", DEVIATIONS,
                         ids=["regression-nan", "numerical-inf", "untagged-truth",
                              "untagged-truth-no-answer"])
def test_reward_documented_deviations(problem_type, solution, completion, video_r1, ours):
    assert video_r1 != ours
    got = AccuracyReward()(None, [completion], solution=[solution], problem_type=[problem_type])
    assert got == [ours]


def test_reward_each_row_uses_its_own_problem_type():
    # Video-R1 scores the whole batch with the first row's type: the free-form row would be
    # compared as multiple choice ("plays guitars" != "playing guitar" -> 0).
    got = AccuracyReward()(None, [out("B"), out("plays guitars"), out("3.0")],
                           solution=[sol("B"), sol("playing guitar"), sol("3")],
                           problem_type=[MC, FF, NUM])
    assert got == [1.0, 1.0, 0.0]


def test_reward_bad_input_is_a_score_never_an_exception():
    weird = ["", "<answer>", "</answer><answer>", "<answer>1e400</answer>", "<answer>nan</answer>",
             "<answer>" + "9" * 500 + "</answer>", "<answer>\x00\ufffd</answer>", "日本語"]
    for problem_type in (MC, NUM, OCR, FF, REG):
        for truth in (sol("B"), "B", "", sol(""), "3.5", sol("1e400"), "日本"):
            got = AccuracyReward()(None, weird, solution=[truth] * len(weird),
                                   problem_type=[problem_type] * len(weird))
            assert all(0.0 <= g <= 1.0 for g in got), (problem_type, truth, got)


@pytest.mark.parametrize("completion, score", [
    (" red B", 1.0), (" blue B", 1.0), ("B", 1.0), (" red B.", 1.0), (" red C", 0.0),
    (" red", 0.0), ("", 0.0), (" B red", 0.0), ("<answer>B</answer>", 0.0)])
def test_final_letter_mode_reads_the_last_word(completion, score):
    # the world policy answers "<word> <letter>" without tags: the letter is the answer, and
    # the word before it does not count (a correct letter may follow another word)
    got = AccuracyReward(mode="final-letter")(None, [completion], answer=["B"],
                                              problem_type=[MC])
    assert got == [score]
