"""JSON Schema coverage on real schemas: the 27 that check-jsonschema vendors (CI configs and friends).

    pip install check-jsonschema llguidance xgrammar      # benchmark-only dependencies
    python -m benchmarks.json_schema [--out json_schema.json] [--generate] [--max-new-tokens 160]

(run from the repository root as a module: no sys.path edits.) Per schema: compiled or refused (the
sentence), relaxed keywords (json_schema_strict=False) and whether strict mode accepts it, the route
(regex = token DFA, grammar = Earley check), the cold compile time of compile_json_schema against
dllm-tiny's vocabulary (caches cleared, no disk cache), and with --generate one constrained answer
from dllm-tiny at temperature 0 and 1 checked with jsonschema. Side by side: whether llguidance
(default options, no warnings allowed: its errors include unimplemented keywords) and xgrammar
(Grammar.from_json_schema) accept the same schema. Writes JSON and prints a table.
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


def one(name, schema, llm, args) -> dict:
    from dllm import SamplingParams
    from dllm.constraints.json_schema import choose_route, compile_json_schema, plan_schema, plan as plan_mod
    from dllm.constraints.regex import clear_memory_cache

    row = {"schema": name}
    plan_mod._cached.cache_clear()
    clear_memory_cache(vocabularies=False)
    t0 = time.perf_counter()
    try:
        plan = plan_schema(schema)
        route, _ = choose_route(plan, grammar_ok=True)
        compile_json_schema(schema, llm.tokenizer, llm.args.vocab_size, cache_dir=False)
        row.update(compiled=True, route=route, compile_s=time.perf_counter() - t0, relaxed=len(plan.relaxed),
                   relaxed_keywords=sorted({r.split("'")[1] for r in plan.relaxed}))
    except Exception as e:  # noqa: BLE001 - the refusal sentence is the result
        row.update(compiled=False, compile_s=time.perf_counter() - t0, refused=str(e)[:160])
        return row | others(schema)
    try:
        plan_schema(schema, strict=True)
        row["strict"] = "ok"
    except Exception as e:  # noqa: BLE001
        row["strict"] = "refused"
    if args.generate:
        for temp in (0.0, 1.0):
            t = time.perf_counter()
            try:
                out = llm.generate("Write a valid configuration as JSON:", SamplingParams(
                    max_new_tokens=args.max_new_tokens, json_schema=schema, temperature=temp, seed=0,
                    threshold=0.9, scheduler="threshold"))[0]
                row[f"valid_t{int(temp)}"] = not out.stats.schema_violations
                row[f"violations_t{int(temp)}"] = out.stats.schema_violations[:3]
            except Exception as e:  # noqa: BLE001
                row[f"valid_t{int(temp)}"] = f"error: {str(e)[:80]}"
            row[f"gen_s_t{int(temp)}"] = time.perf_counter() - t
    return row | others(schema)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="json_schema.json")
    ap.add_argument("--generate", action="store_true", help="also decode one answer per schema at T = 0 and 1")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--only", default="", help="comma-separated schema names")
    args = ap.parse_args()
    from dllm import LLM
    from dllm.default_model import DEFAULT_MODEL
    llm = LLM(str(DEFAULT_MODEL))
    rows = []
    for name, schema in corpus().items():
        if args.only and name not in args.only.split(","):
            continue
        rows.append(one(name, schema, llm, args))
        print(json.dumps(rows[-1])[:300], flush=True)
    ok = [r for r in rows if r["compiled"]]
    times = sorted(r["compile_s"] for r in ok)
    summary = {"schemas": len(rows), "compiled": len(ok), "strict_ok": sum(r.get("strict") == "ok" for r in ok),
               "llguidance_ok": sum(r["llguidance"] == "ok" for r in rows),
               "xgrammar_ok": sum(r["xgrammar"] == "ok" for r in rows),
               "compile_s_median": statistics.median(times) if times else None,
               "compile_s_p95": times[min(len(times) - 1, int(0.95 * len(times)))] if times else None,
               "compile_s_max": times[-1] if times else None}
    print(json.dumps(summary))
    write(args.out, {"summary": summary, "generate": args.generate, "max_new_tokens": args.max_new_tokens}, rows,
          ["schema", "compiled", "route", "compile_s", "relaxed", "strict", "valid_t0", "valid_t1", "llguidance",
           "xgrammar", "refused"])


if __name__ == "__main__":
    main()
