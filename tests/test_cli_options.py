"""The CLI's flags come from the config dataclasses, and today's flags still mean what they meant."""

from __future__ import annotations

import dataclasses

import pytest

from rearl.cli import build_parser
from rearl.eval.run import EvalConfig
from rearl.offline.detect import DetectConfig
from rearl.offline.revise import ReviseConfig
from rearl.options import from_args
from rearl.reflector.evaluate import EvalConfig as ReflectorEvalConfig
from rearl.reflector.labels import LabelConfig
from rearl.reflector.train import TrainConfig
from rearl.train.baselines import BaselineConfig


def parse(*argv: str):
    return build_parser().parse_args(list(argv))


def test_detect_flags():
    cfg = from_args(DetectConfig, parse("detect", "--input", "t.jsonl", "--out", "o.jsonl", "--tokenizer", "tok",
                                        "--no-second-half", "--window-tokens", "0", "--answer-field", "gold"))
    assert (cfg.input, cfg.out, cfg.tokenizer, cfg.second_half, cfg.window_tokens, cfg.answer_field) == (
        "t.jsonl", "o.jsonl", "tok", False, 0, "gold")
    assert cfg.detector == "oracle" and cfg.position == "normal" and cfg.batch_size == 4
    with pytest.raises(SystemExit):
        parse("detect", "--input", "t.jsonl", "--out", "o.jsonl", "--tokenizer", "tok", "--detector", "nope")


def test_revise_positions_comma_separated():
    cfg = from_args(ReviseConfig, parse("revise", "--cuts", "c", "--policy", "default", "--out", "o",
                                        "--positions", "normal,strong"))
    assert cfg.positions == ["normal", "strong"] and cfg.incomplete_is_wrong is True
    assert from_args(ReviseConfig, parse("revise", "--cuts", "c", "--policy", "p", "--out", "o")).positions is None


def test_baseline_positional_and_renamed_flags():
    cfg = from_args(BaselineConfig, parse("baseline", "rpo", "--revised", "r.jsonl", "--out", "d", "--full",
                                          "--batch-size", "3", "--beta", "0.2"))
    assert (cfg.method, cfg.output_dir, cfg.use_peft, cfg.per_device_train_batch_size, cfg.beta) == (
        "rpo", "d", False, 3, 0.2)
    assert cfg.report_to == ["none"]  # not on the CLI: the field's default


def test_eval_lists_and_auto_n():
    cfg = from_args(EvalConfig, parse("eval", "--out", "r", "--benchmarks", "gsm8k, aime24", "--budgets", "100,200",
                                      "--n", "8"))
    assert cfg.benchmarks == ["gsm8k", "aime24"] and cfg.budgets == [100, 200] and cfg.n == 8
    cfg = from_args(EvalConfig, parse("eval", "--out", "r"))
    assert cfg.n == "auto" and cfg.benchmarks == ["gsm8k", "math500", "gaokao2023en", "amc23", "aime24"]
    with pytest.raises(SystemExit):  # the CLI asks for --out although Python callers have a default
        parse("eval")


def test_reflector_label_repeatable_input():
    cfg = from_args(LabelConfig, parse("reflector", "label", "--input", "a.jsonl", "--input", "b.jsonl",
                                       "--out", "l.jsonl", "--tokenizer", "tok", "--no-gold"))
    assert cfg.inputs == ["a.jsonl", "b.jsonl"] and cfg.use_gold is False


def test_reflector_train_flags_override_only_when_given():
    a = parse("reflector", "train", "--data", "x.jsonl", "--epochs", "2", "--grad-accum", "4", "--threads", "1",
              "--full", "--no-resume")
    given = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(a, f.name)}
    assert given == {"data": ["x.jsonl"], "num_train_epochs": 2.0, "gradient_accumulation_steps": 4,
                     "num_threads": 1, "lora": False, "resume": False}


def test_reflector_eval_flags():
    cfg = from_args(ReflectorEvalConfig, parse("reflector", "eval", "--model", "m", "--labels", "h.jsonl",
                                               "--ratio", "0.3", "--ratio", "0.7", "--no-whole-trace", "--threads", "1"))
    assert cfg.ratios == [0.3, 0.7] and cfg.whole_trace is False and cfg.num_threads == 1
    assert from_args(ReflectorEvalConfig, parse("reflector", "eval", "--model", "m", "--labels", "h")).ratios == [0.5]


@pytest.mark.parametrize("cls", [DetectConfig, ReviseConfig, BaselineConfig, EvalConfig, LabelConfig, TrainConfig,
                                 ReflectorEvalConfig])
def test_every_option_is_documented_once(cls):
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
