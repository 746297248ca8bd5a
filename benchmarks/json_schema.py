"""JSON Schema coverage on real schemas: the 27 that check-jsonschema vendors (CI configs and friends).

    pip install check-jsonschema llguidance xgrammar      # benchmark-only dependencies
    OMP_NUM_THREADS=1 python -m benchmarks.json_schema [--out json_schema.json] [--generate] [--step-cost]

(run from the repository root as a module: no sys.path edits; torch runs on one thread.) Per schema:
compiled or refused (the sentence), relaxed keywords (json_schema_strict=False) and whether strict
mode accepts it, the route the engine gets (regex = token DFA, grammar = Earley check), the cold
compile time of compile_json_schema against dllm-tiny's vocabulary (plan, DFA and terminal caches
cleared, no disk cache) and the warm one (the same call again: the in-process caches answer).
--generate: one constrained answer from dllm-tiny at temperature 0 and 1 (threshold scheduler), each
checked here with jsonschema (formats asserted where jsonschema has a checker). --step-cost: the same
request (default scheduler, a fixed max_new_tokens / 4 steps, temperature 0) with and without the
constraint through LLMEngine.step, every step timed; the median constrained step over the median
unconstrained one. Side by side: whether llguidance (default options, no warnings allowed: its errors
include unimplemented keywords) and xgrammar (Grammar.from_json_schema) accept the same schema.
Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

from benchmarks.common import write


def corpus() -> dict:
    import check_jsonschema
    d = os.path.join(os.path.dirname(check_jsonschema.__file__), "builtin_schemas")
    files = sorted(glob.glob(d + "/vendor/*.json")) + sorted(glob.glob(d + "/custom/*.json"))
    return {os.path.basename(f)[:-5]: json.load(open(f)) for f in files}


def others(schema) -> dict:
    out = {}
    text = json.dumps(schema)
    try:
        import llguidance
        err, msgs = llguidance.LLMatcher.validate_grammar_with_warnings(
            llguidance.LLMatcher.grammar_from_json_schema(text))
        out["llguidance"] = "ok" if not err else msgs[0][:80]
    except ImportError:
        out["llguidance"] = "not installed"
    except Exception as e:  # noqa: BLE001
        out["llguidance"] = str(e)[:80]
    try:
        import xgrammar
        xgrammar.Grammar.from_json_schema(text)
        out["xgrammar"] = "ok"
    except ImportError:
        out["xgrammar"] = "not installed"
    except Exception as e:  # noqa: BLE001
        out["xgrammar"] = " ".join(str(e).split())[-80:]
    return out


PROMPT = "Write a valid configuration as JSON:"


def _params(args, schema, temperature: float):
    from dllm import SamplingParams

    return SamplingParams(max_new_tokens=args.max_new_tokens, json_schema=schema, temperature=temperature, seed=0,
                          threshold=0.9, scheduler="threshold")


def check(schema, text) -> str | None:
    """None when text is a JSON value valid under schema (jsonschema, formats asserted where it has a
    checker), else the first reason."""
    import jsonschema

    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError) as e:
        return f"not JSON: {e}"
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    err = next(iter(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value)), None)
    return None if err is None else f"{err.message[:100]} (keyword '{err.validator}')"


def step_times(llm, params) -> list:
    """Seconds of each LLMEngine.step of one request (the constraint is compiled when it is added)."""
    eng = llm.engine
    rid = f"bench-{time.perf_counter_ns()}"
    eng.add_request(rid, PROMPT, params)
    times = []
    while eng.has_unfinished_requests():
        t = time.perf_counter()
        eng.step()
        times.append(time.perf_counter() - t)
    return times


def compile_row(name, schema, llm, slots: int) -> dict:
    from dllm.constraints.cfg_rows import GrammarConstraint
    from dllm.constraints.json_schema import compile_json_schema, plan_schema, plan as plan_mod
    from dllm.constraints.json_schema.grammar import clear_terminal_cache
    from dllm.constraints.regex import clear_memory_cache

    row = {"schema": name}
    plan_mod._cached.cache_clear()
    clear_memory_cache(vocabularies=False)
    clear_terminal_cache()
    t0 = time.perf_counter()
    try:
        plan = plan_schema(schema)
        obj = compile_json_schema(schema, llm.tokenizer, llm.args.vocab_size, cache_dir=False, slots=slots)
        route = "grammar" if isinstance(obj, GrammarConstraint) else "regex"     # as the engine compiles it
        row.update(compiled=True, route=route, compile_s=time.perf_counter() - t0, relaxed=len(plan.relaxed),
                   relaxed_keywords=sorted({r.split("'")[1] for r in plan.relaxed}))
    except Exception as e:  # noqa: BLE001 - the refusal sentence is the result
        row.update(compiled=False, compile_s=time.perf_counter() - t0, refused=str(e)[:160])
        return row
    t1 = time.perf_counter()
    compile_json_schema(schema, llm.tokenizer, llm.args.vocab_size, cache_dir=False, slots=slots)
    row["warm_s"] = time.perf_counter() - t1
    try:
        plan_schema(schema, strict=True)
        row["strict"] = "ok"
    except Exception:  # noqa: BLE001
        row["strict"] = "refused"
    return row


def one(name, schema, llm, args) -> dict:
    row = compile_row(name, schema, llm, args.max_new_tokens)
    if not row["compiled"]:
        return row | others(schema)
    if args.generate:
        for temp in (0.0, 1.0):
            t = time.perf_counter()
            try:
                out = llm.generate(PROMPT, _params(args, schema, temp))[0]
                bad = check(schema, out.text)
                row[f"valid_t{int(temp)}"] = bad is None
                row[f"why_t{int(temp)}"] = bad
                row[f"finish_t{int(temp)}"] = out.finish_reason
                row[f"engine_violations_t{int(temp)}"] = len(out.stats.schema_violations)
            except Exception as e:  # noqa: BLE001
                row[f"valid_t{int(temp)}"] = f"error: {str(e)[:80]}"
            row[f"gen_s_t{int(temp)}"] = time.perf_counter() - t
    if args.step_cost:                                  # a fixed schedule: both runs take the same steps
        from dllm import SamplingParams

        fixed = dict(max_new_tokens=args.max_new_tokens, steps=args.max_new_tokens // 4, temperature=0.0, seed=0)
        free = step_times(llm, SamplingParams(**fixed))
        con = step_times(llm, SamplingParams(json_schema=schema, **fixed))
        row.update(step_ms_free=1e3 * statistics.median(free), step_ms_constrained=1e3 * statistics.median(con),
                   steps_free=len(free), steps_constrained=len(con))
        row["step_ratio"] = row["step_ms_constrained"] / row["step_ms_free"]
    return row | others(schema)


def summarise(rows) -> dict:
    ok = [r for r in rows if r["compiled"]]

    def dist(key):
        v = sorted(r[key] for r in ok if isinstance(r.get(key), float))
        return {"median": statistics.median(v), "p95": v[min(len(v) - 1, int(0.95 * len(v)))], "max": v[-1]} \
            if v else None

    out = {"schemas": len(rows), "compiled": len(ok), "strict_ok": sum(r.get("strict") == "ok" for r in ok),
           "llguidance_ok": sum(r["llguidance"] == "ok" for r in rows),
           "xgrammar_ok": sum(r["xgrammar"] == "ok" for r in rows),
           "compile_s_cold": dist("compile_s"), "compile_s_warm": dist("warm_s")}
    for t in ("t0", "t1"):
        gen = [r for r in ok if f"valid_{t}" in r]
        if gen:
            out[f"invalid_{t}_strict"] = sum(r[f"valid_{t}"] is not True for r in gen if r.get("strict") == "ok")
            out[f"invalid_{t}_relaxed"] = sum(r[f"valid_{t}"] is not True for r in gen if r.get("strict") != "ok")
    if any("step_ratio" in r for r in ok):
        out["step_ratio"] = dist("step_ratio")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="json_schema.json")
    ap.add_argument("--generate", action="store_true", help="also decode one answer per schema at T = 0 and 1")
    ap.add_argument("--step-cost", action="store_true", help="also time steps with and without the constraint")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--only", default="", help="comma-separated schema names")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from dllm import LLM
    from dllm.default_model import DEFAULT_MODEL
    llm = LLM(str(DEFAULT_MODEL))
    if args.step_cost:
        step_times(llm, _params(args, None, 0.0))      # warm up (first-call allocations)
    rows = []
    for name, schema in corpus().items():
        if args.only and name not in args.only.split(","):
            continue
        rows.append(one(name, schema, llm, args))
        print(json.dumps(rows[-1])[:300], flush=True)
    summary = summarise(rows)
    print(json.dumps(summary))
    write(args.out, {"summary": summary, "generate": args.generate, "step_cost": args.step_cost,
                     "max_new_tokens": args.max_new_tokens, "load_average": os.getloadavg()}, rows,
          ["schema", "compiled", "route", "compile_s", "warm_s", "relaxed", "strict", "valid_t0", "valid_t1",
           "step_ratio", "llguidance", "xgrammar", "refused"])


if __name__ == "__main__":
    main()
