"""Limits on what a user or a checkpoint can make dllm allocate or read.

  * memory: a model's weights and a request's canvas / KV cache are checked against the memory
    available on the device BEFORE they are allocated (`require_memory`), so an absurd config or
    `max_new_tokens` ends in one sentence saying how much it would need, not in an allocation
    traceback or the OOM killer. Available memory is MemAvailable of /proc/meminfo (or the free
    pages from os.sysconf) on a CPU, torch.cuda.mem_get_info on a GPU; DLLM_MAX_MEMORY (e.g. "24G")
    replaces the measured amount (and "0" or "off" turns the check off).
  * files: every file named by a user or a checkpoint that dllm reads whole (config.json, a JSON
    schema, a grammar, a prompts file, ...) must be a regular file under a size cap (`read_file`),
    so /dev/zero or a FIFO is refused instead of read forever.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from dllm.errors import DllmError

MAX_MEMORY_ENV = "DLLM_MAX_MEMORY"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}

# size caps of the files dllm reads whole (bytes)
CONFIG_BYTES = 16 << 20          # config.json, generation_config.json, index files
TEXT_BYTES = 64 << 20            # grammars, JSON schemas, prompt files, chat templates


def human(n: float) -> str:
    """Bytes as a short human-readable amount: 1.5 GiB, 12 MiB, 512 B."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def _parse_amount(text: str) -> int | None:
    """'24G', '512M', '1.5T', '1000000' -> bytes; 'off' / '0' -> None (no check)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t in ("", "OFF", "0", "NONE"):
        return None
    unit = t[-1] if t[-1] in _UNITS else ""
    try:
        value = float(t[:-1] if unit else t)
    except ValueError:
        raise DllmError(f"{MAX_MEMORY_ENV}={text!r} is not an amount of memory such as 24G or 512M.") from None
    if not value > 0 or value == float("inf"):
        raise DllmError(f"{MAX_MEMORY_ENV}={text!r} is not a positive amount of memory.")
    return int(value * _UNITS[unit])


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f.read(1 << 16).decode("ascii", "replace").splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_bytes(device=None) -> int | None:
    """Memory a new allocation on `device` may use, or None when unknown / the check is off."""
    env = os.environ.get(MAX_MEMORY_ENV)
    if env is not None:
        return _parse_amount(env)
    kind = getattr(device, "type", str(device or "cpu").split(":")[0])
    if kind == "cuda":
        try:
            import torch

            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:  # noqa: BLE001 - no usable CUDA runtime: no check
            return None
    if kind != "cpu":
        return None
    return _meminfo_available()


def require_memory(nbytes: int, device, what: str, error=DllmError) -> None:
    """Raise `error` when `what` (a noun phrase) needs more than the available memory."""
    avail = available_bytes(device)
    if avail is not None and nbytes > avail:
        raise error(f"{what} would need {human(nbytes)}, but only {human(avail)} of memory is available on "
                    f"{device or 'cpu'} (set {MAX_MEMORY_ENV} to change the amount dllm assumes).")


def read_file(path, what: str, limit: int = TEXT_BYTES, error=DllmError, binary: bool = False):
    """The content of a regular file of at most `limit` bytes (text as UTF-8 unless binary);
    anything else (missing, a directory, a device such as /dev/zero, a FIFO, too large, not UTF-8)
    raises `error` with one sentence naming `what`."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise error(f"cannot read {what} {str(path)!r}: {e.strerror or e}.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {str(path)!r} is not a regular file.")
        if st.st_size > limit:
            raise error(f"{what} {str(path)!r} is {human(st.st_size)}; dllm reads at most {human(limit)}.")
        with os.fdopen(fd, "rb") as f:
            fd = None
            data = f.read(limit + 1)
    except OSError as e:
        raise error(f"cannot read {what} {str(path)!r}: {e.strerror or e}.") from None
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise error(f"{what} {str(path)!r} is larger than {human(limit)}, the most dllm reads.")
    if binary:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {str(path)!r} is not UTF-8 text (invalid byte at offset {e.start}).") from None
