"""From a validated RunConfig to what will actually run: the model file and its metadata, the
effective offload and context, and the key that decides whether a loaded model can be reused.

Everything here happens before a model loads. The one engine fact it needs (does this build
offload to a GPU) is passed in, so the planning itself stays testable without llama.cpp.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from fractions import Fraction
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .config import ConfigError, RunConfig
from .gguf import GGUFError, GGUFInfo, NotARegularFile, read_gguf_info
from .modelfile import BadModelsDir, ModelNotFound
from .weights import metadata_twin, resolve_weights


@dataclass(frozen=True)
class LoadKey:
    """Every parameter that requires a reload when it changes. Equal keys share a loaded model."""

    model_path: str
    n_gpu_layers: int
    n_ctx: int
    n_batch: int
    n_ubatch: int
    n_threads: int | None
    n_threads_batch: int | None
    flash_attn: str
    type_k: str
    type_v: str
    use_mmap: bool
    offload_kqv: bool


@dataclass(frozen=True)
class Plan:
    config: RunConfig
    model_path: str
    gguf: GGUFInfo
    n_gpu_layers_requested: str | int
    n_gpu_layers_effective: int
    n_offloadable_layers: int  # repeating layers + the output layer
    n_ctx_effective: int
    gpu_offload_supported: bool
    load_key: LoadKey
    warnings: tuple[str, ...] = field(default=())
    twin: dict | None = None  # weights.twin_record of a performance twin (synthetic weights); None: real
    notes: tuple[str, ...] = field(default=())  # one-line notices for the sweep (a twin made or used)

    @property
    def effective_id(self) -> str:
        """Hash of the effective configuration: points with equal ids measure the same thing."""
        c = self.config
        eff = {
            "load": asdict(self.load_key) | {"model_path": None, "model_size": self.gguf.size_bytes,
                                             "n_ctx": self.n_ctx_effective},
            # a twin measures its real model's shape, not the same file: never the same configuration
            "model": [self.gguf.architecture, self.gguf.size_bytes, self.gguf.n_tensors]
            + (["twin", self.twin.get("twin_of"), self.twin.get("twin_seed")] if self.twin else []),
            "sampling": asdict(c.sampling),
            "workload": asdict(c.workload),
            "bench": asdict(c.bench),
        }
        return hashlib.sha256(json.dumps(eff, sort_keys=True).encode()).hexdigest()[:16]

    def effective_dict(self) -> dict:
        return {
            "model_path": self.model_path,
            "n_gpu_layers_requested": self.n_gpu_layers_requested,
            "n_gpu_layers_effective": self.n_gpu_layers_effective,
            "n_offloadable_layers": self.n_offloadable_layers,
            "n_ctx_requested": self.config.runtime.n_ctx,
            "n_ctx_effective": self.n_ctx_effective,
            "n_ctx_train": self.gguf.n_ctx_train,
            "gpu_offload_supported": self.gpu_offload_supported,
            "effective_id": self.effective_id,
            "warnings": list(self.warnings),
        }


def check_model_file(path: Path) -> GGUFInfo:
    """Read the GGUF header of `path`; raise ConfigError (key model.path) when it is unusable."""
    try:
        return read_gguf_info(path)
    except IsADirectoryError:
        raise ConfigError("model.path", str(path), "must be a regular GGUF file, not a directory") from None
    except NotARegularFile as e:
        raise ConfigError("model.path", str(path), f"must be a regular GGUF file, not a {e.kind}") from None
    except FileNotFoundError:
        raise ConfigError("model.path", str(path), "must be an existing GGUF file") from None
    except PermissionError:
        raise ConfigError("model.path", str(path), "must be a readable file") from None
    except GGUFError as e:
        raise ConfigError("model.path", str(path), f"must be a valid GGUF file ({_tail(e)})") from None


def _tail(e: Exception) -> str:
    # GGUFError messages start with the path, which ConfigError already names.
    msg = str(e)
    return msg.split(": ", 1)[1] if ": " in msg else msg


def effective_offload(requested: str | int, n_layers: int) -> int:
    """Layers llama.cpp will actually offload for a request on a model with `n_layers` blocks.

    llama.cpp offloads the repeating blocks plus the output layer, so n_layers + 1 is "all";
    anything above it, and -1, is the same configuration. A percentage is of the offloadable
    layers, rounded to the nearest layer.
    """
    total = n_layers + 1
    if requested == "all" or requested == -1:
        return total
    if isinstance(requested, str) and requested.endswith("%"):
        # Exact decimal arithmetic: 58% of 25 is 14.5 and rounds up to 15, as written.
        share = Fraction(Decimal(requested[:-1])) / 100 * total
        return min(total, math.floor(share + Fraction(1, 2)))
    return min(int(requested), total)


def default_threads() -> int:
    """llama.cpp's own default: one thread per physical core (llama-cpp-python would use half the
    logical CPUs, which on small machines is half the machine)."""
    import os

    import psutil

    n = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        n = min(n, len(os.sched_getaffinity(0)))
    return max(1, n)


# Bytes per element of the KV-cache types (ggml block size / elements per block).
_KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                  "q4_1": 20 / 32, "q4_0": 18 / 32}


def kv_cache_bytes(info: GGUFInfo, n_ctx: int, type_k: str, type_v: str) -> int | None:
    """Size of llama.cpp's KV cache for `n_ctx` cells with every layer at full size (as llama.cpp
    allocates sliding-window layers here), from the GGUF's attention metadata; None when the
    file does not say."""
    md, arch = info.metadata, info.architecture
    n_head_kv = info.n_head_kv or info.n_head
    if not (info.n_layers and n_head_kv):
        return None
    head = info.n_embd // info.n_head if info.n_embd and info.n_head else None
    k = md.get(f"{arch}.attention.key_length", head)
    v = md.get(f"{arch}.attention.value_length", head)
    if not isinstance(k, int) or not isinstance(v, int):
        return None
    per_cell = info.n_layers * n_head_kv * (k * _KV_TYPE_BYTES[type_k] + v * _KV_TYPE_BYTES[type_v])
    return int(n_ctx * per_cell)


def _check_kv_fits(cfg: RunConfig, info: GGUFInfo, ngl: int, host_memory_bytes: int | None) -> None:
    """A KV cache in host memory larger than the host's memory is refused before anything loads.
    llama.cpp would not fail cleanly: it fills its per-cell bookkeeping (or zeroes an
    overcommitted buffer) until the kernel kills the process, and the whole sweep with it. A KV
    cache on the GPU is left to llama.cpp, whose failed device allocation is an ordinary load error."""
    r = cfg.runtime
    if ngl > 0 and r.offload_kqv:
        return
    need = kv_cache_bytes(info, r.n_ctx, r.type_k, r.type_v)
    if need is None:
        return
    if host_memory_bytes is None:
        import psutil

        host_memory_bytes = psutil.virtual_memory().total
    if need > host_memory_bytes:
        raise ConfigError("runtime.n_ctx", r.n_ctx,
                          f"must fit its KV cache in host memory: {need / 2**30:.1f} GiB needed "
                          f"({r.type_k}/{r.type_v}), this host has {host_memory_bytes / 2**30:.1f} GiB")


def make_plan(cfg: RunConfig, *, gpu_offload_supported: bool, model_path: Path | None = None,
              host_memory_bytes: int | None = None) -> Plan:
    """Resolve the model file and the effective parameters. Raises ConfigError for a model that
    cannot be used, for a GPU requirement the build cannot meet and for a host-memory KV cache
    larger than the host's memory (`host_memory_bytes`, default: this host's total).

    With model.weights=twin the model resolves to its cached performance twin, made here when it
    is not cached yet (weights.resolve_weights); `notes` then says so in one line."""
    notes: tuple[str, ...] = ()
    if model_path is None:
        try:
            w = resolve_weights(cfg.model)
        except BadModelsDir as e:
            raise ConfigError("HARNESS_MODELS", e.entry, e.allowed) from None
        except ModelNotFound as e:
            raise ConfigError("model.path" if cfg.model.path else "model", cfg.model.path or cfg.model.name,
                              f"not found: {e}") from None
        model_path = w.path
        notes = tuple(n for n in (w.note(),) if n)
    info = check_model_file(Path(model_path))
    twin = metadata_twin(info.metadata)  # marked whatever the config says: a twin file is never taken for real
    if twin is not None and not notes:
        notes = (f"model {cfg.model.name}: {model_path} is a performance twin of {twin.get('twin_of')} "
                 f"(synthetic weights, seed {twin.get('twin_seed')})",)
    warnings: list[str] = []
    n_layers = info.n_layers or 0
    r = cfg.runtime
    ngl = effective_offload(r.n_gpu_layers, n_layers)
    if ngl > 0 and not gpu_offload_supported:
        msg = (f"runtime.n_gpu_layers={r.n_gpu_layers} asks for GPU offload, but this llama.cpp build "
               "has no GPU backend: running on the CPU (n_gpu_layers_effective=0)")
        if r.require_gpu:
            raise ConfigError("runtime.require_gpu", True,
                              "cannot be met: this llama.cpp build has no GPU offload support "
                              "(rebuild with HARNESS_CUDA=1 make setup on a machine with an NVIDIA GPU)")
        warnings.append(msg)
        ngl = 0
    elif isinstance(r.n_gpu_layers, int) and r.n_gpu_layers > n_layers + 1:
        warnings.append(f"runtime.n_gpu_layers={r.n_gpu_layers} exceeds the model's {n_layers + 1} offloadable "
                        f"layers: same configuration as n_gpu_layers=all")
    n_ctx = r.n_ctx
    if n_ctx > 2**32 - 1:  # llama.cpp's n_ctx is 32-bit: a larger value would silently wrap around
        raise ConfigError("runtime.n_ctx", n_ctx, f"must be at most {2**32 - 1} (llama.cpp's context size is 32-bit)")
    if info.n_ctx_train and n_ctx > info.n_ctx_train:
        warnings.append(f"runtime.n_ctx={n_ctx} exceeds the model's trained context {info.n_ctx_train}")
    _check_kv_fits(cfg, info, ngl, host_memory_bytes)
    w = cfg.workload
    if w.prompt_tokens is not None and w.prompt_tokens + w.max_tokens > n_ctx:
        raise ConfigError("workload.prompt_tokens", w.prompt_tokens,
                          f"plus workload.max_tokens ({w.max_tokens}) must fit in runtime.n_ctx ({n_ctx})")
    key = LoadKey(
        model_path=str(Path(model_path).resolve()), n_gpu_layers=ngl, n_ctx=n_ctx,
        n_batch=r.n_batch, n_ubatch=r.n_ubatch, n_threads=r.n_threads or default_threads(),
        n_threads_batch=r.n_threads_batch or r.n_threads or default_threads(),
        flash_attn=r.flash_attn, type_k=r.type_k, type_v=r.type_v, use_mmap=r.use_mmap,
        offload_kqv=r.offload_kqv,
    )
    return Plan(config=cfg, model_path=str(model_path), gguf=info, n_gpu_layers_requested=r.n_gpu_layers,
                n_gpu_layers_effective=ngl, n_offloadable_layers=n_layers + 1, n_ctx_effective=n_ctx,
                gpu_offload_supported=gpu_offload_supported, load_key=key, warnings=tuple(warnings),
                twin=twin, notes=notes)
