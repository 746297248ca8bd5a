"""Hostile inputs for tests/test_hostile.py (helpers, not tests): variants of a tiny checkpoint
(config.json fields, index files, dtypes, chat templates, learned-filter metadata), GGUF files
written byte by byte (so that any metadata value or tensor table can be forged), and the runner
that puts one CLI invocation through a subprocess with a time cap."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CAP_S = 120          # a hang guard for one CLI run, not a timing assertion


def run_cli(*args, stdin: bytes = b"", env: dict | None = None) -> tuple[int, str, str]:
    """`python -m dllm.cli ARGS` -> (exit status, stdout, stderr); a run past CAP_S is status -9."""
    full = dict(os.environ, PYTHONIOENCODING="utf-8", NO_COLOR="1", **(env or {}))
    argv = [sys.executable, "-m", "dllm.cli", *(a if isinstance(a, bytes) else str(a) for a in args)]
    try:
        p = subprocess.run(argv, input=stdin, capture_output=True, env=full, timeout=CAP_S)
    except subprocess.TimeoutExpired:
        return -9, "", f"timed out after {CAP_S}s"
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def one_sentence(rc: int, out: str, err: str) -> str | None:
    """None when the run ended as a refusal should (exit 2, at most 3 lines on stderr starting with
    "error:", no traceback, nothing on stdout); else what went wrong."""
    lines = err.splitlines()
    if rc != 2:
        return f"exit {rc}: {err[-600:]}"
    if out:
        return f"stdout not empty: {out[:200]!r}"
    if "Traceback" in err or not lines or len(lines) > 3 or not lines[0].startswith("error: "):
        return f"stderr is not one error sentence: {err[-600:]!r}"
    return None


def answered(rc: int, out: str, err: str) -> str | None:
    """None when the run produced an answer (exit 0, something on stdout, no traceback)."""
    if rc != 0 or not out.strip() or "Traceback" in err:
        return f"exit {rc}, stdout {out[:100]!r}: {err[-600:]}"
    return None


# ---- checkpoint variants --------------------------------------------------------------------------

def variant(base: Path, dest: Path, config: dict | None = None, drop: tuple = (), files: dict | None = None) -> Path:
    """A copy of checkpoint `base` at dest with config.json fields replaced (config) or removed
    (drop), and files written as given ({name: bytes | str | dict (JSON)})."""
    shutil.copytree(base, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(config or {})
    for k in drop:
        cfg.pop(k, None)
    (dest / "config.json").write_text(json.dumps(cfg))
    for name, content in (files or {}).items():
        data = json.dumps(content) if isinstance(content, (dict, list)) else content
        (dest / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return dest


def single_shard(base: Path, dest: Path, edit=None) -> Path:
    """A copy of base with its shards merged into one model.safetensors (index removed); edit(sd)
    may change the tensors first."""
    shutil.copytree(base, dest)
    sd = {}
    for f in sorted(dest.glob("*.safetensors")):
        sd.update(load_file(f))
        f.unlink()
    (dest / "model.safetensors.index.json").unlink(missing_ok=True)
    if edit is not None:
        edit(sd)
    save_file(sd, str(dest / "model.safetensors"))
    return dest


def with_index(base: Path, dest: Path, weight_map) -> Path:
    """A copy of base whose model.safetensors.index.json holds `weight_map` as given."""
    shutil.copytree(base, dest)
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return dest


def nan_weights(base: Path, dest: Path) -> Path:
    def edit(sd):
        sd["model.transformer.ln_f.weight"][:] = float("nan")
    return single_shard(base, dest, edit)


def filter_file(path: Path, meta: dict, block: int = 4, hidden: int = 8) -> Path:
    """A learned-filter safetensors file with forged metadata (tensors of a block/hidden filter)."""
    from dllm.schedulers.learned_filter import FORMAT, FilterMLP

    sd = {k: v.contiguous() for k, v in FilterMLP(block, hidden).state_dict().items()}
    save_file(sd, str(path), metadata={"dllm": json.dumps({"format": FORMAT, **meta})})
    return path


# ---- GGUF, byte by byte ---------------------------------------------------------------------------

_TYPES = {"u32": (4, "<I"), "i32": (5, "<i"), "f32": (6, "<f"), "bool": (7, "<?"), "str": (8, None), "u64": (10, "<Q")}


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def raw_gguf(path: Path, meta: list, tensors: list, data: bytes = b"", *, n_tensors=None) -> Path:
    """A GGUF v3 file: meta = [(key, type name, value)], tensors = [(name, dims, ggml type, offset)];
    n_tensors forges the count in the header."""
    out = bytearray(b"GGUF" + struct.pack("<I", 3))
    out += struct.pack("<QQ", len(tensors) if n_tensors is None else n_tensors, len(meta))
    for key, kind, value in meta:
        code, fmt = _TYPES[kind]
        out += _string(key) + struct.pack("<I", code)
        out += _string(value) if kind == "str" else struct.pack(fmt, value)
    for name, dims, gtype, offset in tensors:
        out += _string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", gtype, offset)
    out += b"\0" * (-len(out) % 32) + data
    path.write_bytes(bytes(out))
    return path


def llama_meta(**over) -> list:
    """Plain llama metadata of a 1-block, 8-wide model; over replaces values ((type, value) tuples)."""
    base = {"general.architecture": ("str", "llama"), "llama.embedding_length": ("u32", 8),
            "llama.attention.head_count": ("u32", 2), "llama.block_count": ("u32", 1),
            "llama.feed_forward_length": ("u32", 16), "llama.context_length": ("u32", 64)}
    base.update(over)
    return [(k, t, v) for k, (t, v) in base.items()]


def tiny_gguf_tensors(vocab: int = 16) -> tuple[list, bytes]:
    """F32 tensors of the llama model of llama_meta(), laid out back to back (32-byte aligned)."""
    shapes = {"token_embd.weight": (8, vocab), "output_norm.weight": (8,), "blk.0.attn_norm.weight": (8,),
              "blk.0.ffn_norm.weight": (8,), "blk.0.attn_q.weight": (8, 8), "blk.0.attn_k.weight": (8, 8),
              "blk.0.attn_v.weight": (8, 8), "blk.0.attn_output.weight": (8, 8), "blk.0.ffn_gate.weight": (8, 16),
              "blk.0.ffn_up.weight": (8, 16), "blk.0.ffn_down.weight": (16, 8)}
    tensors, data = [], bytearray()
    for name, dims in shapes.items():
        tensors.append((name, dims, 0, len(data)))
        data += torch.full((int(torch.tensor(dims).prod()),), 0.01).numpy().tobytes()
        data += b"\0" * (-len(data) % 32)
    return tensors, bytes(data)
