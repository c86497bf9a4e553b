"""The native timing path: libharness_native (native/harness_native.c) called through ctypes.

The library runs prefill + the sample/decode loop in C on the context llama-cpp-python created
and fills caller-owned arrays with token ids and CLOCK_MONOTONIC timestamps (= perf_counter_ns on
Linux). ctypes releases the GIL for the whole call, and no Python runs between two tokens.

It is used only when `status()` says it is usable: the file exists and loads, its ABI version is
ours, and it was compiled against the llama.h that is installed now (sha256 of site-packages'
include/llama.h). A library built against another llama.cpp is refused, never called.

Location: $HARNESS_NATIVE_LIB, else native/build/libharness_native.so in the checkout (`make native`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import time
from pathlib import Path
from typing import NamedTuple, Sequence

from ..config import SamplingConfig
from . import llama as engine

ABI_VERSION = 1  # must equal HARNESS_NATIVE_ABI in native/harness_native.c
ENV_VAR = "HARNESS_NATIVE_LIB"
LIB_NAME = "libharness_native.so"
ROOT = Path(__file__).resolve().parents[2]

# Return codes of harness_native_generate (native/harness_native.c).
_E_ARGS, _E_NO_FIT, _E_SAMPLER, _E_DECODE = -1, -2, -3, -1000


class NativeUnavailable(RuntimeError):
    """The native library cannot be used here (the message says why)."""


class NativeStatus(NamedTuple):
    usable: bool
    reason: str
    path: str

    def to_dict(self) -> dict:
        return self._asdict()


class _Sampling(ctypes.Structure):
    """struct harness_sampling (same order and types)."""

    _fields_ = [("temperature", ctypes.c_float), ("top_p", ctypes.c_float), ("min_p", ctypes.c_float),
                ("repeat_penalty", ctypes.c_float), ("top_k", ctypes.c_int32), ("seed", ctypes.c_uint32),
                ("ignore_eos", ctypes.c_int32), ("n_vocab", ctypes.c_int32),
                ("eog", ctypes.POINTER(ctypes.c_int32)), ("n_eog", ctypes.c_int32)]


def library_path() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else ROOT / "native" / "build" / LIB_NAME


def installed_llama_h() -> Path:
    """The llama.h that llama-cpp-python's wheel installed next to its package (site-packages/include)."""
    lc = engine._llama_cpp()
    return Path(lc.__file__).resolve().parent.parent / "include" / "llama.h"


def sha256_of(path: Path) -> str:
    st = path.stat()  # status() runs before every repetition: hash a given file version once
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_LIBS: dict[str, ctypes.CDLL] = {}


def open_library(path: Path) -> ctypes.CDLL:
    """Load (once per path) and declare the C ABI. llama_cpp is imported first, so the library
    binds to the libllama that llama-cpp-python already loaded."""
    key = str(path)
    if key not in _LIBS:
        engine._llama_cpp()
        lib = ctypes.CDLL(key)
        lib.harness_native_abi_version.restype = ctypes.c_int
        lib.harness_native_abi_version.argtypes = []
        lib.harness_native_llama_build.restype = ctypes.c_char_p
        lib.harness_native_llama_build.argtypes = []
        i32p, i64p = ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_int64)
        lib.harness_native_generate.restype = ctypes.c_int
        lib.harness_native_generate.argtypes = [
            ctypes.c_void_p, i32p, ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(_Sampling), ctypes.c_int32,
            i32p, i64p, i64p, i64p, i64p, i64p, i32p]
        _LIBS[key] = lib
    return _LIBS[key]


def status() -> NativeStatus:
    """Whether the native timing path can be used here, why not, and which file was checked."""
    path = library_path()
    where = f"${ENV_VAR}={path}" if os.environ.get(ENV_VAR) else str(path)
    if not path.is_file():
        how = "" if os.environ.get(ENV_VAR) else " (build it with `make native`)"
        return NativeStatus(False, f"library not found: {where}{how}", str(path))
    try:
        lib = open_library(path)
        abi = int(lib.harness_native_abi_version())
        built = (lib.harness_native_llama_build() or b"").decode(errors="replace")
    except (OSError, AttributeError) as e:
        return NativeStatus(False, f"cannot load {where}: {e}", str(path))
    if abi != ABI_VERSION:
        return NativeStatus(False, f"ABI version mismatch: {where} has ABI {abi}, this harness needs "
                                   f"{ABI_VERSION} (rebuild with `make native`)", str(path))
    header = installed_llama_h()
    try:
        installed = sha256_of(header)
    except OSError as e:
        return NativeStatus(False, f"cannot read the installed llama.h ({header}): {e}", str(path))
    if built != installed:
        return NativeStatus(False, f"llama.h mismatch: {where} was built against llama.h sha256 {built[:16]}, "
                                   f"the installed {header} is {installed[:16]} (rebuild with `make native`)",
                            str(path))
    return NativeStatus(True, f"ABI {abi}, built against the installed llama.h (sha256 {installed[:16]})",
                        str(path))


def _usable_lib() -> ctypes.CDLL:
    st = status()
    if not st.usable:
        raise NativeUnavailable(st.reason)
    return open_library(Path(st.path))


def generate(lm: engine.LoadedModel, *, text: str | None, tokens: Sequence[int] | None, add_bos: bool,
             sampling: SamplingConfig, seed: int, max_tokens: int, ignore_eos: bool,
             lib: ctypes.CDLL | None = None) -> engine.RawRep:
    """One timed repetition on the native path; same contract as engine.generate(). t_request is
    taken here, before tokenisation (TTFT includes it); the library's own request stamp is only
    informational. Adds per-token decode_ns and sample_ns."""
    lib = lib or _usable_lib()
    lc = engine._llama_cpp()
    ctx = lm.llm._ctx.ctx
    engine.reset(lm)
    eog = (ctypes.c_int32 * max(1, len(lm.eog_tokens)))(*lm.eog_tokens)
    sp = _Sampling(temperature=sampling.temperature, top_p=sampling.top_p, min_p=sampling.min_p,
                   repeat_penalty=sampling.repeat_penalty, top_k=sampling.top_k, seed=seed & 0xFFFFFFFF,
                   ignore_eos=int(ignore_eos), n_vocab=lm.n_vocab, eog=eog, n_eog=len(lm.eog_tokens))
    out_tokens = (ctypes.c_int32 * max_tokens)()
    out_t, out_decode, out_sample = ((ctypes.c_int64 * max_tokens)() for _ in range(3))
    t_req_native, t_prefill, n_gen = ctypes.c_int64(0), ctypes.c_int64(0), ctypes.c_int32(0)

    t_request = time.perf_counter_ns()
    prompt = engine.prompt_tokens(lm, text, tokens, add_bos, max_tokens)
    arr = (ctypes.c_int32 * len(prompt))(*prompt)
    rc = lib.harness_native_generate(ctx, arr, len(prompt), lm.n_batch, ctypes.byref(sp), max_tokens,
                                     out_tokens, out_t, out_decode, out_sample, ctypes.byref(t_req_native),
                                     ctypes.byref(t_prefill), ctypes.byref(n_gen))
    if rc != 0:
        raise engine.EngineError(_explain(rc, t_prefill.value, n_gen.value))
    perf = lc.llama_perf_context(ctx)
    n = n_gen.value
    return engine.RawRep(
        t_request_ns=t_request, t_prefill_end_ns=t_prefill.value, token_ids=tuple(out_tokens[:n]),
        token_ns=tuple(out_t[:n]), n_prompt_tokens=len(prompt), sample_ns=tuple(out_sample[:n]),
        decode_ns=tuple(out_decode[:n]), timing_path="native", **engine.perf_fields(perf),
    )


def _explain(rc: int, t_prefill_end: int, n_gen: int) -> str:
    if rc == _E_ARGS:
        return "native generate: invalid arguments"
    if rc == _E_NO_FIT:
        return "native generate: prompt + max_tokens does not fit in the context"
    if rc == _E_SAMPLER:
        return "native generate: the sampler chain could not be built"
    if -1100 <= rc <= -900:
        where = "on the prompt" if t_prefill_end == 0 else f"at generated token {n_gen - 1}"
        return f"llama_decode failed {where} (code {rc - _E_DECODE})"
    return f"native generate failed (code {rc})"
