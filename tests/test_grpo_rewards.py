"""The shared reward functions on hand-written completions: well-formed, malformed, missing tags, numeric variants."""

import textwrap

import pytest

from llf_recipes.engines.trl.backend import trl_reward
from llf_recipes.grpo import rewards

GOOD = textwrap.dedent("""\
    <reasoning>
    4 packs of 12 is 48; giving away 9 leaves 39.
    </reasoning>
    <answer>
    39
    </answer>""")


def total(response, answer):
    fns = {n: rewards.load(n) for n in rewards.DEFAULT}
    return rewards.score(response, answer, fns)


def test_a_correct_well_formed_answer_earns_every_reward():
    scores = total(GOOD, "39")
    assert scores == {"overall": 3.5, "xmlcount": 0.5, "format": 0.5, "integer": 0.5, "correctness": 2.0}


@pytest.mark.parametrize("response, want", [
    (GOOD, 0.5),
    ("<reasoning>thinking</reasoning>", 0.25),
    ("<answer>39</answer>", 0.25),
    ("<reasoning>unclosed <answer>39", 0.25),
    ("no tags at all: 39", 0.0),
    ("</answer></answer><answer>", 0.25),  # presence, not count
])
def test_xmlcount_gives_an_eighth_per_tag_present(response, want):
    assert rewards.xmlcount(response) == want


@pytest.mark.parametrize("response, want", [
    (GOOD, 0.5),
    ("<reasoning>r</reasoning><answer>1</answer>", 0.5),
    ("preamble <reasoning>r</reasoning>\n\n<answer>1</answer> trailing", 0.5),
    ("<answer>1</answer><reasoning>r</reasoning>", 0.0),  # wrong order
    ("<reasoning>r</reasoning><answer>1", 0.0),  # answer left open
    ("<reasoning>r<answer>1</answer>", 0.0),  # reasoning never closed
    ("<reasoning>r</reasoning> so <answer>1</answer>", 0.0),  # text between the blocks
    ("", 0.0),
])
def test_format_needs_reasoning_then_answer(response, want):
    assert rewards.format_reward(response) == want


@pytest.mark.parametrize("response, want", [
    ("<answer>\n42\n</answer>", "42"),
    ("<answer>first</answer> then <answer>second</answer>", "second"),  # the last answer counts
    ("<answer>  7 apples", "7 apples"),  # left open: up to the end
    ("the answer is 42", None),  # no tag: nothing extracted
    ("", None),
])
def test_extract_answer(response, want):
    assert rewards.extract_answer(response) == want


@pytest.mark.parametrize("extracted, answer, want", [
    ("1,000", "1000", True), ("1000", "1,000", True), ("72.0", "72", True), ("72", "72.00", True), ("$5", "5", True),
    ("-3", "-3", True), ("3.5", "3.50", True),
    ("72.5", "72", False), ("71", "72", False), ("seventy-two", "72", False), ("1 000", "1000", False),
    ("Paris", "Paris", True), ("paris", "Paris", False),  # non-numeric references compare as text
    (None, "72", False), ("72", None, False),
])
def test_numeric_normalisation(extracted, answer, want):
    assert rewards.same_answer(extracted, answer) is want


@pytest.mark.parametrize("inner, integer, correct", [
    ("1,000", 0.5, 2.0), ("1000.0", 0.5, 2.0), ("999", 0.5, 0.0), ("a thousand", 0.0, 0.0), ("", 0.0, 0.0),
])
def test_integer_and_correctness_on_numeric_variants(inner, integer, correct):
    response = f"<reasoning>r</reasoning><answer>{inner}</answer>"
    assert rewards.integer(response) == integer
    assert rewards.correctness(response, "1000") == correct


def test_malformed_xml_scores_partially_and_never_raises():
    for response in ["<reasoning><answer></reasoning></answer>", "<<answer>>12<</answer>>", "<answer></answer>", "\x00<answer>"]:
        scores = total(response, "12")
        assert set(scores) == {"overall", "xmlcount", "format", "integer", "correctness"}
        assert 0.0 <= scores["overall"] <= 3.5
    assert total("<<answer>>12<</answer>>", "12")["correctness"] == 0.0  # "12<" is not a number


def test_untagged_right_number_earns_no_answer_reward():
    assert total("39", "39")["overall"] == 0.0


def test_user_reward_from_a_file(tmp_path):
    (tmp_path / "mine.py").write_text("def brevity(response, answer=None, **row):\n    return 1.0 / (1 + len(response))\n")
    fn = rewards.load(f"{tmp_path}/mine.py:brevity")
    assert fn("abc") == 0.25
    assert rewards.label(f"{tmp_path}/mine.py:brevity") == "brevity"
    relative = rewards.load("mine.py:brevity", base=tmp_path)
    assert relative("") == 1.0


def test_user_reward_from_an_importable_module(tmp_path):
    (tmp_path / "myrewards_pkg.py").write_text("def shout(response, answer=None, **row):\n    return float(response.isupper())\n")
    fn = rewards.load("myrewards_pkg:shout", base=tmp_path)
    assert fn("ABC") == 1.0 and fn("abc") == 0.0


@pytest.mark.parametrize("spec, message", [
    ("nope", "no built-in reward 'nope'"),
    ("missing_file.py:fn", "does not exist"),
    ("json:no_such_function", "has no function 'no_such_function'"),
    (":fn", "is not `module:function`"),
    ("mod:", "is not `module:function`"),
])
def test_bad_reward_names_say_what_is_wrong(spec, message, tmp_path):
    with pytest.raises(rewards.RewardSpecError, match=message):
        rewards.load(spec, base=tmp_path)


def test_easyr1_batch_interface():
    out = rewards.easyr1_compute_score(
        [{"response": GOOD, "response_length": 20, "ground_truth": "39"},
         {"response": "<answer>1,000</answer>", "response_length": 5, "ground_truth": "1000"},
         {"response": "no idea", "response_length": 2, "ground_truth": "5"}],
        rewards=["correctness", "integer"])
    assert [o["overall"] for o in out] == [2.5, 2.5, 0.0]
    assert out[1] == {"overall": 2.5, "correctness": 2.0, "integer": 0.5}


def test_trl_adapter_passes_completions_answers_and_columns():
    seen = []

    def spy(response, answer=None, **row):
        seen.append((response, answer, row))
        return len(response)

    fn = trl_reward("tests.spy:spy", spy)
    out = fn(prompts=[[{"role": "user", "content": "q"}]] * 2,
             completions=[[{"role": "assistant", "content": "ab"}], [{"role": "assistant", "content": "abcd"}]],
             answer=["1", "2"], question=["q1", "q2"], completion_ids=[[1], [2]], trainer_state=object())
    assert out == [2.0, 4.0]
    assert seen == [("ab", "1", {"question": "q1"}), ("abcd", "2", {"question": "q2"})]
    assert fn.__name__ == "spy"
    assert trl_reward("correctness", rewards.correctness)(completions=["<answer>1,000</answer>"], answer=["1000"]) == [2.0]
