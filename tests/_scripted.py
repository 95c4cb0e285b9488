"""Scripted completions for trainer tests: a long trace that reaches its answer early, and a wrong one."""

PAD = " We keep every digit aligned and write each partial product down before adding anything up."
LONG = ("<think>\nLet me compute 6 times 7 carefully, step by step, one digit at a time." + PAD + "\n\n"
        "First I recall the times table for six and seven, then I multiply the two numbers." + PAD + "\n\n"
        "6 times 7 is 42." + PAD + " So the answer is 42.\n\n"
        "Wait, let me check again: 7 times 6 is 42 as well." + PAD + " Yes.\n"
        "</think>\n\nThe answer is \\boxed{42}.")
WRONG = "<think>\nI guess it is about forty. I will not check anything at all here, sorry.\n</think>\n\n\\boxed{41}"
