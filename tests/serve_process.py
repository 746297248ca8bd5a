"""`dllm serve` as a subprocess on 127.0.0.1 and a free port, and prompts the shipped model answers
(used by tests/test_serve.py and benchmarks/serve.py; not a test)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

NAMES = ["Zoe Lopez", "Rosa Quinn", "Ana Silva", "Victor Becker", "Victor Green", "Mia Chen", "Omar Diaz",
         "Lena Fox", "Ivan Petrov", "Nora King"]


def waiting_line(i: int) -> str:
    """One of the shipped model's task prompts (it sorts the list), with names varied by i."""
    names = [NAMES[(i + 3 * k) % len(NAMES)] for k in range(3 + i % 3)]
    return ("You are managing a waiting line at a customer service desk.\nThe following people should be "
            "organized alphabetically by last name for efficient processing:\n" + json.dumps(names) +
            "\nPlease sort the list in alphabetical order and provide only the final list.\n")


_READY = re.compile(r"dllm serve: \S+ on (http://\S+) ")


class ServerProcess:
    """Starts `python -m dllm.cli serve --port 0 ARGS` (the server picks a free port and prints it),
    waits until /health answers, and keeps the server's stderr in a log file."""

    def __init__(self, *args, timeout: float = 180.0):
        fd, name = tempfile.mkstemp(prefix="dllm-serve-", suffix=".log")
        self.log_path = Path(name)
        env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "dllm.cli", "serve", "--host", "127.0.0.1",
                                          "--port", "0", *map(str, args)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env)
        try:
            self.url = self._wait_ready(timeout)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dllm serve exited with {self.proc.returncode}:\n{self.log()}")
            if url is None:
                m = _READY.search(self.log())
                url = m.group(1) if m else None
            if url is not None:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=5) as r:
                        if r.status == 200:
                            return url
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"dllm serve was not ready after {timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> int:
        """Sends `sig` (SIGTERM: the server drains) and returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        self.log_path.unlink(missing_ok=True)
