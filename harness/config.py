"""Typed, validated run configuration.

`validate(cfg)` is a pure function over the composed (plain-dict) config: no model load, no GPU
probe, no file access. Every error names the key path, the value and what is allowed, in one line:

    runtime.n_ctx: must be a positive integer, got -5

Checks that need the file system (does the model file exist, is it GGUF) live in `plan.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

# KV-cache element types accepted by llama.cpp for type_k/type_v, by their GGML names.
KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8, "bf16": 30}
FLASH_ATTN = ("on", "off", "auto")
TIMING = ("auto", "python", "native")
NVML_MODES = ("auto", "on", "off")
NARRATIVE_MODES = ("none", "llm")  # report.narrative: llm = written by the local model, fact-checked
WORKLOAD_KINDS = ("text", "random_tokens", "fill_to_length")
MODEL_SOURCES = ("package", "file")
MODEL_WEIGHTS = ("real", "twin")  # model.weights: the real file, or its performance twin (synthetic weights)
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class ConfigError(ValueError):
    """A config value that is not allowed. `str()` is the one-line message the CLI prints."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {allowed}, got {value!r}")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str = "file"  # package: assembled from a PyPI package; file: a local GGUF
    path: str | None = None  # explicit path; wins over everything else
    files: tuple[str, ...] = ()  # file names or globs looked up in $HARNESS_MODELS and ./models
    package: str | None = None
    family: str | None = None
    obtain: str | None = None  # how to get the file, printed when it is missing
    weights: str = "real"  # real: the model file; twin: a cached performance twin (synthetic weights)
    twin_spec: str | None = None  # architecture spec a twin is made from when no real file is found
    twin_seed: int = 0  # seed of a twin's synthetic weights


@dataclass(frozen=True)
class RuntimeConfig:
    n_gpu_layers: str | int = "all"  # "all", -1, N >= 0, or "NN%" of the model's layers
    n_ctx: int = 2048
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int | None = None  # None: llama.cpp's default
    n_threads_batch: int | None = None
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    use_mmap: bool = True
    offload_kqv: bool = True
    require_gpu: bool = False


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int = 42


@dataclass(frozen=True)
class WorkloadConfig:
    name: str
    kind: str = "text"
    prompt: str = ""
    system: str | None = None
    chat_template: bool = True
    max_tokens: int = 64
    prompt_tokens: int | None = None  # target prompt length for random_tokens / fill_to_length


@dataclass(frozen=True)
class BenchConfig:
    warmup: int | str = "auto"  # untimed repetitions, or "auto": until two agree (harness.measure.WARMUP_*)
    repetitions: int = 5
    ignore_eos: bool = True
    timing: str = "auto"
    allow_shared_device: bool = False  # run even when another harness job holds the device
    point_timeout_s: float | None = 600.0  # the engine worker may go this long without an answer (None: no limit)
    rounds: int | str = "auto"  # passes over the sweep (auto: one repetition per point per round)
    order_seed: int = 0  # seed of the shuffled order of load groups and points in each round
    control: bool = True  # re-measure the sweep's first point at the start and end of every round (drift)


@dataclass(frozen=True)
class TelemetryConfig:
    nvml: str = "auto"  # auto: NVML when available; on: required; off: host only
    interval_ms: int = 100
    gpu_index: int | None = None  # None: follow CUDA_VISIBLE_DEVICES, else GPU 0
    host: bool = True


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    runtime: RuntimeConfig
    sampling: SamplingConfig
    workload: WorkloadConfig
    bench: BenchConfig
    telemetry: TelemetryConfig = TelemetryConfig()
    results_dir: str = "results"
    sweep_name: str = "run"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        return validate(d)


# --- small typed readers: each returns the value or raises ConfigError naming the key -----------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float))) and not isinstance(v, bool)


def _int(section: Mapping, prefix: str, key: str, *, minimum: int | None = None,
         optional: bool = False, default: Any = None) -> int | None:
    v = section.get(key, default)
    if v is None and optional:
        return None
    if not _is_int(v) or (minimum is not None and v < minimum):
        what = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ConfigError(f"{prefix}.{key}", v, f"must be {what}" + (" or null" if optional else ""))
    return v


def _float(section: Mapping, prefix: str, key: str, default: float) -> float:
    v = section.get(key, default)
    if not _is_num(v) or not math.isfinite(v):  # NaN and inf are not settings
        raise ConfigError(f"{prefix}.{key}", v, "must be a finite number")
    return float(v)


def _bool(section: Mapping, prefix: str, key: str, default: bool) -> bool:
    v = section.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{prefix}.{key}", v, "must be true or false")
    return v


def _choice(section: Mapping, prefix: str, key: str, allowed: tuple[str, ...], default: str) -> str:
    v = section.get(key, default)
    # YAML 1.1 reads bare on/off as booleans; accept them for on|off|auto switches.
    if isinstance(v, bool) and "on" in allowed:
        v = "on" if v else "off"
    if not isinstance(v, str) or v not in allowed:
        raise ConfigError(f"{prefix}.{key}", v, "must be one of " + "|".join(allowed))
    return v


def _str(section: Mapping, prefix: str, key: str, *, optional: bool = False, default: Any = None) -> str | None:
    v = section.get(key, default)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise ConfigError(f"{prefix}.{key}", v, "must be a string" + (" or null" if optional else ""))
    return v


def parse_n_gpu_layers(v: Any) -> str | int:
    """Normalise `runtime.n_gpu_layers`: "all", -1, an integer >= 0, or "NN%" (0-100)."""
    if _is_int(v) and v >= -1:
        return v
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("all", "max"):
            return "all"
        if re.fullmatch(r"-?\d+", s) and int(s) >= -1:
            return int(s)
        m = _PERCENT.match(s)
        if m and 0.0 <= float(m.group(1)) <= 100.0:
            return f"{float(m.group(1)):g}%"
    raise ConfigError("runtime.n_gpu_layers", v,
                      "must be 'all', -1, a non-negative integer or a percentage like '50%'")


def _section(cfg: Mapping, name: str) -> Mapping:
    s = cfg.get(name)
    if not isinstance(s, Mapping):
        raise ConfigError(name, s, "must be a config group (mapping)")
    return s


def _known(section: Mapping, prefix: str, cls: type) -> None:
    allowed = {f.name for f in fields(cls)}
    for k in section:
        if k not in allowed:
            raise ConfigError(f"{prefix}.{k}", section[k], "is not a known key; known: " + ", ".join(sorted(allowed)))


def _int_or_auto(section: Mapping, prefix: str, key: str, minimum: int) -> int | str:
    v = section.get(key, "auto")
    if v == "auto":
        return "auto"
    if not _is_int(v) or v < minimum:
        raise ConfigError(f"{prefix}.{key}", v, f"must be 'auto' or an integer >= {minimum}")
    return int(v)


def _timeout(section: Mapping, prefix: str, key: str, default: float) -> float | None:
    v = section.get(key, default)
    if v is None:
        return None
    if not _is_num(v) or not math.isfinite(v) or v <= 0:
        raise ConfigError(f"{prefix}.{key}", v, "must be a positive number of seconds or null (no limit)")
    return float(v)


def validate(cfg: Mapping[str, Any]) -> RunConfig:
    """Check a composed config (plain dict, e.g. OmegaConf.to_container(cfg, resolve=True)).

    Returns the typed RunConfig or raises ConfigError for the first bad value. Pure: it reads
    nothing but its argument.
    """
    m, r, s, w, b = (_section(cfg, k) for k in ("model", "runtime", "sampling", "workload", "bench"))
    for sec, name, cls in ((m, "model", ModelConfig), (r, "runtime", RuntimeConfig),
                           (s, "sampling", SamplingConfig), (w, "workload", WorkloadConfig),
                           (b, "bench", BenchConfig)):
        _known(sec, name, cls)

    files = m.get("files") or ()
    if isinstance(files, str):
        files = (files,)
    if not all(isinstance(f, str) for f in files):
        raise ConfigError("model.files", files, "must be a list of file names or globs")
    path = _str(m, "model", "path", optional=True)
    if path is not None and not path.strip():
        raise ConfigError("model.path", path, "must be a file path or null")
    model = ModelConfig(
        name=_str(m, "model", "name", default="custom"),
        source=_choice(m, "model", "source", MODEL_SOURCES, "file"),
        path=path,
        files=tuple(files),
        package=_str(m, "model", "package", optional=True),
        family=_str(m, "model", "family", optional=True),
        obtain=_str(m, "model", "obtain", optional=True),
        weights=_choice(m, "model", "weights", MODEL_WEIGHTS, "real"),
        twin_spec=_str(m, "model", "twin_spec", optional=True),
        twin_seed=_int(m, "model", "twin_seed", minimum=0, default=0),
    )
    if model.twin_spec is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", model.twin_spec):
        raise ConfigError("model.twin_spec", model.twin_spec, "must be an architecture spec name (e.g. gemma3_1b) or null")
    if model.source == "file" and not model.path and not model.files:
        raise ConfigError("model.path", None, "must name a GGUF file (or set model.files) for a file model")

    type_k = _str(r, "runtime", "type_k", default="f16")
    type_v = _str(r, "runtime", "type_v", default="f16")
    for key, v in (("type_k", type_k), ("type_v", type_v)):
        if v not in KV_TYPES:
            raise ConfigError(f"runtime.{key}", v, "must be one of " + "|".join(KV_TYPES))
    runtime = RuntimeConfig(
        n_gpu_layers=parse_n_gpu_layers(r.get("n_gpu_layers", "all")),
        n_ctx=_int(r, "runtime", "n_ctx", minimum=1, default=2048),
        n_batch=_int(r, "runtime", "n_batch", minimum=1, default=512),
        n_ubatch=_int(r, "runtime", "n_ubatch", minimum=1, default=512),
        n_threads=_int(r, "runtime", "n_threads", minimum=1, optional=True),
        n_threads_batch=_int(r, "runtime", "n_threads_batch", minimum=1, optional=True),
        flash_attn=_choice(r, "runtime", "flash_attn", FLASH_ATTN, "auto"),
        type_k=type_k,
        type_v=type_v,
        use_mmap=_bool(r, "runtime", "use_mmap", True),
        offload_kqv=_bool(r, "runtime", "offload_kqv", True),
        require_gpu=_bool(r, "runtime", "require_gpu", False),
    )
    if runtime.n_ubatch > runtime.n_batch:
        raise ConfigError("runtime.n_ubatch", runtime.n_ubatch,
                          f"must not exceed runtime.n_batch ({runtime.n_batch})")

    sampling = SamplingConfig(
        temperature=_float(s, "sampling", "temperature", 0.8),
        top_p=_float(s, "sampling", "top_p", 0.95),
        top_k=_int(s, "sampling", "top_k", minimum=0, default=40),
        min_p=_float(s, "sampling", "min_p", 0.05),
        repeat_penalty=_float(s, "sampling", "repeat_penalty", 1.0),
        seed=_int(s, "sampling", "seed", minimum=0, default=42),
    )
    if sampling.temperature < 0:
        raise ConfigError("sampling.temperature", sampling.temperature, "must be >= 0 (0 is greedy)")
    if not 0 < sampling.top_p <= 1:
        raise ConfigError("sampling.top_p", sampling.top_p, "must be in (0, 1]")
    if not 0 <= sampling.min_p <= 1:
        raise ConfigError("sampling.min_p", sampling.min_p, "must be in [0, 1]")
    if sampling.repeat_penalty <= 0:
        raise ConfigError("sampling.repeat_penalty", sampling.repeat_penalty, "must be > 0 (1.0 is off)")

    workload = WorkloadConfig(
        name=_str(w, "workload", "name", default="custom"),
        kind=_choice(w, "workload", "kind", WORKLOAD_KINDS, "text"),
        prompt=_str(w, "workload", "prompt", default=""),
        system=_str(w, "workload", "system", optional=True),
        chat_template=_bool(w, "workload", "chat_template", True),
        max_tokens=_int(w, "workload", "max_tokens", minimum=1, default=64),
        prompt_tokens=_int(w, "workload", "prompt_tokens", minimum=1, optional=True),
    )
    if workload.kind in ("random_tokens", "fill_to_length") and workload.prompt_tokens is None:
        raise ConfigError("workload.prompt_tokens", None, f"must be set for kind {workload.kind}")
    if workload.kind != "random_tokens" and not workload.prompt.strip():
        raise ConfigError("workload.prompt", workload.prompt, "must be a non-empty prompt")

    bench = BenchConfig(
        warmup=_int_or_auto(b, "bench", "warmup", minimum=0),
        repetitions=_int(b, "bench", "repetitions", minimum=1, default=5),
        ignore_eos=_bool(b, "bench", "ignore_eos", True),
        timing=_choice(b, "bench", "timing", TIMING, "auto"),
        allow_shared_device=_bool(b, "bench", "allow_shared_device", False),
        point_timeout_s=_timeout(b, "bench", "point_timeout_s", 600.0),
        rounds=_int_or_auto(b, "bench", "rounds", minimum=1),
        order_seed=_int(b, "bench", "order_seed", minimum=0, default=0),
        control=_bool(b, "bench", "control", True),
    )

    t = cfg.get("telemetry") or {}
    if not isinstance(t, Mapping):
        raise ConfigError("telemetry", t, "must be a config group (mapping)")
    _known(t, "telemetry", TelemetryConfig)
    telemetry = TelemetryConfig(
        nvml=_choice(t, "telemetry", "nvml", NVML_MODES, "auto"),
        interval_ms=_int(t, "telemetry", "interval_ms", minimum=10, default=100),
        gpu_index=_int(t, "telemetry", "gpu_index", minimum=0, optional=True),
        host=_bool(t, "telemetry", "host", True),
    )

    rep = cfg.get("report") or {}
    if not isinstance(rep, Mapping) or set(rep) - {"auto", "narrative"}:
        raise ConfigError("report", rep, "must be a mapping with the keys auto and narrative")
    _bool(rep, "report", "auto", True)
    _choice(rep, "report", "narrative", NARRATIVE_MODES, "none")

    results_dir = cfg.get("results_dir", "results")
    if not isinstance(results_dir, str) or not results_dir.strip():
        raise ConfigError("results_dir", results_dir, "must be a directory path")
    sweep_name = cfg.get("sweep_name", "run")
    if not isinstance(sweep_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", sweep_name):
        raise ConfigError("sweep_name", sweep_name,
                          "must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
    return RunConfig(model=model, runtime=runtime, sampling=sampling, workload=workload,
                     bench=bench, telemetry=telemetry, results_dir=results_dir, sweep_name=sweep_name)


def writable_dir_problem(path: str) -> str | None:
    """Why folders cannot be created and written under `path` (existing or not), in words naming
    the path that stands in the way; None when they can. Checked before anything is measured, so a
    sweep never loads a model whose results would have nowhere to go."""
    import errno
    import os
    import stat
    from pathlib import Path

    p = Path(os.path.abspath(os.path.expanduser(path)))
    for q in (p, *p.parents):  # the nearest part of the path that exists
        try:
            st = os.stat(q)
        except (FileNotFoundError, NotADirectoryError):
            continue  # missing, or under a file: the file shows further up
        except OSError as e:
            return f"{q}: {e.strerror or e}"
        if stat.S_ISREG(st.st_mode):
            return f"{q} is a file, not a directory"
        if not stat.S_ISDIR(st.st_mode):
            return f"{q} is not a directory"
        if not os.access(q, os.W_OK | os.X_OK):
            try:
                read_only = bool(os.statvfs(q).f_flag & os.ST_RDONLY)
            except OSError:
                read_only = False
            return f"{q} is not writable: {os.strerror(errno.EROFS if read_only else errno.EACCES).lower()}"
        return None
    return None
