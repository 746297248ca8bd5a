"""Evaluation suite: generators, scorers, the exact-marginal oracle and its closed forms, the runner."""
import json
import math
import subprocess
import sys

import pytest
import torch

from dllm.errors import DllmError, UnsupportedError
from dllm.evals.closed_form import step_counts, topk_accuracy
from dllm.evals.oracle import oracle_llm
from dllm.evals.runner import Subject, parse_sweep, run_task
from dllm.evals.summary import aup, pareto, summarize
from dllm.evals.tasks import TASKS, get_task, make_examples
from dllm.evals.tasks.waiting_line import list_str, parse_list, strict_ok


# ---- generators ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(TASKS))
def test_generators_are_deterministic_per_seed_and_split(name):
    a, b = make_examples(name, None, 4, seed=3), make_examples(name, None, 4, seed=3)
    assert [(e.prompt, e.reference, e.shot) for e in a] == [(e.prompt, e.reference, e.shot) for e in b]
    other = make_examples(name, None, 4, seed=4)
    train = make_examples(name, None, 4, seed=3, split="train")
    assert [e.prompt for e in a] != [e.prompt for e in other]
    assert [e.prompt for e in a] != [e.prompt for e in train]


@pytest.mark.parametrize("name", list(TASKS))
def test_reference_template_and_answers_are_correct(name):
    task = get_task(name)
    for ex in make_examples(name, None, 5, seed=0):
        assert task.score(ex, ex.reference).correct and task.score(ex, ex.reference).valid
        if ex.template is not None:   # the template with its gaps filled is the reference
            assert "".join(p if isinstance(p, str) else p.text for p in ex.template) == ex.reference
        if task.oracle:
            answers = task.answers(ex)
            assert ex.reference in answers
            assert all(task.score(ex, a).correct for a in answers)


def test_n_out_of_range_and_unknown_task_are_user_errors():
    with pytest.raises(DllmError, match="takes n from"):
        make_examples("copy", 1, 2, 0)
    with pytest.raises(DllmError, match="unknown task"):
        get_task("copyy")


# ---- scorers: ParallelBench's parsing and edge cases ---------------------------------------------
def ex_of(name, n=4):
    return make_examples(name, n, 1, seed=1)[0]


def test_list_parsing_is_lenient_validity_is_strict():
    assert parse_list('Sure! ["A B", "C D"] hope this helps') == ["A B", "C D"]
    assert parse_list('A B, C D') == ["A B", "C D"]
    assert parse_list('[x] then ["A B",  "C D" ,]') == ["A B", "C D"]
    assert strict_ok('["A B", "C D"]') and strict_ok("[]")
    assert not strict_ok('["A B","C D"]') and not strict_ok("[A B, C D]") and not strict_ok('Here: ["A B"]')


def test_copy_and_sort_scoring():
    ex = ex_of("copy")
    x = ex.data["input"]
    t = get_task("copy")
    assert t.score(ex, "The list: " + list_str(x)).correct and not t.score(ex, "The list: " + list_str(x)).valid
    assert not t.score(ex, list_str(x[::-1])).correct and t.score(ex, list_str(x[::-1])).valid
    # sort is by last name: ParallelBench's whole-string sort is wrong whenever the two differ
    for ex in make_examples("sort", 6, 20, seed=0):
        whole = sorted(ex.data["input"])
        assert get_task("sort").score(ex, list_str(whole)).correct == (whole == ex.data["answer"])
    assert any(sorted(e.data["input"]) != e.data["answer"] for e in make_examples("sort", 6, 20, seed=0))


def test_random_operation_scoring():
    ex = ex_of("shuffle")
    x, t = ex.data["input"], get_task("shuffle")
    assert not t.score(ex, list_str(x)).correct                         # identical to the input
    assert t.score(ex, list_str(x[1:] + x[:1])).correct
    assert not t.score(ex, list_str(x[1:] + x[1:2])).correct            # not a permutation
    ex = ex_of("insert_random")
    x, w, t = ex.data["input"], ex.data["word"], get_task("insert_random")
    assert all(t.score(ex, list_str(x[:i] + [w] + x[i:])).correct for i in range(len(x) + 1))
    assert not t.score(ex, list_str(x)).correct and not t.score(ex, list_str([w] + x[1:] + [x[0]])).correct
    ex = ex_of("remove_random")
    x, t = ex.data["input"], get_task("remove_random")
    assert t.score(ex, list_str(x[:2] + x[3:])).correct
    assert not t.score(ex, list_str(x[2:])).correct and not t.score(ex, list_str(x[1:][::-1])).correct
    ex = ex_of("replace_random")
    x, w, t = ex.data["input"], ex.data["word"], get_task("replace_random")
    assert t.score(ex, list_str(x[:-1] + [w])).correct
    assert not t.score(ex, list_str([w, w] + x[2:])).correct and not t.score(ex, list_str(x)).correct


def test_puzzle_scoring():
    ex, t = ex_of("latin_square"), get_task("latin_square")
    a, b, c, d = ex.data["symbols"]
    other = f"{b},{a},{d},{c}\n{a},{b},{c},{d}\n{d},{c},{a},{b}\n{c},{d},{b},{a}"
    assert t.score(ex, other).correct                                   # any Latin square counts
    bad = f"{a},{b},{c},{d}\n{a},{b},{c},{d}\n{c},{d},{a},{b}\n{d},{c},{b},{a}"
    assert t.score(ex, bad) == (False, True) or (not t.score(ex, bad).correct and t.score(ex, bad).valid)
    assert not t.score(ex, f"{a},{b},{c}").valid
    ex, t = ex_of("sudoku"), get_task("sudoku")
    assert t.score(ex, ex.reference.replace("\n", "\n ")).correct
    wrong = "".join("1" if ch == "2" else "2" if ch == "1" else ch for ch in ex.reference)
    assert not t.score(ex, wrong).correct and t.score(ex, wrong).valid


def test_text_task_scoring():
    ex, t = ex_of("json_fill"), get_task("json_fill")
    wrong = json.dumps(dict(ex.data, age=ex.data["age"] % 90 + 1 if ex.data["age"] < 90 else 18))
    assert (t.score(ex, wrong).correct, t.score(ex, wrong).valid) == (False, True)
    assert t.score(ex, "{bad json") == (False, False) or not t.score(ex, "{bad json").valid
    assert not t.score(ex, json.dumps(dict(ex.data, extra=1))).valid
    ex, t = make_examples("date", None, 1, 0)[0], get_task("date")
    y = ex.data["year"]
    assert not t.score(ex, f"{y}-02-30").correct and t.score(ex, f"{y}-02-30").valid
    assert t.score(ex, f"{y}-02-29").correct == (y % 4 == 0)
    assert not t.score(ex, f"{y + 1}-01-01").correct and not t.score(ex, f"{y}-1-01").valid
    ex, t = ex_of("number"), get_task("number")
    m = ex.data["multiple"]
    assert t.score(ex, str(m * (9999 // m))).correct and not t.score(ex, str(m * (9999 // m) - 1)).correct
    assert not t.score(ex, "0" + str(m * 11)).valid
    ex, t = ex_of("words_to_sentence"), get_task("words_to_sentence")
    assert t.score(ex, "I saw " + " and ".join(ex.data["words"]) + ".").correct
    assert not t.score(ex, "Nothing here.").correct and not t.score(ex, "  ").valid


# ---- the oracle ------------------------------------------------------------------------------------
def test_oracle_marginals_are_exact():
    """replace_random, n = 3: with no slot revealed p(new) = 1/3 everywhere; once slot 0 is revealed
    as its input item, the new name is in slot 1 or 2 with 1/2 each."""
    task = get_task("replace_random")
    ex = make_examples(task, 3, 1, 0)[0]
    llm, N = oracle_llm(task, [ex], noise=0.0)
    tok, model = llm.tokenizer, llm.model
    prompt = tok.encode(ex.prompt, add_special_tokens=False)
    answer = tok.encode(ex.reference, add_special_tokens=False)
    item = [i for i, t in enumerate(answer) if tok.decode([t]) in ex.data["input"] + [ex.data["word"]]]
    assert len(item) == 3 and N == len(answer)
    x = torch.tensor([prompt + [t if i not in item else model.mask_id for i, t in enumerate(answer)]])
    w, inputs = tok.token_to_id(ex.data["word"]), [tok.token_to_id(s) for s in ex.data["input"]]
    p = model.marginals(x, None)[0]
    for j, i in enumerate(item):
        assert p[i, w].item() == pytest.approx(1 / 3) and p[i, inputs[j]].item() == pytest.approx(2 / 3)
    x[0, len(prompt) + item[0]] = inputs[0]
    p = model.marginals(x, None)[0]
    assert p[item[1], w].item() == pytest.approx(1 / 2) and p[item[2], w].item() == pytest.approx(1 / 2)
    assert p[item[0], inputs[0]].item() == pytest.approx(1.0)
    logits = model(x, None, None, slice(0, x.shape[1]))
    assert logits.shape == (1, x.shape[1], tok.vocab_size)


def oracle_rows(task, schedulers, grid, samples, **kw):
    return run_task(Subject("oracle", oracle=True, oracle_kw=kw), task, 6, schedulers, grid, samples=samples, seed=0)


def within(acc, p, m):
    return abs(acc - p) <= 4 * math.sqrt(max(p * (1 - p), 0.01) / m) + 1e-9


def test_closed_forms_copy_and_replace_random():
    rows = oracle_rows("copy", ["topk"], [{"tokens_per_step": k} for k in (1, 2, 3, 6)], 24)
    assert [r["accuracy"] for r in rows] == [1.0] * 4
    assert [r["tokens_per_forward"] for r in rows] == [1.0, 2.0, 3.0, 6.0]
    rows = oracle_rows("replace_random", ["topk"], [{"tokens_per_step": 2}, {"tokens_per_step": 3}], 160)
    assert within(rows[0]["accuracy"], 0.5, 160) and rows[1]["accuracy"] == 0.0
    assert rows[0]["validity"] == 1.0 and rows[0]["nfe"] == 3.0


def test_closed_form_shuffle_topk_and_threshold():
    m = 160
    rows = oracle_rows("shuffle", ["topk"], [{"tokens_per_step": 2}], m, plain_shuffle=True)
    assert within(rows[0]["accuracy"], 15 / 48, m)                    # (n-1)!!/n!! for n = 6
    # one slot per forward from the exact marginals: always a permutation of the input, wrong only when it
    # is the input itself (1 of the 720 permutations the plain-shuffle oracle draws from)
    rows = oracle_rows("shuffle", ["threshold"], [{"threshold": 0.9}], 64, plain_shuffle=True)
    assert rows[0]["validity"] == 1.0 and within(rows[0]["accuracy"], 719 / 720, 64)
    assert rows[0]["tokens_per_forward"] == 1.0


def test_closed_form_formulas():
    assert step_counts(6, 4) == [3, 3] and step_counts(7, 3) == [3, 2, 2]
    assert topk_accuracy("replace_random", 6, 2) == 0.5 and topk_accuracy("replace_random", 6, 3) == 0.0
    assert topk_accuracy("replace_random", 7, 3) == 0.5 and topk_accuracy("replace_random", 6, 5) == 0.0
    assert topk_accuracy("replace_random", 5, 4) == 0.5 and topk_accuracy("replace_random", 3, 2) == 1.0
    assert topk_accuracy("shuffle", 6, 2) == pytest.approx(15 / 48)
    assert topk_accuracy("shuffle", 4, 2) == pytest.approx(3 / 8)
    assert topk_accuracy("copy", 6, 6) == 1.0 and topk_accuracy("insert_random", 6, 2) is None


def test_oracle_rejects_cache_and_unenumerable_tasks():
    with pytest.raises(UnsupportedError, match="cache"):
        run_task(Subject("oracle", oracle=True), "copy", 3, ["topk"], [{}], samples=2, base={"cache": "dual"})
    with pytest.raises(DllmError, match="no oracle"):
        run_task(Subject("oracle", oracle=True), "words_to_sentence", 3, ["topk"], [{}], samples=2)


@pytest.mark.parametrize("name", ["latin_square", "date", "json_fill", "insert_random"])
def test_oracle_free_and_infill_modes_decode_valid_answers(name):
    """One token per forward from the exact marginals is always correct, with or without a template."""
    for mode in ("free", "infill"):
        rows = run_task(Subject("oracle", oracle=True), name, None, ["topk"], [{}], samples=6, mode=mode)
        assert rows[0]["accuracy"] == 1.0, (name, mode)


# ---- summaries, sweeps, CLI ------------------------------------------------------------------------
def test_aup_pareto_and_max_tpf():
    # y_max = 100: 1*100 + 0.5*(2-1)*(100*W(100) + 96*W(96)), W(100) = 1, W(96) = exp(-3*0.04)
    assert aup([(1, 100), (2, 96)], 100) == pytest.approx(100 + 0.5 * (100 + 96 * math.exp(-3 * 0.04)))
    assert aup([(1, 100), (2, 96), (3, 90)], 100) == aup([(1, 100), (2, 96)], 100)   # y < y_1 - 5 dropped
    assert pareto([(1, 1.0), (2, 0.5), (1.5, 0.4), (3, 0.5)]) == [(1, 1.0), (3, 0.5)]
    rows = [{"task": "t", "scheduler": "s", "accuracy": a, "tokens_per_forward": r} for r, a in [(1, .9), (2, .77), (3, .4)]]
    s = summarize(rows)[0]
    assert (s["max_tpf@80"], s["max_tpf@75"], s["max_tpf@70"]) == (1, 2, 2)


def test_parse_sweep():
    assert parse_sweep(["threshold=0.5,0.9", "cache=none,dual"]) == [
        {"threshold": 0.5, "cache": "none"}, {"threshold": 0.5, "cache": "dual"},
        {"threshold": 0.9, "cache": "none"}, {"threshold": 0.9, "cache": "dual"}]
    assert parse_sweep([]) == [{}]
    for bad in ("threshold", "nosuch=1", "=1"):
        with pytest.raises(DllmError):
            parse_sweep([bad])


def run_cli(*argv):
    return subprocess.run([sys.executable, "-m", "dllm.cli", *argv], capture_output=True, text=True, timeout=300)


def test_cli_sweep_writes_rows_and_plot(tmp_path):
    out, png = tmp_path / "rows.jsonl", tmp_path / "plot.png"
    r = run_cli("eval", "--model", "oracle", "--task", "replace_random,copy", "--scheduler", "topk,threshold",
                "--sweep", "tokens_per_step=1,2", "--samples", "8", "--output", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8
    need = {"task", "scheduler", "settings", "samples", "accuracy", "validity", "nfe", "tokens_per_forward",
            "wall_s", "tokens_per_s", "speedup"}
    assert all(need <= set(row) for row in rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUP" in r.stderr and "replace_random" in r.stderr


def test_cli_errors_exit_2():
    r = run_cli("eval", "--model", "oracle", "--task", "nosuch")
    assert r.returncode == 2 and r.stderr.startswith("error: unknown task")
    r = run_cli("eval", "--model", "oracle", "--task", "copy", "--sweep", "threshold")
    assert r.returncode == 2 and "name=v1,v2" in r.stderr


def test_runner_drives_a_real_checkpoint(llada_dir):
    """A real (random-weight) LLaDA checkpoint through the same runner: free mode with the chat-less
    prompt, infill with gaps sized by the tokenizer, and the task's constraint."""
    from dllm import LLM

    llm = LLM(str(llada_dir))
    subject = Subject("tiny", llm)
    rows = run_task(subject, "copy", 3, ["topk", "threshold"], [{}], samples=3, base={"block_length": 8})
    assert [r["scheduler"] for r in rows] == ["topk", "threshold"] and all(r["nfe"] > 0 for r in rows)
    seen = []
    llm_generate = llm.generate

    def spy(reqs, params, **kw):   # the runner's call (the engine's inner per-params calls pass keywords)
        outs = llm_generate(reqs, params, **kw)
        seen.extend([] if kw else [o.text for o in outs])
        return outs
    llm.generate = spy
    rows = run_task(subject, "date", None, ["topk"], [{}], samples=3, mode="infill")
    del llm.generate
    years = [e.data["year"] for e in make_examples("date", None, 3, 0)]
    assert rows[0]["nfe"] > 0 and all(t.startswith(f"{y}-") for t, y in zip(seen, years))   # fixed text kept
    rows = run_task(subject, "copy", 3, ["topk"], [{}], samples=2, shots=0, base={"max_new_tokens": 8})
    assert rows[0]["shots"] == 0 and rows[0]["nfe"] == 8
    rows = run_task(subject, "number", None, ["topk"], [{}], samples=3, constrain=True)
    assert rows[0]["validity"] == 1.0    # the regex constraint forces four digits
