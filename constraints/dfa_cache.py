"""The on-disk cache of compiled token DFAs ($DLLM_CACHE, else ~/.cache/dllm/constraints): one .npz
per (pattern, vocabulary), no pickle.

A cache directory is not trusted more than any other input. Each file carries its full key (format
version, tokenizer fingerprint, vocabulary size, pattern) and a load compares it, so a renamed or
swapped file is never used for another pattern. Before anything is decompressed, each member's .npy
header is read and its dtype and shape checked against what the key and the other arrays allow (so a
small file cannot inflate to gigabytes), and every table is range-checked after: class ids in range,
transitions in [-1, n_states), `dist` equal to the fewest tokens to acceptance that `trans` implies.
Files are opened without following symlinks and written through mkstemp (O_EXCL, mode 0600) and an
atomic rename. An entry that fails any check is ignored; the caller compiles again and overwrites it.
"""
from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2          # bump when the cached layout or the compile semantics change
FIELDS = ("key", "n_states", "start", "token_class", "trans", "accept", "dist")
MAX_FILE_BYTES = 1 << 30    # a cached file larger than this is ignored without being read


def default_cache_dir() -> Path:
    env = os.environ.get("DLLM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dllm" / "constraints"


def full_key(pattern: str, fingerprint: str, vocab_size: int) -> bytes:
    """Everything a cached DFA depends on, as bytes (stored in the file and compared on load)."""
    return (f"dllm-token-dfa|v{FORMAT_VERSION}|{fingerprint}|{vocab_size}|".encode()
            + pattern.encode("utf-8", "surrogatepass"))


def disk_path(cache_dir, key: bytes) -> Path | None:
    """Where the DFA of `key` lives (None: cache_dir is False, no disk cache)."""
    if cache_dir is False:
        return None
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return root / f"regex-{hashlib.sha256(key).hexdigest()[:40]}.npz"


# ---- load ----------------------------------------------------------------------------------------

def _header(zf: zipfile.ZipFile, name: str):
    """(dtype, shape, data offset) of member name.npy, read from its .npy header alone."""
    info = zf.getinfo(name + ".npy")
    with zf.open(info) as f:
        version = np.lib.format.read_magic(f)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, fortran, dtype = reader[version](f)
        offset = f.tell()
    if fortran or dtype.hasobject:
        raise ValueError(name)
    return dtype, shape, offset, info.file_size


def _array(zf: zipfile.ZipFile, name: str, kinds: str, shape: tuple, max_items: int) -> np.ndarray:
    """Member `name` after checking, before decompressing it, that its dtype kind is in `kinds`, its
    shape is `shape` (None entries: any size) and that it holds at most max_items items."""
    dtype, got, offset, size = _header(zf, name)
    if dtype.kind not in kinds or len(got) != len(shape) or any(w is not None and w != g for w, g in zip(shape, got)):
        raise ValueError(name)
    items = int(np.prod(got, dtype=np.int64)) if got else 1
    if items > max_items or size != offset + items * dtype.itemsize:     # no hidden payload either
        raise ValueError(name)
    with zf.open(name + ".npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _read(fh, key: bytes, vocab_size: int, max_states: int, max_cells: int) -> dict:
    with zipfile.ZipFile(fh) as zf:
        if sorted(zf.namelist()) != sorted(f + ".npy" for f in FIELDS):
            raise ValueError("members")
        stored = _array(zf, "key", "u", (None,), len(key))
        if stored.tobytes() != key:
            raise ValueError("key")
        n = int(_array(zf, "n_states", "iu", (), 1))
        start = int(_array(zf, "start", "iu", (), 1))
        if not (0 < n <= max_states and 0 <= start < n):
            raise ValueError("n_states")
        token_class = _array(zf, "token_class", "iu", (vocab_size,), vocab_size).astype(np.int64)
        dtype, shape, _, _ = _header(zf, "trans")
        n_classes = shape[1] if len(shape) == 2 else 0
        if not (0 < n_classes <= vocab_size + 1 and n * n_classes <= max_cells):
            raise ValueError("trans")
        trans = _array(zf, "trans", "iu", (n, n_classes), n * n_classes).astype(np.int64)
        accept = _array(zf, "accept", "b", (n,), n)
        dist = _array(zf, "dist", "iu", (n,), n).astype(np.int64)
    return {"n_states": np.int64(n), "start": np.int64(start), "token_class": token_class, "trans": trans,
            "accept": accept, "dist": dist}


def _consistent(a: dict) -> bool:
    """Range checks, and dist = the fewest tokens to acceptance under trans (what DINGO relies on)."""
    n, trans, dist, accept, cls = int(a["n_states"]), a["trans"], a["dist"], a["accept"], a["token_class"]
    C = trans.shape[1]
    if cls.min(initial=0) < 0 or cls.max(initial=0) >= C or (trans[:, 0] != -1).any():
        return False                               # class 0 is the dead class
    if trans.min(initial=-1) < -1 or trans.max(initial=-1) >= n:
        return False
    if dist.min(initial=0) < 0 or not np.array_equal(dist == 0, accept):
        return False
    nxt = np.where(trans >= 0, dist[np.maximum(trans, 0)], np.iinfo(np.int64).max)   # [n, C]
    best = nxt.min(axis=1)
    return bool(np.all(accept | (best + 1 == dist)))   # every state live, each dist one more than its best move


def load(path: Path | None, key: bytes, vocab_size: int, max_states: int, max_cells: int) -> dict | None:
    """The cached arrays of `key`, or None when there is no usable entry (missing, foreign, corrupt,
    oversized or inconsistent): the caller compiles again."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None
        with os.fdopen(fd, "rb") as fh:
            fd = None
            arrays = _read(fh, key, vocab_size, max_states, max_cells)
        return arrays if _consistent(arrays) else None
    except Exception:  # noqa: BLE001 - zip, npy and numpy errors of a corrupt entry: ignore it, compile again
        return None
    finally:
        if fd is not None:
            os.close(fd)


# ---- save ----------------------------------------------------------------------------------------

def save(path: Path | None, key: bytes, arrays: dict) -> None:
    """Write the entry atomically: a fresh mkstemp file in the cache directory, renamed over path."""
    if path is None:
        return
    small = {f: arrays[f] for f in FIELDS if f != "key"}
    small["token_class"] = arrays["token_class"].astype(np.int32)
    small["trans"] = arrays["trans"].astype(np.int32)
    small["key"] = np.frombuffer(key, dtype=np.uint8)
    tmp = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".regex-", suffix=".tmp", dir=path.parent)   # O_EXCL, 0600
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **small)
        os.replace(tmp, path)                    # atomic; replaces a planted symlink, never follows it
        tmp = None
    except OSError:                              # a read-only or full disk only costs the cache
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
