from rearl.core.answers import clean_answer, extract_answer, last_boxed


def test_boxed_nested_and_fbox():
    assert last_boxed(r"x \boxed{\frac{1}{2}} y \boxed{\sqrt{\{3\}}}") == r"\sqrt{\{3\}}"
    assert last_boxed(r"\fbox{42}") == "42"
    assert last_boxed(r"so \boxed 7$") == "7"
    assert last_boxed(r"\boxed{unclosed") is None
    assert last_boxed("{" * 500 + r"\boxed{" + "{" * 500 + "1" + "}" * 500 + "}") == "{" * 500 + "1" + "}" * 500


def test_clean():
    assert clean_answer(r"\text{Evelyn}") == "Evelyn"
    assert clean_answer("12.") == "12"
    assert clean_answer(" 3.5 ") == "3.5"


def test_modes():
    t = r"<think>maybe \boxed{3}</think> The answer is \boxed{4}."
    assert extract_answer(t).answer == "4"
    unfinished = r"<think>maybe \boxed{3} hmm"
    assert extract_answer(unfinished).answer is None
    assert extract_answer(unfinished, "last_boxed_anywhere").answer == "3"
    assert extract_answer(r"plain \boxed{5}").answer == "5"
    assert extract_answer(r"plain \boxed{5}").source == "whole_text"
    # R1 template: the completion starts inside thinking, no opening tag
    r1 = r"so \boxed{3}?</think>**Final Answer:** \boxed{4}"
    assert extract_answer(r1).answer == "4"
