"""The CPU testbed's toy world: tasks, traces, tokenizer, chat template, toy LRM build and stats."""

import random
from dataclasses import replace

import pytest

from rearl.core.answers import extract_answer
from rearl.core.reflection import count_reflections
from rearl.core.text import ThinkTags, segment, split_think
from rearl.testbed import tasks as T
from rearl.testbed import toy_model as M
from rearl.testbed import traces as R


@pytest.fixture(scope="module")
def traces():
    return R.make_traces(T.make_tasks(400, seed=7), seed=7)


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory, traces):
    """A saved tokenizer beside a tiny untrained Llama: what AutoTokenizer sees in a real build."""
    d = tmp_path_factory.mktemp("toy-tok")
    tok = M.train_tokenizer([t.document for t in traces[:200]])
    M.make_model(tok, M.ModelSize(hidden=32, intermediate=64, layers=1, heads=2), seed=0).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tok(toy_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(toy_dir))


# -- tasks --------------------------------------------------------------------------------------------
def test_tasks_are_seeded_correct_and_graded():
    a = T.make_tasks(200, seed=3)
    assert a == T.make_tasks(200, seed=3)
    assert a != T.make_tasks(200, seed=4)
    assert [t.level for t in a[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]  # levels take turns: any prefix is balanced
    for t in a:
        lv = T.LEVELS[t.level]
        lens = [len(str(x)) for x in t.operands]
        assert len(lens) == lv.operands and lv.digits[0] <= min(lens) and max(lens) == lv.digits[1]
        assert t.answer == str(sum(t.operands))
        assert T.parse_problem(t.problem) == t.operands
        assert T.level_of(t.operands) == t.level
    # a prefix of a longer run is the shorter run ("unlimited" and stable)
    assert T.make_tasks(50, seed=3) == a[:50]
    w = T.make_tasks(400, levels=(1, 4), seed=0, weights=(0.1, 0.9))
    assert {t.level for t in w} == {1, 4} and sum(t.level == 4 for t in w) > 300
    assert T.EASY == (1, 2) and T.HARD == (3, 4)
    # layouts vary within a level (no fixed distance between a digit and the line that reads it)
    assert len({tuple(len(str(x)) for x in t.operands) for t in a if t.level == 4}) > 3
    with pytest.raises(ValueError):
        T.make_tasks(1, levels=(9,))


def test_hinted_numbers_round_trip():
    assert T.hinted(731) == "c7 b3 a1" and T.hinted(731, 1) == "yc7 yb3 ya1"
    assert T.unhint("c7 b3 a1") == T.unhint("xc7 xb3 xa1") == 731
    assert T.format_problem((12, 345)) == "xb1 xa2 + yc3 yb4 ya5"
    assert T.parse_problem("Please reason.\n\nQuestion: xb1 xa2 + yb3 ya4 = ?") == (12, 34)
    for bad in ("b1 c2", "731", "a1 b2", "xb1 ya2"):
        with pytest.raises(ValueError):
            T.unhint(bad)


def test_write_jsonl_rows_for_rearl_loaders(tmp_path):
    from rearl.core.io import read_jsonl
    from rearl.core.traces import gold_from_field

    tasks = T.make_tasks(6, seed=1)
    p = T.write_jsonl(tasks, tmp_path / "toy.jsonl")
    rows = [r for _, r in read_jsonl(p)]
    assert [r["problem"] for r in rows] == [t.problem for t in tasks]
    assert [gold_from_field(r["answer"]) for r in rows] == [t.answer for t in tasks]
    assert [r["level"] for r in rows] == [t.level for t in tasks]
    assert len({r["id"] for r in rows}) == 6


# -- traces -------------------------------------------------------------------------------------------
def test_column_addition_is_exact_and_slips_are_wrong():
    rng = random.Random(0)
    for _ in range(500):
        ops = [rng.randint(1, 9999) for _ in range(rng.randint(2, 4))]
        assert R.add_columns(ops).value == sum(ops)
        assert R.add_columns(ops, reverse=True).value == sum(ops)
        c = R.add_columns(ops, slip=1.0, rng=rng)
        assert (c.value == sum(ops)) == (not c.slipped)  # a forgotten carry always shows in the sum
    c = R.add_columns([78, 57])
    assert c.lines == ["Now column a : xa8 + ya7 = 15 .\nI write 5 in a and carry 1 to b .",
                       "Now column b : xb7 + yb5 = 12 , plus the carry 1 makes it 13 .\nI write 3 in b and carry 1 to c .",
                       "Column c holds only the carry 1 , so I write 1 in c ."]
    assert R.add_columns([78, 57], reverse=True).lines[1].startswith("Now column b : yb5 + xb7 = 12 , plus")
    assert R.add_columns([78, 57, 9]).lines[0] == ("Now column a : xa8 + ya7 = 15 , + za9 = 24 .\n"
                                                  "I write 4 in a and carry 2 to b .")
    # the hard levels' slip: a carry of 2 passed on as 1, every time (slip 1.0 needs no randomness)
    slipped = R.add_columns([78, 57, 9], slip=1.0)
    assert slipped.lines[0].endswith("I write 4 in a and carry 1 to b .") and slipped.slipped == [0]
    assert slipped.value == sum([78, 57, 9]) - 10
    assert R.add_columns([71, 52, 3], slip=1.0).slipped == []  # no column reaches 20: nothing to slip
    assert c.hinted == "c1 b3 a5"
    # a quick check restates the column's digit sum (never the carry, so it cannot catch a slip)
    checked = R.add_columns([78, 57], rng=random.Random(0), mid_check=1.0)
    assert checked.lines[1].endswith("\nWait , let me check : 7 + 5 = 12 , yes .")


def test_hard_levels_slip_at_the_chosen_share():
    """World v5 draws hard tasks so that `Level.slip_share` of their first passes slip (docs/testbed.md#world-v5)."""
    tasks = T.make_tasks(2000, levels=T.HARD, seed=3)
    slips = [T.first_pass_slips(t.operands) for t in tasks]
    assert all(T.level_of(t.operands) == t.level and sum(t.operands) == int(t.answer) for t in tasks)
    for lv in T.HARD:
        share = sum(s for s, t in zip(slips, tasks) if t.level == lv) / sum(t.level == lv for t in tasks)
        assert abs(share - T.LEVELS[lv].slip_share) < 0.05, (lv, share)
    # the predicate agrees with the trace generator's own slips
    for t in tasks[:300]:
        assert T.first_pass_slips(t.operands) == bool(R.add_columns(t.operands, slip=1.0).slipped)
    assert not T.first_pass_slips([71, 52, 3]) and T.first_pass_slips([78, 57, 9])


def test_stripping_the_quick_checks_leaves_no_reflection(traces):
    """The style a length reward can strip: without its quick checks a first pass has no reflection word, and the
    quick checks carry the density a calibrated threshold asks for (docs/testbed.md#world-v5)."""
    from rearl.core.reflection import calibrate

    thinks = [split_think(tr.text).think for tr in traces]
    cal = calibrate([(t, R.n_tokens(t)) for t in thinks])
    for t in thinks[:100]:
        first = t[: R.answer_statements(t)[0].end]
        stripped = "\n".join(line for line in first.split("\n") if not line.startswith("Wait , let me check :"))
        assert count_reflections(stripped) == 0
    # first passes alone reach the threshold's density about as often as not: the checks are needed to meet it
    fp = [t[: R.answer_statements(t)[0].end] for t in thinks]
    at = sum(R.n_tokens(f) / max(1, count_reflections(f)) <= cal.threshold for f in fp) / len(fp)
    assert 0.2 <= at <= 0.8, at


def test_trace_format(traces):
    by_level = {}
    for tr in traces:
        lv = T.LEVELS[tr.task.level]
        by_level.setdefault(tr.task.level, []).append(tr)
        s = split_think(tr.text)
        assert s.closed and s.n_close_tags == 1 and "<think>" not in tr.text
        stmts = R.answer_statements(s.think)
        final = stmts[-1].value
        assert tr.text.endswith(f"\\boxed{{{final}}}") and extract_answer(tr.text).answer == str(final)
        assert stmts[0].value == tr.first_answer
        assert lv.echoes[0] <= tr.n_echoes <= lv.echoes[1]
        assert not tr.checked or lv.hard
        if not lv.hard:
            assert not tr.slipped and tr.first_answer == int(tr.task.answer)
        assert (tr.first_answer != int(tr.task.answer)) == tr.slipped
        # only a skipped check leaves a slip uncorrected
        assert tr.correct == (final == int(tr.task.answer)) == (tr.checked or not tr.slipped)
        if tr.slipped and tr.checked:
            assert "does not match" in tr.text and f"the first pass was wrong , and the answer is {tr.task.answer} ." in tr.text
        # world v5: the quick checks are the first pass's only reflection words (a style a policy can drop)
        first_pass = s.think[: stmts[0].end]
        assert count_reflections(first_pass) == first_pass.count("Wait , let me check :")
        # each echo is one paragraph with one reflection, and restates the final answer
        for echo in s.think.split("\n\n")[len(s.think.split("\n\n")) - tr.n_echoes:]:
            assert count_reflections(echo) == 1 and R.answer_statements(echo)[-1].value == final
    for lv in T.EASY:  # some easy traces stop right after their answer, some overthink for long
        n = [t.n_echoes for t in by_level[lv]]
        assert min(n) == 0 and max(n) >= 6 and sum(x == 0 for x in n) >= 0.08 * len(n)
    for lv in T.HARD:
        rate = sum(t.slipped for t in by_level[lv]) / len(by_level[lv])
        assert 0.2 < rate < 0.8  # hard levels' first pass slips often enough for the check to matter
        skipped = [t for t in by_level[lv] if not t.checked]
        assert 0.1 < len(skipped) / len(by_level[lv]) < 0.4
        # a trace that skips its check is wrong whenever its first pass slipped
        assert any(not t.correct for t in skipped)
        assert all(t.correct for t in by_level[lv] if t.checked)
        # the slip is systematic: the first pass slips exactly when a column reaches 20
        for t in by_level[lv]:
            assert t.slipped == bool(R.add_columns(t.task.operands, slip=1.0).slipped)


def _measured(tmp_path, toy_dir, sampled):
    import json

    from rearl.eval.overthinking import MeasureConfig, measure

    trs = R.make_traces(T.make_tasks(400, seed=11), seed=11, sampled=sampled)
    f = tmp_path / f"gen-{sampled}.jsonl"
    f.write_text("".join(json.dumps({"id": i, "problem": t.task.problem, "answer": t.task.answer,
                                     "level": t.task.level, "response": t.text}) + "\n" for i, t in enumerate(trs)))
    return measure(MeasureConfig(input=[str(f)], tokenizer=str(toy_dir)), progress=False)["files"][str(f)]


def test_traces_sit_in_the_real_traces_bands(tmp_path, toy_dir):
    """What the toy LRM should sample at T=0.6, against real R1-distill traces, with `rearl measure`
    (docs/testbed.md#the-world); the generator itself stops more often, for the sampling to sharpen."""
    res = _measured(tmp_path, toy_dir, sampled=True)
    b = res["all"]
    assert 0.35 <= b["removable_share"]["median"] <= 0.55
    # the p90 >= 0.65 is for the toy LRM's samples (the story measures it: 0.70 at T=0.6, where the
    # model takes more echoes than it was shown); the reference traces sit at 0.64-0.65
    assert b["removable_share"]["p10"] <= 0.05 and b["removable_share"]["p90"] >= 0.6
    gen = _measured(tmp_path, toy_dir, sampled=False)["all"]
    assert gen["removable_share"]["median"] < b["removable_share"]["median"]
    # v5: the p10 sits in slipped, re-checked hard traces (only the verdict's tail is removable), whatever the echoes
    assert gen["removable_share"]["p10"] <= b["removable_share"]["p10"] + 0.01
    assert 0.5 <= b["density_before"]["median"] / b["density_after"]["median"] <= 2
    assert b["paragraphs"]["median"] >= 8
    by = {str(k): v for k, v in res["by_level"].items()}
    easy = min(by[str(k)]["removable_share"]["median"] for k in T.EASY)
    hard = max(by[str(k)]["removable_share"]["median"] for k in T.HARD)
    assert easy > hard  # easy problems overthink more


def test_finish_documents_box_the_last_stated_answer(traces):
    rng = random.Random(0)
    seen_wrong = False
    for tr in traces[:200]:
        doc = R.finish_document(tr, rng)
        prompt = R.prompt_text(tr.task.problem)
        assert doc.startswith(prompt) and doc.endswith("<eos>") and doc.count("</think>") == 1
        body = doc[len(prompt) : -len("<eos>")]
        think = split_think(body).think
        assert tr.text.startswith(think)  # a prefix of the trace, cut at a line end
        stmts = R.answer_statements(think)
        assert stmts and extract_answer(body).answer == str(stmts[-1].value)
        seen_wrong |= stmts[-1].value != int(tr.task.answer)  # a slipped first pass keeps its wrong answer
    assert seen_wrong


def test_prompt_and_document(traces):
    tr = traces[0]
    assert R.prompt_text(tr.task.problem) == f"<eos>Q : {tr.task.problem} = ?\n<think>\n"
    assert tr.document == R.prompt_text(tr.task.problem) + tr.text + "<eos>"


# -- tokenizer ----------------------------------------------------------------------------------------
def test_tokenizer_round_trip_and_tags(tok, traces):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.eos_token == "<eos>" and tok.pad_token == "<pad>" and tok.padding_side == "left"
    tags = ThinkTags.from_tokenizer(tok)
    assert tags.open_id is not None and tags.close_id is not None
    for tr in traces:
        ids = tok(tr.document, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids
        assert tok.decode(ids) == tr.document  # exact, spaces and all
        comp = tok(tr.text, add_special_tokens=False)["input_ids"]
        assert tok.decode(comp) == tr.text
        assert tags.close_id in comp and tags.open_id not in comp
    # one token per digit: a number is a digit plus glued continuation digits
    assert tok.tokenize("answer is 22106 .") == ["answer", "is", "2", "##2", "##1", "##0", "##6", "."]
    assert tok("So the")["input_ids"] == tok("So the", add_special_tokens=False)["input_ids"]  # no BOS added


def test_decoded_answers_verify(tok, traces, pool):
    from rearl.core.verify import check_completions

    sample = traces[:80]
    texts = [tok.decode(tok(t.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]) for t in sample]
    boxed = [R.answer_statements(split_think(t.text).think)[-1].value for t in sample]
    assert all(split_think(x).closed for x in texts)
    assert all(extract_answer(x).answer == str(b) for x, b in zip(texts, boxed))
    # the verifier agrees with the generator on which traces are right (a skipped check can leave a slip)
    assert [bool(v) for v in check_completions(texts, [t.task.answer for t in sample], pool=pool)] == [t.correct for t in sample]
    assert not all(t.correct for t in sample) and sum(t.correct for t in sample) > 0.8 * len(sample)
    wrong = [str(int(t.task.answer) + 1) for t in sample]
    assert not any(check_completions(texts, wrong, pool=pool))


def test_paragraphs_separate_answer_and_rechecks(tok, traces):
    for tr in traces[:120]:
        seg = segment(tok, text=tr.text)
        parts = split_think(tr.text).think.strip().split("\n\n")
        # every blank-line part (columns, the answer, the check, each echo) closes its own paragraph, except
        # a check's verdict on a 3-digit sum (30 tokens), which joins the next part (world v2, kept so that the
        # measured toy LRM matches this generator)
        short = [i for i, x in enumerate(parts[:-1]) if R.n_tokens(x) < R.PART_TOKENS]
        assert all(parts[i].startswith("This gives") for i in short)
        assert len(parts) == tr.parts and len(seg.paragraphs) == len(parts) - len(short)
        if not short:
            assert [p.text for p in seg.paragraphs] == [x.strip() for x in parts]
        assert all(p.n_tokens >= 32 for p in seg.paragraphs[:-1])
        answer = next(p for p in seg.paragraphs if R.answer_statements(p.text))
        assert R.answer_statements(answer.text)[0].value == tr.first_answer and answer.text.startswith("All the")
        for p in seg.paragraphs[len(parts) - tr.n_echoes :]:
            assert count_reflections(p.text) == 1  # each echo is one reflection


def test_chat_template_raw_and_wrapped(tok):
    from rearl.core.prompts import math_messages, policy_prompt_ids

    problem = "xc1 xb2 xa3 + yc4 yb5 ya6"
    want = R.prompt_text(problem)
    raw = tok.apply_chat_template([{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True)
    wrapped = tok.apply_chat_template(math_messages(problem), tokenize=False, add_generation_prompt=True)
    with_q = tok.apply_chat_template([{"role": "user", "content": problem + " = ?"}], tokenize=False,
                                     add_generation_prompt=True)
    assert raw == wrapped == with_q == want
    assert policy_prompt_ids(tok, problem) == tok(want, add_special_tokens=False)["input_ids"]
    full = tok.apply_chat_template([{"role": "user", "content": problem}, {"role": "assistant", "content": "x"}],
                                   tokenize=False)
    assert full == want + "x<eos>"


# -- stats on a known completion ----------------------------------------------------------------------
def test_analyse_reference_traces(tok, traces):
    from rearl.testbed.stats import analyse, summarize

    recs = []
    for tr in traces[:40]:
        ids = tok(tr.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rec, cut = analyse(tok, tr.task, ids, finished=True, correct=tr.correct)
        recs.append(rec)
        assert rec.first_answer == tr.first_answer and rec.checked == tr.checked
        think = split_think(tr.text).think
        good = next((x for x in R.answer_statements(think) if str(x.value) == tr.task.answer), None)
        assert rec.reflections_after == (count_reflections(think[good.end :]) if good else None)
        assert rec.tokens_after is None or 0 <= rec.tokens_after < rec.think_tokens
        assert rec.reads > 0 and rec.read_errors == 0 and rec.columns > 0 and rec.sum_errors == 0
        # the cut keeps exactly the first pass: its last token is the " ." closing the answer line
        kept = tok.decode(ids[:cut])
        assert kept.endswith(f"the answer is {tr.first_answer} .")
    table = summarize(recs)
    assert table["all"]["n"] == 40 and table["L1"]["reflections_after_first_correct"] >= 2
    assert table["all"]["digit_read_error"] == 0 == table["all"]["column_sum_error"]


def test_column_errors_separate_reading_from_adding():
    from rearl.testbed.stats import column_errors

    ops = (78, 57)
    good = "\n".join(R.add_columns(ops).lines)
    assert column_errors(good, ops) == (4, 0, 2, 0)
    misread = good.replace("xa8 + ya7 = 15", "xa1 + ya7 = 8").replace("write 5 in a and carry 1", "write 8 in a and carry 0")
    assert column_errors(misread, ops) == (4, 1, 2, 0)  # wrong digit, right sum of what it read
    misadded = good.replace("makes it 13", "makes it 14")
    assert column_errors(misadded, ops) == (4, 0, 2, 1)
    wrong_carry = good.replace("write 5 in a and carry 1", "write 5 in a and carry 0")
    assert column_errors(wrong_carry, ops) == (4, 0, 2, 1)


# -- the toy LRM build -----------------------------------------------------------------------------------
def test_sft_batches_are_whole_documents_from_position_zero(tok):
    cfg = replace(M.ToyConfig(), finish_frac=0.5)
    close = tok.convert_tokens_to_ids("</think>")
    batches = M.doc_batches(tok, cfg, chunk=64)
    rows = 0
    for _ in range(4):
        x, y, n_real = next(batches)
        assert x.shape == y.shape and x.numel() <= cfg.batch * cfg.block
        for xi, yi in zip(x.tolist(), y.tolist()):
            rows += 1
            assert xi[0] == tok.eos_token_id  # each row is one document, from its BOS
            real = [t for t in xi if t != tok.pad_token_id]
            # never a second document in a row: EOS only as BOS and as the stop token
            assert tok.eos_token_id not in real[1:-1]
            trained = [t for t in yi if t != -100]
            assert trained[-1] == tok.eos_token_id  # the stop EOS is learnt (y is x shifted by one)
            decoded = tok.decode(trained)
            if decoded.startswith("\\boxed{"):  # a finish-from-a-cut document: only its box is learnt
                assert close in xi and "</think>" not in decoded
            else:
                assert decoded.startswith("Let me add") and "</think>" in decoded
    assert rows > 8



def _tiny_config():
    return replace(M.quick_config(seed=1), size=M.ModelSize(hidden=32, intermediate=64, layers=1, heads=2),
                   sft_tokens=20_000, tokenizer_corpus=300, block=128)


def test_tiny_build_loads_generates_and_is_cached(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rearl.backends.hf import HFPolicy
    from rearl.core.prompts import policy_prompt_ids

    cfg = _tiny_config()
    p = M.build_toy_lrm(tmp_path, config=cfg, progress=False)
    assert M.is_built(p) and p.parent == tmp_path
    assert [x.name for x in tmp_path.iterdir()] == [p.name]  # no temp dirs left behind
    meta = M.load_meta(p)
    assert meta["config"]["seed"] == 1 and meta["sft"]["steps"] == meta["sft"]["planned_steps"] == 19
    assert set(meta["probe"]) == {"L1", "L2", "L3", "L4", "all", "per_level"}
    tok = AutoTokenizer.from_pretrained(str(p))
    model = AutoModelForCausalLM.from_pretrained(str(p))
    assert model.config.model_type == "llama" and model.config.eos_token_id == tok.eos_token_id
    assert tok.decode(tok("So the answer is 105 .")["input_ids"]) == "So the answer is 105 ."
    pol = HFPolicy(str(p), batch_size=4)
    gens = pol.generate([policy_prompt_ids(pol.tokenizer, t.problem) for t in T.make_tasks(3)], max_new_tokens=8,
                        temperature=0.6, seed=0)
    assert len(gens) == 3 and all(0 < len(g.ids) <= 8 for g in gens)
    # a second call reuses the build (no training: it would change the mtime of the marker)
    mtime = (p / M.COMPLETE).stat().st_mtime_ns
    assert M.build_toy_lrm(tmp_path, config=cfg, progress=False) == p
    assert (p / M.COMPLETE).stat().st_mtime_ns == mtime


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def boom(out, cfg, progress, probe_per_level, threads=None):
        (out / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(M, "_build_into", boom)
    with pytest.raises(KeyboardInterrupt):
        M.build_toy_lrm(tmp_path, config=_tiny_config(), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_config_key_names_the_cache_entry():
    a, b = M.ToyConfig(), M.ToyConfig(seed=1)
    assert a.dirname() != b.dirname() and a.dirname() == M.ToyConfig().dirname()
    assert M.quick_config().dirname().startswith("toy-lrm-quick-s0-")
    assert M.testbed_cache_dir().name == "testbed"


@pytest.mark.slow
def test_quick_build_learns_the_format(quick_toy_cache):
    """The real quick mode (a few minutes): the model writes think tags, re-checks and a box."""
    from rearl.testbed.stats import sample_records, summarize

    p = M.build_toy_lrm(quick_toy_cache, quick=True, progress=False)
    recs = sample_records(p, T.make_tasks(8, seed=99), temperature=0.0, max_new_tokens=640, batch_size=8,
                          progress=False)
    table = summarize(recs)
    assert table["all"]["finished"] >= 50
    assert table["all"]["mean_reflections"] >= 1
    assert all("</think>" in r.text and "\\boxed{" in r.text for r in recs if r.finished)


def test_flattened_stops_undo_the_sharpening_of_sampling():
    """The generator's echo counts, sharpened by sampling at T (each stop-or-echo choice as a binary softmax),
    give back the target counts."""
    def sharpened(weights, t):
        out, left, rest = [], 1.0, sum(weights)
        for k, w in enumerate(weights):
            g = 1.0 if k == len(weights) - 1 or rest <= w else w / rest
            h = 1.0 if g >= 1 else (0.0 if g <= 0 else 1 / (1 + ((1 - g) / g) ** (1 / t)))
            out.append(left * h)
            left -= left * h
            rest -= w
        return out

    for lv in T.LEVELS.values():
        assert T.flattened_stops(lv.echo_weights, 1.0) == pytest.approx(lv.echo_weights, abs=1e-6)
        gen = T.flattened_stops(lv.echo_weights, T.SAMPLED_AT)
        assert sum(gen) == pytest.approx(1.0, abs=1e-5)
        assert sharpened(gen, T.SAMPLED_AT) == pytest.approx(lv.echo_weights, abs=1e-4)
        assert sum(lv.generator_echo_weights) == pytest.approx(1.0, abs=1e-5)
    easy = T.LEVELS[T.EASY[0]]
    assert easy.generator_echo_weights[0] > easy.echo_weights[0]  # more stops at the answer than the target


def test_recalibrated_stops_move_toward_the_target_and_stay_put_when_met():
    """One correction step from measured counts: a toy whose samples matched the target leaves the generator
    as it is; one that stopped too early gets more echoes; a sampler that is exactly the T-sharpening of
    the generator is corrected onto the target in one step."""
    target = T.LEVELS[T.EASY[0]].echo_weights
    flat = T.flattened_stops(target, T.SAMPLED_AT)
    assert T.recalibrated_stops(flat, target, target, T.SAMPLED_AT) == pytest.approx(flat, abs=1e-5)
    early = (0.16, 0.14, 0.22, 0.15, 0.11, 0.11, 0.07, 0.04)  # world v3's easy samples (tasks._EASY_SAMPLED_V3)
    new = T.recalibrated_stops(flat, target, early, T.SAMPLED_AT)
    assert sum(new) == pytest.approx(1.0, abs=1e-5)
    assert sum(new[5:]) > sum(flat[5:]) and new[0] == pytest.approx(flat[0], abs=1e-5)  # k=0 was on target
    assert T.LEVELS[T.EASY[0]].generator_echo_weights == new
    assert T.LEVELS[T.HARD[0]].generator_echo_weights == T.flattened_stops(T.LEVELS[T.HARD[0]].echo_weights, T.SAMPLED_AT)
    # if sampling really sharpened as flattened_stops assumes, a sampler fed the plain target (no flattening)
    # is measured as its sharpening; one step from there lands on the flattened weights (hazards kept
    # inside the clipping range [0.02, 0.98])
    mild = (0.3, 0.25, 0.25, 0.2)
    plain_sampled = T.flattened_stops(mild, 1 / T.SAMPLED_AT)  # the sharpening of `mild` at T
    assert T.recalibrated_stops(mild, mild, plain_sampled, T.SAMPLED_AT) == pytest.approx(
        T.flattened_stops(mild, T.SAMPLED_AT), abs=1e-4)
