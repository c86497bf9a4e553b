"""VRAM pre-flight: what a load will need on the GPU, judged against what NVML says is free.

The estimate comes from the GGUF header and the load parameters alone (no load), with llama.cpp's
own accounting (checked against the buffer sizes llama.cpp logs, tests/unit/test_vram.py):

- weights: the tensors of the offloaded layers. llama.cpp offloads the last `n_gpu_layers` of the
  repeating blocks; the output layer (output norm and output matrix, or the token embedding again
  when the output is tied to it) goes to the GPU only when every block does (n_gpu_layers above the
  block count, "all"). The input token embedding always stays in host memory.
- KV cache: `n_ctx` rounded up to llama.cpp's 256-cell padding, times each offloaded layer's
  K and V rows (head_count_kv x key_length and x value_length) at the cache types' sizes
  (offload_kqv=true; with false the cache stays in host memory). A full-size sliding-window cache
  (llama.cpp's default swa_full) is assumed.
- compute: the largest of the graph's big buffers for one ubatch, as ggml's allocator reuses memory:
  the logits (n_vocab x n_ubatch floats, on the GPU when the output layer is), the attention scores
  without flash attention (n_head x cells x n_ubatch floats) and the FFN activations; plus a fixed
  allowance for the CUDA context and cuBLAS workspace (CONTEXT_MIB).

Verdict against the free memory of the GPUs llama.cpp will use:
- "no": weights + KV alone exceed what is free: the load cannot succeed; the point is refused
  before anything loads (VramInsufficient) and recorded as failed with this one line;
- "close": the whole estimate exceeds 90% of what is free: it may fail; the point runs with a
  warning in run.json;
- "fits" otherwise.
run.json keeps the estimate beside the VRAM the load measurably took (NVML's used memory before
and after), so the estimate can be judged on every GPU it meets.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache

MIB = 2**20
KV_PAD = 256  # llama.cpp pads the context to a multiple of 256 cells
CONTEXT_MIB = 512  # CUDA context, cuBLAS workspace and pools: not in llama.cpp's own buffer log
CLOSE = 0.9  # "close" above this fraction of the free memory

# Bytes per element of the KV cache types (config.KV_TYPES names): ggml block bytes / block size.
KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
            "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}


class VramInsufficient(RuntimeError):
    """A load that cannot fit in the GPU memory NVML reports free. str() is one line."""


@dataclass(frozen=True)
class Estimate:
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    context_bytes: int
    n_layers_offloaded: int
    output_offloaded: bool

    @property
    def required_bytes(self) -> int:
        """What must fit for the load to succeed at all: weights and KV cache."""
        return self.weights_bytes + self.kv_bytes

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.context_bytes

    def to_dict(self) -> dict:
        d = {k: round(v / MIB, 1) if k.endswith("_bytes") else v for k, v in asdict(self).items()}
        d = {k.replace("_bytes", "_mib"): v for k, v in d.items()}
        d["required_mib"] = round(self.required_bytes / MIB, 1)
        d["total_mib"] = round(self.total_bytes / MIB, 1)
        return d


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a GGUF header."""

    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]  # per layer
    key_length: int
    value_length: int
    n_ff: int
    n_vocab: int
    layer_bytes: tuple[int, ...]  # tensor bytes of each repeating block
    output_bytes: int  # output norm + output matrix (the token embedding again when tied)


def _int(kv: dict, key: str, default=None):
    v = kv.get(key)
    v = getattr(v, "value", v)
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return int(v) if v is not None else default


@lru_cache(maxsize=32)
def _shape_cached(path: str, size: int, mtime_ns: int) -> Shape:
    from .gguf import GGML_TYPE_SIZES, read_gguf_header

    h = read_gguf_header(path)
    kv = h.kv
    arch = getattr(kv.get("general.architecture"), "value", "") or ""
    p = f"{arch}."
    n_layers = _int(kv, p + "block_count", 0)
    n_embd = _int(kv, p + "embedding_length", 0)
    n_head = _int(kv, p + "attention.head_count", 1)
    n_head = max(n_head) if isinstance(n_head, tuple) else n_head
    hkv = _int(kv, p + "attention.head_count_kv", n_head)
    hkv = tuple(hkv) if isinstance(hkv, tuple) else (hkv,) * n_layers
    key_len = _int(kv, p + "attention.key_length", n_embd // max(n_head, 1))
    val_len = _int(kv, p + "attention.value_length", key_len)
    n_ff = _int(kv, p + "feed_forward_length", 4 * n_embd)
    n_ff = max(n_ff) if isinstance(n_ff, tuple) else n_ff
    toks = kv.get("tokenizer.ggml.tokens")
    n_vocab = _int(kv, p + "vocab_size", len(toks.value) if toks is not None else 0)

    def nbytes(t) -> int:
        block, size_ = GGML_TYPE_SIZES.get(t.ggml_type, (1, 0))
        return math.prod(t.shape) // block * size_

    layers = [0] * n_layers
    out = 0
    names = {t.name: t for t in h.tensors}
    for t in h.tensors:
        if t.name.startswith("blk."):
            i = int(t.name.split(".")[1])
            if 0 <= i < n_layers:
                layers[i] += nbytes(t)
        elif t.name.startswith("output"):
            out += nbytes(t)
    if "output.weight" not in names and "token_embd.weight" in names:
        out += nbytes(names["token_embd.weight"])  # tied output: llama.cpp duplicates it
    return Shape(n_layers=n_layers, n_embd=n_embd, n_head=n_head, n_head_kv=hkv, key_length=key_len,
                 value_length=val_len, n_ff=n_ff, n_vocab=n_vocab, layer_bytes=tuple(layers), output_bytes=out)


def shape(path: str | os.PathLike) -> Shape:
    """The model's Shape from its GGUF header (cached per file version)."""
    st = os.stat(path)
    return _shape_cached(os.fspath(path), st.st_size, st.st_mtime_ns)


def estimate(s: Shape, *, n_gpu_layers: int, n_ctx: int, n_ubatch: int, type_k: str = "f16",
             type_v: str = "f16", flash_attn: bool = False, offload_kqv: bool = True) -> Estimate:
    """The GPU memory a load with these parameters needs (see the module docstring)."""
    n_off = max(0, min(n_gpu_layers, s.n_layers))
    output = n_gpu_layers > s.n_layers
    offloaded = range(s.n_layers - n_off, s.n_layers)
    weights = sum(s.layer_bytes[i] for i in offloaded) + (s.output_bytes if output else 0)
    cells = -(-max(n_ctx, 1) // KV_PAD) * KV_PAD
    kv = 0.0
    if offload_kqv:
        for i in offloaded:
            kv += cells * s.n_head_kv[i] * (s.key_length * KV_BYTES[type_k] + s.value_length * KV_BYTES[type_v])
    compute = 0
    if n_off or output:
        logits = s.n_vocab * n_ubatch * 4 if output else 0
        scores = 0 if flash_attn else s.n_head * cells * n_ubatch * 4
        ffn = 3 * s.n_ff * n_ubatch * 4
        compute = max(logits, scores, ffn) + 4 * s.n_embd * n_ubatch * 4
    context = CONTEXT_MIB * MIB if (n_off or output) else 0
    return Estimate(weights_bytes=int(weights), kv_bytes=int(math.ceil(kv)), compute_bytes=int(compute),
                    context_bytes=context, n_layers_offloaded=n_off, output_offloaded=output)


def verdict(est: Estimate, free_bytes: int | None) -> str:
    """"fits", "close" or "no" (see the module docstring); "unknown" without a free-memory reading."""
    if free_bytes is None:
        return "unknown"
    if est.required_bytes > free_bytes:
        return "no"
    if est.total_bytes > CLOSE * free_bytes:
        return "close"
    return "fits"


def gpu_memory(cuda_visible_devices: str | None = None) -> dict | None:
    """Free and total memory of the GPUs llama.cpp will use (CUDA_VISIBLE_DEVICES, else all that
    NVML sees; llama.cpp splits offloaded layers over them), read with NVML. None when NVML is not
    usable (no driver, no GPU)."""
    from .telemetry import nvml

    usable, _ = nvml.availability()
    if not usable:
        return None
    import pynvml

    try:
        nvml.init()
        try:
            n = nvml._call(pynvml.nvmlDeviceGetCount)
            vis = cuda_visible_devices if cuda_visible_devices is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
            wanted: list = list(range(n)) if vis is None else [v.strip() for v in vis.split(",") if v.strip()]
            free = total = 0
            ids = []
            for w in wanted:
                h = (nvml._call(pynvml.nvmlDeviceGetHandleByIndex, int(w)) if str(w).isdigit()
                     else nvml._call(pynvml.nvmlDeviceGetHandleByUUID, str(w)))
                m = nvml._call(pynvml.nvmlDeviceGetMemoryInfo, h)
                free += int(m.free)
                total += int(m.total)
                ids.append(int(nvml._call(pynvml.nvmlDeviceGetIndex, h)))
            if not ids:
                return None
            return {"free_bytes": free, "total_bytes": total, "gpus": ids}
        finally:
            nvml.shutdown()
    except Exception:  # a GPU that NVML cannot read: no verdict rather than a wrong one
        return None


def describe(est: Estimate, mem: dict) -> str:
    """One line: what the load needs against what is free."""
    gpus = ",".join(str(i) for i in mem["gpus"])
    return (f"needs at least {est.required_bytes / MIB:,.0f} MiB of VRAM (weights {est.weights_bytes / MIB:,.0f} + "
            f"KV cache {est.kv_bytes / MIB:,.0f}; about {est.total_bytes / MIB:,.0f} MiB with compute buffers and "
            f"the CUDA context) for {est.n_layers_offloaded} offloaded layers"
            f"{' and the output layer' if est.output_offloaded else ''}, but GPU {gpus} has "
            f"{mem['free_bytes'] / MIB:,.0f} MiB free of {mem['total_bytes'] / MIB:,.0f} MiB")


def preflight(key, *, evict=None) -> dict | None:
    """Judge a load (a plan.LoadKey) before it happens, on a build with GPU offload. Returns the
    record for run.json ({"estimate", "verdict", "free_mib_before", "total_mib", "gpus"}), or None
    when nothing is offloaded or NVML cannot say. Raises VramInsufficient when weights and KV cache
    alone exceed the free memory; `evict()` (free the other loaded models) is tried once first."""
    if key.n_gpu_layers <= 0:
        return None
    try:
        s = shape(key.model_path)
    except Exception:  # an unreadable header fails the load itself with its own message
        return None
    est = estimate(s, n_gpu_layers=key.n_gpu_layers, n_ctx=key.n_ctx, n_ubatch=key.n_ubatch,
                   type_k=key.type_k, type_v=key.type_v, flash_attn=key.flash_attn == "on",
                   offload_kqv=key.offload_kqv)
    mem = gpu_memory()
    if mem is None:
        return {"estimate": est.to_dict(), "verdict": "unknown", "free_mib_before": None, "total_mib": None,
                "gpus": None}
    v = verdict(est, mem["free_bytes"])
    if v != "fits" and evict is not None and evict():
        mem = gpu_memory() or mem
        v = verdict(est, mem["free_bytes"])
    if v == "no":
        raise VramInsufficient(describe(est, mem))
    return {"estimate": est.to_dict(), "verdict": v, "free_mib_before": round(mem["free_bytes"] / MIB, 1),
            "total_mib": round(mem["total_bytes"] / MIB, 1), "gpus": mem["gpus"]}


def measured(before: dict | None) -> dict | None:
    """`before` (preflight's record) with what the load measurably took: the drop in free memory
    on the same GPUs (`measured_mib`), beside the estimate."""
    if not before or before.get("free_mib_before") is None:
        return before
    mem = gpu_memory()
    if mem is None:
        return before
    return before | {"measured_mib": round(before["free_mib_before"] - mem["free_bytes"] / MIB, 1)}
