"""The supervised engine worker, seen from the measuring process.

llama.cpp ends the process on failed asserts and, on GPUs, on CUDA errors such as out-of-memory;
the OOM killer and a segfault do the same. So the engine runs in a long-lived worker process
(engine/worker.py) that keeps its loaded model from point to point, and `WorkerEngine` forwards
the backend calls to it. When the worker dies inside a request the request raises `WorkerDied`
(the exit code or signal by name, the request, the last lines of llama.cpp's log); a request that
gets no answer within `timeout_s` kills the worker and raises `WorkerTimeout`. The next request
starts a fresh worker, so the caller fails one point and goes on. An exception in the caller while
it waits (Ctrl-C, SIGTERM) kills the worker before it propagates: a worker is never left running
a request nobody waits for.

Fault injection for tests: HARNESS_WORKER_PAUSE=OP:N (e.g. `load:1`, `generate:3`) makes the
worker stop itself (SIGSTOP) right before the N-th request of kind OP that this supervisor sends,
counted over all its workers, so a test can signal a worker that is certainly inside that request.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any, Callable, Sequence

from ..plan import LoadKey
from .backend import LoadInfo, ModelView
from .llama import RawRep

log = logging.getLogger("harness")

PAUSE_ENV = "HARNESS_WORKER_PAUSE"
LOG_TAIL_LINES = 8


class WorkerDied(RuntimeError):
    """The worker process ended inside a request. `how`: "signal SIGSEGV" or "exit code 134"."""

    def __init__(self, how: str, op: str, tail: str):
        self.how, self.op, self.tail = how, op, tail
        super().__init__(f"engine worker died ({how}) during {op}" + (f"; llama.cpp log: {tail}" if tail else ""))


class WorkerTimeout(RuntimeError):
    """The worker gave no answer within the time limit and was killed."""

    def __init__(self, op: str, timeout_s: float, tail: str):
        self.op, self.timeout_s, self.tail = op, timeout_s, tail
        super().__init__(f"timeout: no progress for {timeout_s:g} s during {op} (bench.point_timeout_s); "
                         "engine worker killed" + (f"; llama.cpp log: {tail}" if tail else ""))


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _parse_pause(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    op, _, n = value.partition(":")
    return (op, int(n or 1)) if n.isdigit() or not n else None


class WorkerEngine:
    """A backend whose engine runs in a supervised worker process (started on first use)."""

    isolated = True

    def __init__(self, timeout_s: float | None = None, env: dict | None = None):
        self.timeout_s = timeout_s
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._conn = None
        self._log = None  # the worker's stdout + stderr (llama.cpp's log): a temporary file
        self._sent: Counter = Counter()
        self._pause = _parse_pause(os.environ.get(PAUSE_ENV))
        self._on_wait: Callable[[], object] | None = None
        self.started = 0  # workers started by this supervisor
        self.loaded: LoadKey | None = None  # what the current worker has loaded

    # --- process ------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        """The worker's pid (started now if none is running)."""
        self._ensure()
        assert self.proc is not None
        return self.proc.pid

    @property
    def used(self) -> bool:
        """Whether any request was sent to a worker of this supervisor."""
        return bool(self._sent)

    def start(self) -> None:
        """Start the worker now, without waiting for it: it imports the engine while the caller
        does other work (`harness run` starts it before composing its configuration)."""
        self._ensure()

    def _ensure(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:  # died between requests: nothing was running on it
            log.warning("engine worker %d ended between requests (%s); starting a new one",
                        self.proc.pid, describe_exit(self.proc.returncode))
            self._reap()
        from multiprocessing.connection import Connection

        ours, theirs = socket.socketpair()
        if self._log is None:
            self._log = tempfile.TemporaryFile()
        env = {**os.environ, **(self.env or {})}
        env.setdefault("GGML_NO_BACKTRACE", "1")  # an abort prints its message, not a debugger session
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "harness.engine.worker", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                env=env, start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self.started += 1
        self.loaded = None

    def _reap(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        self.loaded = None

    def kill(self) -> None:
        """Stop the worker now (SIGKILL); the next request starts a new one."""
        self._reap()

    def close(self) -> None:
        """Let the worker free its model and exit; kill it if it does not within 10 s. A worker
        that never got a request (started ahead, then not needed) holds nothing: it is killed."""
        if self.proc is not None and self.proc.poll() is None and self._conn is not None and self.used:
            try:
                self._conn.send(("close", (), {}, False))
                if self._conn.poll(10):
                    self._conn.recv()
                self.proc.wait(timeout=10)
            except (OSError, EOFError, subprocess.TimeoutExpired):
                pass
        self._reap()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __getstate__(self) -> dict:
        # A launcher that pickles the task (submitit, Ray) gets a supervisor with no worker yet.
        return {"timeout_s": self.timeout_s, "env": self.env}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    # --- requests -----------------------------------------------------------------------------
    def _log_size(self) -> int:
        return os.fstat(self._log.fileno()).st_size if self._log is not None else 0

    def log_tail(self, since: int = 0, lines: int = LOG_TAIL_LINES) -> str:
        """The last `lines` non-empty lines the worker wrote after byte offset `since`, joined by ' | '."""
        if self._log is None:
            return ""
        size = self._log_size()
        start = max(since, size - 64 * 1024)
        text = os.pread(self._log.fileno(), size - start, start).decode("utf-8", errors="replace")
        return " | ".join([ln.strip() for ln in text.splitlines() if ln.strip()][-lines:])

    def request(self, op: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        """Run `op` in the worker and return its result, or raise its exception, WorkerDied or
        WorkerTimeout. `timeout_s` (default: this supervisor's) bounds the wait for the answer."""
        self._ensure()
        assert self._conn is not None and self.proc is not None
        self._sent[op] += 1
        pause = self._pause == (op, self._sent[op])
        since = self._log_size()
        limit = self.timeout_s if timeout_s is None else timeout_s
        on_wait, self._on_wait = self._on_wait, None
        try:
            try:
                self._conn.send((op, args, kwargs, pause))
                if on_wait is not None:
                    on_wait()  # work of this process while the worker runs the request
                answered = self._conn.poll(limit)  # Ctrl-C / SIGTERM handlers run while it waits
                if not answered:
                    tail = self.log_tail(since)
                    self._reap()
                    raise WorkerTimeout(op, limit, tail)
                status, value = self._conn.recv()
            except (EOFError, ConnectionError, BrokenPipeError):
                self.proc.wait()
                how = describe_exit(self.proc.returncode)
                tail = self.log_tail(since) or self.log_tail()
                self._reap()
                raise WorkerDied(how, op, tail) from None
        except BaseException:
            if self.proc is not None:  # interrupted while the worker runs the request: stop it
                self._reap()
            raise
        if status == "error":
            raise value
        return value

    def on_next_wait(self, fn: Callable[[], object]) -> None:
        """Run `fn` in this process while the worker runs the next request (after sending it, before
        waiting for its answer; the request's timeout counts from then)."""
        self._on_wait = fn

    # --- the backend interface ------------------------------------------------------------------
    def load(self, key: LoadKey, architecture: str) -> LoadInfo:
        info = self.request("load", key, architecture)
        self.loaded = key
        return info

    def model(self, key: LoadKey, architecture: str) -> ModelView:
        return ModelView(self.load(key, architecture), self)

    def tokenize(self, text: str, add_bos: bool, key: LoadKey | None = None) -> list[int]:
        return self.request("tokenize", text, add_bos, key=key)

    def detokenize(self, tokens: Sequence[int], key: LoadKey | None = None) -> str:
        return self.request("detokenize", list(tokens), key=key)

    def apply_chat_template(self, messages: list[dict], key: LoadKey | None = None) -> str | None:
        return self.request("apply_chat_template", messages, key=key)

    def generate(self, timing: str, key: LoadKey | None = None, **gen: Any) -> RawRep:
        return self.request("generate", timing, key=key, **gen)

    def call(self, target: str, *args: Any, timeout_s: float | None = None, **kwargs: Any) -> Any:
        return self.request("call", target, *args, timeout_s=timeout_s, **kwargs)

    def unload(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.request("unload")
        self.loaded = None
