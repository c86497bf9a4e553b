"""What the measurement code talks to: a backend that loads models and runs timed repetitions.

`InProcess` runs the engine in this process. The supervised worker (supervisor.WorkerEngine)
runs an InProcess backend in a child process and forwards the same calls to it, so the caller
sees one interface either way: `load`, the tokenizer calls, `generate`, `call`, `close`.

Everything that crosses the process boundary is plain data: a LoadKey in, a `LoadInfo` (what the
loaded model is, no pointers) and `RawRep`s (absolute CLOCK_MONOTONIC timestamps, the clock of
perf_counter_ns in every process on Linux) out.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, fields
from typing import Any, Sequence

from ..plan import LoadKey
from . import llama


@dataclass(frozen=True)
class LoadInfo:
    """A loaded model as the measuring process sees it (picklable: no llama.cpp pointers)."""

    key: LoadKey
    reused: bool
    load_ms: float
    loads_in_process: int
    n_ctx: int  # allocated by llama.cpp
    n_ctx_limit: int  # what a prompt + generation may use: min(requested, allocated)
    n_batch: int  # effective (llama.cpp caps n_batch at the requested n_ctx)
    n_ubatch: int
    n_vocab: int
    eog_tokens: tuple[int, ...]
    bos_token: int
    bos_text: str
    eos_text: str
    architecture: str
    flash_attn_effective: str | None
    load_log: str
    vram: dict | None = None  # harness.vram's pre-flight record of a GPU load
    mapping: dict | None = None  # engine.mapping: the model file's huge-page share after the load

    @classmethod
    def of(cls, lm: llama.LoadedModel, reused: bool) -> "LoadInfo":
        names = {f.name for f in fields(cls)} - {"reused"}
        return cls(reused=reused, **{n: getattr(lm, n) for n in names})

    def effective(self) -> dict:
        """The load's effective parameters for run.json's `effective` block."""
        return {"n_ctx_effective": self.n_ctx, "n_batch_effective": self.n_batch,
                "n_ubatch_effective": self.n_ubatch, "flash_attn_effective": self.flash_attn_effective,
                "n_threads": self.key.n_threads, "n_threads_batch": self.key.n_threads_batch}


class ModelView:
    """The loaded model of a backend as a tokenizer (workload.Tokenizer): prompts are built in the
    measuring process, the tokenizer runs where the model is."""

    def __init__(self, info: LoadInfo, backend: Any):
        self.info = info
        self._backend = backend

    n_vocab = property(lambda self: self.info.n_vocab)
    bos_token = property(lambda self: self.info.bos_token)
    bos_text = property(lambda self: self.info.bos_text)
    eog_tokens = property(lambda self: self.info.eog_tokens)
    n_ctx = property(lambda self: self.info.n_ctx_limit)

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self._backend.tokenize(text, add_bos, key=self.info.key)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._backend.detokenize(list(tokens), key=self.info.key)

    def apply_chat_template(self, messages: list[dict]) -> str | None:
        return self._backend.apply_chat_template(messages, key=self.info.key)


class NoModelLoaded(llama.EngineError):
    pass


class InProcess:
    """The engine in this process. Not isolated: a llama.cpp abort ends the process."""

    isolated = False

    def __init__(self) -> None:
        self.engine = llama.Engine()

    @property
    def pid(self) -> int:
        return os.getpid()

    def _lm(self, key: LoadKey | None = None) -> llama.LoadedModel:
        """The model loaded with `key` (the one used last when None)."""
        if key is None:
            if self.engine.current is None:
                raise NoModelLoaded("no model is loaded")
            return self.engine.current
        lm = self.engine.models.get(key)
        if lm is None:
            raise NoModelLoaded(f"the model of this point is not loaded ({key.model_path}, n_ctx={key.n_ctx})")
        self.engine.models.move_to_end(key)
        return lm

    def load(self, key: LoadKey, architecture: str) -> LoadInfo:
        lm, reused = self.engine.load_key(key, architecture)
        return LoadInfo.of(lm, reused)

    def model(self, key: LoadKey, architecture: str) -> ModelView:
        """Load (or reuse) and return the model as a tokenizer with its LoadInfo."""
        return ModelView(self.load(key, architecture), self)

    def tokenize(self, text: str, add_bos: bool, key: LoadKey | None = None) -> list[int]:
        return list(self._lm(key).tokenize(text, add_bos))

    def detokenize(self, tokens: Sequence[int], key: LoadKey | None = None) -> str:
        return self._lm(key).detokenize(tokens)

    def apply_chat_template(self, messages: list[dict], key: LoadKey | None = None) -> str | None:
        return self._lm(key).apply_chat_template(messages)

    def generate(self, timing: str, key: LoadKey | None = None, **gen: Any) -> llama.RawRep:
        """One timed repetition on the timing path `timing` ("native" or "python") with the model
        loaded with `key` (the one used last when None); `gen` are llama.generate's keyword
        arguments (text, tokens, add_bos, sampling, seed, max_tokens, ignore_eos)."""
        if timing == "native":
            from . import native

            return native.generate(self._lm(key), **gen)
        return llama.generate(self._lm(key), **gen)

    def call(self, target: str, *args: Any, **kwargs: Any) -> Any:
        """`target(loaded model, *args, **kwargs)` for a "harness.module:function" target: engine
        work that needs the loaded model itself (extra contexts for concurrent agents)."""
        module, _, name = target.partition(":")
        if not (module == "harness" or module.startswith("harness.")) or not name:
            raise ValueError(f"call target must be 'harness.<module>:<function>', got {target!r}")
        return getattr(importlib.import_module(module), name)(self._lm(), *args, **kwargs)

    def unload(self) -> None:
        self.engine.unload()

    def close(self) -> None:
        self.engine.unload()


# --- the worker's side of the supervised process --------------------------------------------------

OPS = frozenset({"load", "tokenize", "detokenize", "apply_chat_template", "generate", "call", "unload"})


def serve(conn) -> None:
    """Answer requests from the supervisor until it says close or goes away. A request is
    (op, args, kwargs, pause); the answer is ("ok", result) or ("error", exception). `pause`
    stops this process (SIGSTOP) before the request runs: a fault-injection point for tests
    (HARNESS_WORKER_PAUSE, see supervisor.py)."""
    import signal

    backend = InProcess()
    try:
        while True:
            try:
                op, args, kwargs, pause = conn.recv()
            except (EOFError, OSError):
                return  # the supervisor is gone
            if pause:
                os.kill(os.getpid(), signal.SIGSTOP)
            if op == "close":
                backend.close()
                conn.send(("ok", None))
                return
            try:
                if op not in OPS:
                    raise ValueError(f"unknown engine request {op!r}")
                reply = ("ok", getattr(backend, op)(*args, **kwargs))
            except Exception as e:  # the request's failure is the caller's, the worker goes on
                reply = ("error", _portable(e))
            conn.send(reply)
    finally:
        backend.close()


class RemoteError(RuntimeError):
    """An exception of the worker that could not be sent as itself; `remote_type` is its class."""

    def __init__(self, remote_type: str, message: str):
        super().__init__(message)
        self.remote_type = remote_type

    def __reduce__(self):
        return (RemoteError, (self.remote_type, str(self)))


def _portable(e: Exception) -> Exception:
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # an exception class that does not pickle: its name and message travel
        return RemoteError(type(e).__name__, str(e))


def error_type(e: BaseException) -> str:
    """The class name recorded for a failure (the worker's class for a RemoteError)."""
    return getattr(e, "remote_type", None) or type(e).__name__
