"""Several processes for real: `rearl train` with revision, 2 CPU ranks (DDP over gloo) launched by
`accelerate launch` with recipes/accelerate/multi_cpu.yaml, on a tiny model, under a hard timeout.

The reflection model fails on purpose for rank 1's samples only (all of them in the first step, half
afterwards), so the ranks make uneven numbers of revisions. In the first two steps generation is a
collective call, as with vLLM (every rank must send as many revision inputs as the busiest one, a
rank with none included, or the other waits forever); in the third each rank generates alone. Each
rank writes what it saw, row by row (tests/_multiprocess_child.py); the checks here read those rows:
every revision's kept prefix is its own original's ids and its answer was generated for its own
input, dropped rows are the right rows across ranks, group statistics and advantages are those of
the right rows, and the logged revision counts cover both ranks. A config that would split a group
across ranks fails with a clear error.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rearl.core.groups import apply_group_policies, group_advantages
from rearl.core.revision import DEFAULT_SCAFFOLD
from rearl.train.run import single_process_cpu_launch

REPO = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("_multiprocess_child.py")
LAUNCH_CONFIG = REPO / "recipes" / "accelerate" / "multi_cpu.yaml"
TIMEOUT = float(os.environ.get("REARL_MULTIPROCESS_TIMEOUT", "300"))
STEPS = 3
COLLECTIVE_STEPS = [0, 1]  # generation as a collective call (vLLM's contract) in these steps; alone in the others
G2 = 4  # num_generations: G = 2 samples + 2 revisions
PER_RANK = 8  # rows per rank and step: 2 whole groups


def _answer_for(input_ids):
    sys.path.insert(0, str(CHILD.parent))
    try:
        from _multiprocess_child import answer_for
    finally:
        sys.path.pop(0)
    return answer_for(input_ids)


def _launch(tmp_path: Path, tiny_model_dir: str, *extra: str) -> tuple[int, str, list[dict]]:
    """Run the child on 2 ranks; kill the whole process group if it outlives TIMEOUT."""
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"problem": f"Question {k}: what is 6 times 7?", "answer": "42"}) + "\n"
                             for k in range(8)))
    out = tmp_path / "records"
    out.mkdir()
    spec = {"out": str(out), "overrides": [
        f"model_name_or_path={tiny_model_dir}", f"reflection_model={tiny_model_dir}", f"output_dir={tmp_path / 'model'}",
        f"train_files=[{train}]", "use_cpu=true", "bf16=false", "dtype=float32",
        f"per_device_train_batch_size={PER_RANK}", f"num_generations={G2}", "max_completion_length=24",
        "revision_max_tokens=8", f"max_steps={STEPS}", "logging_steps=1", "save_strategy=no", "report_to=none",
        "loss_type=dapo", "beta=0.0", "short_trace_rule=none", "reflection_threshold=20",
        "gradient_checkpointing=false", "learning_rate=1e-3", "temperature=1.0", *extra],
        "collective_steps": COLLECTIVE_STEPS}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               TRL_EXPERIMENTAL_SILENCE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(LAUNCH_CONFIG),
           "--num_processes", "2", "--main_process_port", "0", str(CHILD), str(tmp_path / "spec.json")]
    log = tmp_path / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks: never a hung CI job
            proc.wait()
            pytest.fail(f"2-process run did not finish in {TIMEOUT:.0f} s (hang?):\n{log.read_text()[-4000:]}")
    records = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return rc, log.read_text(), records


def _scaffold_at(ids: list[int], scaffolds: list[list[int]]) -> tuple[int, int]:
    """(start, length) of the last scaffold in a revision's ids (the answer after it is scripted)."""
    found = []
    for s in scaffolds:  # the scaffold, or the same without its leading newlines (prefix ending in one)
        k = next((k for k in range(len(ids) - len(s), -1, -1) if ids[k:k + len(s)] == s), None)
        if k is not None:
            found.append((k + len(s), -k, len(s)))  # the last one; of two ending together, the longer
    assert found, "no scaffold in a revision row"
    end, neg_k, n = max(found)
    return -neg_k, n


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-5)


@pytest.mark.slow
def test_two_ranks_with_uneven_revision_failures(tiny_model_dir, tmp_path, r1_tok):
    rc, log, records = _launch(tmp_path, tiny_model_dir)
    assert rc == 0, log[-4000:]
    assert [r["rank"] for r in records] == [0, 1], log[-4000:]
    check_rows(records, r1_tok)
    assert (tmp_path / "model" / "model.safetensors").exists() and (tmp_path / "model" / "rearl_run.json").exists()
    assert json.loads((tmp_path / "model" / "rearl_run.json").read_text())["num_processes"] == 2


def check_rows(records: list[dict], tok, steps: int = STEPS) -> None:
    """Every check on the ranks' records (one list of steps per rank)."""
    for r in records:
        assert r["error"] is None and r["global_step"] == steps and len(r["steps"]) == steps
        assert all(s["world"] == 2 for s in r["steps"])  # really 2 processes, not one (the --cpu trap)
    eos = tok.eos_token_id
    scaffolds = [tok(DEFAULT_SCAFFOLD, add_special_tokens=False)["input_ids"],
                 tok(DEFAULT_SCAFFOLD.lstrip("\n"), add_special_tokens=False)["input_ids"]]
    nonzero = 0
    for step in range(steps):
        ranks = [r["steps"][step] for r in records]
        made = []
        for rk, s in enumerate(ranks):
            assert s["rank"] == rk and len(s["completion_ids"]) == PER_RANK
            assert s["is_revision"] == [False, True] * (PER_RANK // 2)
            assert s["pair_id"] == [i // 2 for i in range(PER_RANK)]
            originals = [s["completion_ids"][i] for i in range(0, PER_RANK, 2)]
            n_made = 0
            for i in range(1, PER_RANK, 2):
                orig, rev = s["completion_ids"][i - 1], s["completion_ids"][i]
                assert not s["revision_failed"][i - 1]
                if s["revision_replaced"][i]:  # no revision could be made (the reflection model failed)
                    assert rev == orig and s["revision_failed"][i]
                    continue
                n_made += 1
                k, n_scaf = _scaffold_at(rev, scaffolds)
                # the kept prefix is this row's own original's ids, token for token ...
                assert k > 0 and rev[:k] == orig[:k], f"rank {rk} step {step} row {i}: prefix is not its original's"
                assert sum(o[:k] == orig[:k] for o in originals) == 1  # another original's prefix would show
                # ... and its answer was generated for its own input (prompt + kept prefix + scaffold)
                answer = _answer_for(s["prompt_ids"][i] + rev[:k + n_scaf])
                assert rev[k + n_scaf:] == tok(answer, add_special_tokens=False)["input_ids"] + [eos]
                assert s["revision_failed"][i] == (answer != "\\boxed{42}")  # a wrong revision is dropped
            made.append(n_made)
        # the reflection model failed for rank 1's samples only: uneven revision inputs
        assert ranks[0]["scorer_failures"] == 0
        assert ranks[1]["scorer_failures"] == (PER_RANK // 2 if step == 0 else PER_RANK // 4)
        assert made[1] == PER_RANK // 2 - ranks[1]["scorer_failures"] and made[0] != made[1]
        calls = [s["revision_call"] for s in ranks]
        if step in COLLECTIVE_STEPS:
            # every rank sends as many revision inputs as the busiest one, a rank with none included
            assert all(s["collective"] for s in ranks)
            assert [c["sent"] for c in calls] == [max(made)] * 2 and calls[0]["all_sent"] == calls[1]["all_sent"]
        else:  # in-process generation: each rank generates its own inputs only, nothing padded
            assert [c["sent"] if c else 0 for c in calls] == made

        # group statistics over the right rows: every rank holds whole groups of one problem
        problems = ranks[0]["problems"] + ranks[1]["problems"]
        for g in range(0, len(problems), G2):
            assert len(set(problems[g:g + G2])) == 1
        raw, final = ranks[0]["raw_rewards"], ranks[0]["rewards"]
        assert len(raw) == 2 * PER_RANK
        assert all(_same(a, b) for x, y in zip(raw, ranks[1]["raw_rewards"]) for a, b in zip(x, y))
        assert all(_same(a, b) for x, y in zip(final, ranks[1]["rewards"]) for a, b in zip(x, y))
        dropped = ranks[0]["revision_failed"] + ranks[1]["revision_failed"]  # in rank order, as gathered
        acc = ranks[0]["reward_names"].index("accuracy")
        expected = apply_group_policies(raw, G2, acc, dropped, "zero_advantage")
        assert all(_same(a, b) for x, y in zip(final, expected) for a, b in zip(x, y))
        for row, d in zip(final, dropped):
            if d:
                assert all(math.isnan(v) for v in row)
        weights = ranks[0]["reward_weights"]
        total = [math.nan if all(math.isnan(v) for v in row) else sum(w * v for w, v in zip(weights, row) if not math.isnan(v))
                 for row in final]
        adv = group_advantages(total, G2)
        for rk, s in enumerate(ranks):
            assert s["advantages"] == pytest.approx(adv[rk * PER_RANK:(rk + 1) * PER_RANK], abs=1e-4)
            assert all(a == 0.0 for a, d in zip(s["advantages"], s["revision_failed"]) if d)
        nonzero += sum(a != 0.0 for a in adv)

        # the logged revision counts cover both ranks (TRL logs rank 0's metrics)
        logged = [e for e in records[0]["log_history"] if "revision/failures" in e][step]
        assert logged["revision/failures"] == ranks[0]["scorer_failures"] + ranks[1]["scorer_failures"]
        accepted = sum(not s["revision_failed"][i] for s in ranks for i in range(1, PER_RANK, 2))
        assert logged["revision/accept_rate"] == pytest.approx(accepted / (2 * PER_RANK // 2))
    assert nonzero > 0  # the checks above saw real group statistics, not only zero advantages


@pytest.mark.slow
def test_a_group_split_across_ranks_is_a_clear_error(tiny_model_dir, tmp_path):
    # 2 rows per rank, groups of 4: TRL accepts it (the global batch of 4 is one group), rearl must not
    rc, log, records = _launch(tmp_path, tiny_model_dir, "per_device_train_batch_size=2")
    assert rc != 0
    assert "needs whole groups on every rank" in log and "a group would be split across ranks" in log, log[-4000:]
    assert all(r["steps"] == [] for r in records)  # refused before any step


def test_whole_groups_check_names_the_numbers(tmp_path):
    from rearl.train.config import check_whole_groups, load_config

    _, _, cfg = load_config(None, [f"output_dir={tmp_path}", "use_cpu=true", "bf16=false", "num_generations=4",
                                   "per_device_train_batch_size=4", "reflection_threshold=20"])
    check_whole_groups(cfg, num_processes=2)  # 4 rows per rank: one whole group each
    cfg.per_device_train_batch_size = 2  # what TRL accepts with 2 processes: one group over both ranks
    check_whole_groups(cfg, num_processes=1)
    with pytest.raises(ValueError, match=r"whole groups on every rank: with 2 processes each rank generates 2 rows"):
        check_whole_groups(cfg, num_processes=2)
    cfg.revision, cfg.length_reward = False, "none"  # plain GRPO: TRL gathers the rewards, a split group is fine
    check_whole_groups(cfg, num_processes=2)


def test_cpu_launch_that_starts_one_process_is_detected():
    # what `accelerate launch --cpu --num_processes 2` gives the single process it starts
    trap = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    assert single_process_cpu_launch(trap)
    assert not single_process_cpu_launch(dict(trap, WORLD_SIZE="2", RANK="0"))  # torchrun / multi_cpu.yaml
    assert not single_process_cpu_launch(dict(trap, PMI_SIZE="2"))  # mpirun
    assert not single_process_cpu_launch({"ACCELERATE_USE_CPU": "True"})  # `--cpu`, one process asked
