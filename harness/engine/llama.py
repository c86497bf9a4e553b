"""llama-cpp-python in this process: loading models, and the Python timing path.

Only the engine package touches llama_cpp. An `Engine` keeps its loaded models for later points
with an equal LoadKey (several, bounded by count and host memory); anything else loads, and load
time is measured separately from every repetition. Sweeps run an Engine inside a supervised worker process (engine/worker.py), so that a
llama.cpp abort costs one point, not the sweep.

The Python timing path drives llama.cpp's C API through llama-cpp-python's ctypes bindings:
prefill in n_batch chunks, then one llama_decode per token and a native sampler chain. It avoids
llama-cpp-python's completion machinery (detokenisation, dict building, a Python logits
processor over the whole vocabulary per token), which would otherwise be measured as engine time.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Sequence

from ..config import KV_TYPES, SamplingConfig
from ..plan import LoadKey, Plan
from .mapping import model_mapping


class EngineError(RuntimeError):
    """llama.cpp refused or failed an operation (load, decode)."""


class PromptTooLong(EngineError):
    pass


def _llama_cpp():
    import llama_cpp  # deferred: importing it loads the shared libraries (~0.1-0.3 s)

    return llama_cpp


def engine_info() -> dict:
    """Version, GPU-offload support and llama.cpp's system info line of the installed engine."""
    import importlib.metadata as md

    lc = _llama_cpp()
    return {
        "llama_cpp_python": md.version("llama-cpp-python"),
        "gpu_offload_supported": bool(lc.llama_supports_gpu_offload()),
        "system_info": lc.llama_print_system_info().decode(errors="replace").strip(),
    }


def gpu_offload_supported() -> bool:
    return bool(_llama_cpp().llama_supports_gpu_offload())


@dataclass
class LoadedModel:
    llm: object
    key: LoadKey
    load_ms: float
    n_ctx: int  # what llama.cpp actually allocated
    n_vocab: int
    eog_tokens: tuple[int, ...]
    bos_token: int
    chat_template: str | None
    architecture: str = ""
    bos_text: str = ""
    eos_text: str = ""
    loads_in_process: int = 1
    flash_attn_effective: str | None = None  # what llama.cpp chose (auto resolves at load)
    vram: dict | None = None  # harness.vram: estimate, verdict, free before, measured (GPU loads)
    load_log: str = ""  # what llama.cpp printed while loading (offload, KV cache, flash attention)
    # What the context accepts: llama.cpp caps n_batch at the requested n_ctx and n_ubatch at
    # n_batch, and rounds n_ctx up (256 cells); prompts are checked against the requested size.
    n_batch: int = 0
    n_ubatch: int = 0
    n_ctx_limit: int = 0  # min(requested n_ctx, allocated n_ctx): what a prompt + generation may use
    mapping: dict | None = None  # engine.mapping: how the weights sit in memory (huge-page share)
    _formatter: object = field(default=None, repr=False)

    # --- tokenizer adapter used by workload.py --------------------------------------------------
    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict]) -> str | None:
        """The prompt text with the model's chat template: the Jinja template in its GGUF, else
        llama.cpp's built-in template for its architecture; None when there is neither."""
        if not self.chat_template:
            return self._builtin_template(messages)
        if self._formatter is None:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._formatter = Jinja2ChatFormatter(template=self.chat_template, eos_token=self.eos_text,
                                                  bos_token=self.bos_text)
        return self._formatter(messages=messages).prompt


    def _builtin_template(self, messages: list[dict]) -> str | None:
        lc = _llama_cpp()
        name = _BUILTIN_TEMPLATES.get(self.architecture)
        if name is None:
            return None
        keep = [(m["role"].encode(), m["content"].encode()) for m in messages]
        chat = (lc.llama_chat_message * len(keep))(*[lc.llama_chat_message(r, c) for r, c in keep])
        size = 4 * sum(len(c) for _, c in keep) + 1024
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_chat_apply_template(name.encode(), chat, len(keep), True, buf, size)
        if n < 0:
            return None
        if n > size:
            buf = ctypes.create_string_buffer(n)
            n = lc.llama_chat_apply_template(name.encode(), chat, len(keep), True, buf, n)
        # llama.cpp's built-in templates leave BOS to the tokenizer (workload.py adds it).
        return buf.raw[:n].decode("utf-8", errors="replace")


# GGUF architecture -> llama.cpp built-in chat template, for files that carry no Jinja template.
_BUILTIN_TEMPLATES = {"gemma": "gemma", "gemma2": "gemma", "gemma3": "gemma", "gemma3n": "gemma",
                      "llama": "llama3", "qwen2": "chatml", "qwen3": "chatml", "phi3": "phi3"}

@contextmanager
def _flash_attn_mode(mode: str):
    """llama-cpp-python's constructor maps flash_attn=False to DISABLED and has no 'auto'; for auto,
    point that constant at llama.cpp's AUTO for the duration of the constructor."""
    lc = _llama_cpp().llama_cpp
    if mode != "auto":
        yield mode == "on"
        return
    saved = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
    lc.LLAMA_FLASH_ATTN_TYPE_DISABLED = lc.LLAMA_FLASH_ATTN_TYPE_AUTO
    try:
        yield False
    finally:
        lc.LLAMA_FLASH_ATTN_TYPE_DISABLED = saved


class _Captured:
    text = ""


def _readable(fd: int) -> bool:
    """Is `fd` open for reading (a log opened read-write) rather than write-only (`2>file`)?"""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR


@contextmanager
def _capture_stderr():
    """What the C library writes to file descriptor 2 during the block, for the record. When fd 2
    is a regular file (the engine worker's log) the text stays there too and is read back from
    the offset at the start, so that an abort inside the block leaves its last words in the log
    the supervisor reads; otherwise fd 2 is pointed at a temporary file for the block, so that
    llama.cpp's lines do not interleave with the progress display."""
    import stat
    import sys
    import tempfile

    cap = _Captured()
    sys.stderr.flush()
    if stat.S_ISREG(os.fstat(2).st_mode) and _readable(2):
        start = os.lseek(2, 0, os.SEEK_END)
        try:
            yield cap
        finally:
            sys.stderr.flush()
            end = os.lseek(2, 0, os.SEEK_END)
            cap.text = os.pread(2, max(0, end - start), start).decode("utf-8", errors="replace")
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield cap
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            cap.text = tmp.read().decode("utf-8", errors="replace")


class Engine:
    """The models loaded in this process and how many loads it has done. A load with the LoadKey of
    a loaded model reuses it. Up to `max_models` stay loaded (least recently used first out), so a
    sweep that visits its load groups in turn (bench.rounds) does not reload them; before a new
    load, models are freed while the host would keep less than `reserve` of its memory free with
    the new one loaded (its file size counted), and after it while it keeps less. GPU memory is
    guarded the same way by the offloading load failing, which frees every other model and tries
    once more."""

    def __init__(self, max_models: int = 4, reserve: float = 0.2) -> None:
        from collections import OrderedDict

        self.models: "OrderedDict[LoadKey, LoadedModel]" = OrderedDict()
        self.loads = 0
        self.max_models = max_models
        self.reserve = reserve

    @property
    def current(self) -> LoadedModel | None:
        """The model used last."""
        return next(reversed(self.models.values())) if self.models else None

    def unload(self) -> None:
        """Free every loaded model. Safe to call twice."""
        while self.models:
            self._free(next(iter(self.models)))

    def _free(self, key: LoadKey) -> None:
        lm = self.models.pop(key)
        with _capture_stderr():
            lm.llm.close()

    def load(self, plan: Plan) -> tuple[LoadedModel, bool]:
        """Load the model for `plan`, or reuse a loaded one with an equal LoadKey.

        Returns (model, reused). Load time (model + context creation) is in `model.load_ms`.
        """
        return self.load_key(plan.load_key, plan.gguf.architecture)

    def load_key(self, key: LoadKey, architecture: str) -> tuple[LoadedModel, bool]:
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key], True
        self._make_room(_file_size(key.model_path))
        vram_before = self._vram_preflight(key)
        try:
            lm = _load(key, architecture)
        except EngineError:
            if not self.models:
                raise
            self.unload()  # out of (GPU) memory is the usual reason: try once more alone
            lm = _load(key, architecture)
        if vram_before is not None:
            from .. import vram

            lm.vram = vram.measured(vram_before)
        self.loads += 1
        lm.loads_in_process = self.loads
        self.models[key] = lm
        self._make_room(0)
        return lm, False

    def _vram_preflight(self, key: LoadKey) -> dict | None:
        """The VRAM pre-flight of an offloading load (harness.vram): the estimate against NVML's free
        memory, the other loaded models freed first when it does not fit; raises VramInsufficient
        (one line) when it still cannot."""
        if key.n_gpu_layers <= 0 or not gpu_offload_supported():
            return None
        from .. import vram

        def evict() -> bool:
            had = bool(self.models)
            self.unload()
            return had

        return vram.preflight(key, evict=evict)

    def _make_room(self, need: int) -> None:
        """Free least recently used models beyond max_models, or while host memory is short."""
        limit = self.max_models - (1 if need else 0)
        while self.models and (len(self.models) > limit or _host_short(need, self.reserve)):
            if not need and len(self.models) == 1:
                return  # never the model just loaded
            self._free(next(iter(self.models)))


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _host_short(need: int, reserve: float) -> bool:
    """Would the host keep less than `reserve` of its memory free after `need` more bytes?"""
    try:
        import psutil

        vm = psutil.virtual_memory()
    except Exception:  # no psutil reading: keep models (max_models still bounds them)
        return False
    return vm.available - need < reserve * vm.total


def _load(key: LoadKey, architecture: str) -> LoadedModel:
    lc = _llama_cpp()
    t0 = time.perf_counter_ns()
    try:
        with _capture_stderr() as load_log, _flash_attn_mode(key.flash_attn) as fa:
            llm = lc.Llama(
                model_path=key.model_path, n_gpu_layers=key.n_gpu_layers, n_ctx=key.n_ctx,
                n_batch=key.n_batch, n_ubatch=key.n_ubatch, n_threads=key.n_threads,
                n_threads_batch=key.n_threads_batch, flash_attn=fa, type_k=KV_TYPES[key.type_k],
                type_v=KV_TYPES[key.type_v], use_mmap=key.use_mmap, offload_kqv=key.offload_kqv,
                verbose=True,
            )
    except Exception as e:  # llama-cpp-python raises ValueError/RuntimeError with little detail
        tail = " | ".join(load_log.text.strip().splitlines()[-3:])
        raise EngineError(f"failed to load {key.model_path} (n_ctx={key.n_ctx}, "
                          f"n_gpu_layers={key.n_gpu_layers}): {e}" + (f" [llama.cpp: {tail}]" if tail else "")) from e
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    vocab = lc.llama_model_get_vocab(llm._model.model)
    n_vocab = int(lc.llama_vocab_n_tokens(vocab))
    eog = tuple(t for t in range(n_vocab) if lc.llama_vocab_is_eog(vocab, t))
    bos = int(lc.llama_vocab_bos(vocab))
    eos = int(lc.llama_vocab_eos(vocab))
    ctx = llm._ctx.ctx
    n_ctx = int(lc.llama_n_ctx(ctx))
    fa_seen = re.search(r"Flash Attention (enabled|disabled)", load_log.text)
    lm = LoadedModel(
        llm=llm, key=key, load_ms=load_ms, n_ctx=n_ctx, n_vocab=n_vocab,
        eog_tokens=eog, bos_token=bos, chat_template=llm.metadata.get("tokenizer.chat_template"),
        architecture=architecture,
        bos_text=llm._model.token_get_text(bos) if bos >= 0 else "",
        eos_text=llm._model.token_get_text(eos) if eos >= 0 else "",
        load_log=load_log.text,
        flash_attn_effective={"enabled": "on", "disabled": "off"}[fa_seen.group(1)] if fa_seen else None,
        n_batch=int(lc.llama_n_batch(ctx)), n_ubatch=int(lc.llama_n_ubatch(ctx)),
        n_ctx_limit=min(n_ctx, key.n_ctx), mapping=model_mapping(key.model_path, key.use_mmap),
    )
    llm.verbose = False  # keep llama-cpp-python quiet after the load
    return lm


@dataclass(frozen=True)
class RawRep:
    """What one repetition measured: absolute perf_counter_ns timestamps and engine counters."""

    t_request_ns: int
    t_prefill_end_ns: int
    token_ids: tuple[int, ...]
    token_ns: tuple[int, ...]
    n_prompt_tokens: int
    engine_prompt_eval_ms: float | None
    engine_n_prompt_eval: int  # prompt tokens llama.cpp evaluated: all of them (no prefix reuse)
    engine_eval_ms: float | None
    engine_n_eval: int | None
    # Added with the native timing path; optional so that older callers and readers keep working.
    sample_ns: tuple[int, ...] | None = None  # per token: time inside llama_sampler_sample
    decode_ns: tuple[int, ...] | None = None  # per token: time inside llama_decode (+ sync) that
    #   produced its logits (token 0: the whole prefill); native path only (python: engine_eval_ms)
    timing_path: str = "python"


def _sampler(lm: LoadedModel, s: SamplingConfig, seed: int, ignore_eos: bool):
    lc = _llama_cpp()
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    keep = []
    if ignore_eos and lm.eog_tokens:
        biases = (lc.llama_logit_bias * len(lm.eog_tokens))(
            *[lc.llama_logit_bias(t, float("-inf")) for t in lm.eog_tokens])
        keep.append(biases)
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_logit_bias(lm.n_vocab, len(lm.eog_tokens), biases))
    if s.repeat_penalty != 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_penalties(lm.n_vocab, 64, s.repeat_penalty, 0.0, 0.0))
    if s.temperature <= 0.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
    else:
        if s.top_k > 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(s.top_k))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(s.min_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain, keep


def prompt_tokens(lm: LoadedModel, text: str | None, tokens: Sequence[int] | None, add_bos: bool,
                  max_tokens: int) -> list[int]:
    """The prompt as token ids (tokenised here unless given), checked to fit the context."""
    prompt = list(tokens) if tokens is not None else lm.tokenize(text or "", add_bos)
    if not prompt:
        raise EngineError("empty prompt")
    limit = lm.n_ctx_limit or lm.n_ctx
    if len(prompt) + max_tokens > limit:
        allocated = f" (llama.cpp allocated {lm.n_ctx})" if lm.n_ctx != limit else ""
        raise PromptTooLong(f"prompt of {len(prompt)} tokens + {max_tokens} to generate does not fit "
                            f"in n_ctx={limit}{allocated}")
    return prompt


def reset(lm: LoadedModel) -> None:
    """Before a repetition: llama-cpp-python's token count to 0, the KV cache cleared (no prefix
    reuse), llama.cpp's perf counters reset (they give prompt_eval_ms and engine_eval_ms)."""
    lc = _llama_cpp()
    ctx = lm.llm._ctx.ctx
    lm.llm.reset()
    lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
    lc.llama_perf_context_reset(ctx)


def generate(lm: LoadedModel, *, text: str | None, tokens: Sequence[int] | None, add_bos: bool,
             sampling: SamplingConfig, seed: int, max_tokens: int, ignore_eos: bool) -> RawRep:
    """One timed repetition on the Python path. The KV cache is cleared first (no prefix reuse),
    the clock starts before tokenisation, and every sampled token gets a timestamp."""
    lc = _llama_cpp()
    llm = lm.llm
    ctx = llm._ctx.ctx
    reset(lm)
    chain, _keep = _sampler(lm, sampling, seed, ignore_eos)
    vocab = lc.llama_model_get_vocab(llm._model.model)
    try:
        t_request = time.perf_counter_ns()
        prompt = prompt_tokens(lm, text, tokens, add_bos, max_tokens)
        n_prompt = len(prompt)
        arr = (lc.llama_token * n_prompt)(*prompt)
        step = lm.n_batch or lm.key.n_batch  # the effective batch: llama.cpp asserts on more
        size = ctypes.sizeof(lc.llama_token)
        for i in range(0, n_prompt, step):
            m = min(step, n_prompt - i)
            ptr = ctypes.cast(ctypes.byref(arr, i * size), ctypes.POINTER(lc.llama_token))
            rc = lc.llama_decode(ctx, lc.llama_batch_get_one(ptr, m))
            if rc != 0:
                raise EngineError(f"llama_decode failed on the prompt (code {rc})")
        # llama_decode may return before an asynchronous backend (CUDA) has finished; waiting here
        # keeps that compute out of the sampling time (the native path does the same).
        sync = lc.llama_synchronize
        sync(ctx)
        t_prefill = time.perf_counter_ns()
        ids: list[int] = []
        stamps: list[int] = []
        sample_ns: list[int] = []
        one = (lc.llama_token * 1)()
        now = time.perf_counter_ns
        sample = lc.llama_sampler_sample
        for i in range(max_tokens):
            t0 = now()
            tok = sample(chain, ctx, -1)
            t1 = now()
            stamps.append(t1)
            sample_ns.append(t1 - t0)
            ids.append(tok)
            if i == max_tokens - 1 or (not ignore_eos and lc.llama_vocab_is_eog(vocab, tok)):
                break
            one[0] = tok
            rc = lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1))
            if rc != 0:
                raise EngineError(f"llama_decode failed at generated token {i} (code {rc})")
            sync(ctx)
        perf = lc.llama_perf_context(ctx)
    finally:
        lc.llama_sampler_free(chain)
    return RawRep(
        t_request_ns=t_request, t_prefill_end_ns=t_prefill, token_ids=tuple(ids), token_ns=tuple(stamps),
        n_prompt_tokens=n_prompt, sample_ns=tuple(sample_ns), **perf_fields(perf),
    )


def perf_fields(perf) -> dict:
    """RawRep's engine counters from llama_perf_context (reset before the repetition)."""
    return dict(
        engine_prompt_eval_ms=float(perf.t_p_eval_ms) if perf.n_p_eval > 0 else None,
        engine_n_prompt_eval=int(perf.n_p_eval),
        engine_eval_ms=float(perf.t_eval_ms) if perf.n_eval > 0 else None,
        engine_n_eval=int(perf.n_eval),
    )


# --- extra contexts on the loaded model (concurrent generation) ---------------------------------
#
# Several agents in one process share the loaded weights (one llama_model) and each own a llama
# context (KV cache, compute buffers, thread count). llama-cpp-python's bindings load the library
# with ctypes.CDLL, which releases the GIL for the duration of every C call, so threads driving
# separate contexts run their llama_decode calls in parallel.


@dataclass
class ExtraContext:
    """A llama context of its own on the loaded model. Free it with free_context()."""

    ctx: object  # llama_context_p
    n_ctx: int
    n_threads: int
    n_threads_batch: int
    n_batch: int = 0  # what this context accepts per llama_decode


class _ContextView:
    """Stands in for the Llama object so that generate() drives another context of the same model:
    generate() reaches the context through llm._ctx.ctx and the model through llm._model."""

    def __init__(self, llm, ctx):
        self._model = llm._model
        self._ctx = type("Ctx", (), {"ctx": ctx})()

    def reset(self) -> None:
        pass  # no llama-cpp-python token state on this context; generate() clears its KV cache


def new_context(lm: LoadedModel, *, n_threads: int, n_threads_batch: int | None = None,
                n_ctx: int | None = None) -> ExtraContext:
    """A new context on `lm`'s model with the loaded context's parameters (batch sizes, KV types,
    flash attention) and its own thread counts and (optionally) size."""
    lc = _llama_cpp()
    params = lc.llama_context_params.from_buffer_copy(lm.llm.context_params)
    params.n_threads = int(n_threads)
    params.n_threads_batch = int(n_threads_batch or n_threads)
    if n_ctx is not None:
        params.n_ctx = int(n_ctx)
    with _capture_stderr() as log:
        ctx = lc.llama_init_from_model(lm.llm._model.model, params)
    if not ctx:
        tail = " | ".join(log.text.strip().splitlines()[-3:])
        raise EngineError(f"failed to create a context (n_ctx={params.n_ctx})" + (f" [llama.cpp: {tail}]" if tail else ""))
    return ExtraContext(ctx=ctx, n_ctx=int(lc.llama_n_ctx(ctx)), n_threads=params.n_threads,
                        n_threads_batch=params.n_threads_batch, n_batch=int(lc.llama_n_batch(ctx)))


def set_threads(ec: ExtraContext, n_threads: int, n_threads_batch: int | None = None) -> None:
    """Change the thread counts of an extra context (decode and prompt batches)."""
    ec.n_threads, ec.n_threads_batch = int(n_threads), int(n_threads_batch or n_threads)
    with _capture_stderr():  # llama.cpp logs the change; keep it out of the progress lines
        _llama_cpp().llama_set_n_threads(ec.ctx, ec.n_threads, ec.n_threads_batch)


def free_context(ec: ExtraContext) -> None:
    """Free an extra context. Safe to call twice."""
    if ec.ctx:
        with _capture_stderr():
            _llama_cpp().llama_free(ec.ctx)
        ec.ctx = None


def context_view(lm: LoadedModel, ec: ExtraContext) -> LoadedModel:
    """`lm` as seen through another context: pass the result to generate() (or native.generate())
    to run a repetition on `ec` with the same timed loop as every other measurement. Give it
    token ids (tokens=...), tokenised beforehand with `lm`."""
    from dataclasses import replace

    return replace(lm, llm=_ContextView(lm.llm, ec.ctx), n_ctx=ec.n_ctx, n_ctx_limit=ec.n_ctx,
                   n_batch=ec.n_batch or lm.n_batch, _formatter=None)


def releases_gil() -> bool:
    """True when llama.cpp's functions are called without holding the GIL (a ctypes.CDLL, not a
    PyDLL), so that threads driving separate contexts decode in parallel."""
    lib = _llama_cpp().llama_cpp._lib
    return not (lib._FuncPtr._flags_ & ctypes._FUNCFLAG_PYTHONAPI)
