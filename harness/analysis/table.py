"""The tidy sample table every analysis works on: one row per measured sample (a repetition of
our runs, one call of an Ollama-style file, one llama-bench test), in our metric names.

Columns are declared once here (name, dtype, meaning); importers fill what their format knows and
leave the rest missing (NaN / None), never 0. A failed sample has status "failed" and its error:
it is counted, never averaged in.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import registry
from ..fields import twin_label
from .formats.llamabench_desc import model_desc


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str  # "str" | "float" | "int" | "bool"
    kind: str  # "id" | "group" (hardware/model/engine: never pooled across) | "param" | "metric" | "meta"
    doc: str


#: The metric columns, in order (their meaning and unit are the registry's): per-sample metrics,
#: then those measured once per run.
METRIC_NAMES = ("load_ms", "ttft_ms", "prompt_eval_ms", "prefill_tps", "decode_ms", "decode_tps", "e2e_ms",
                  "n_gen_tokens", "itl_p50_ms", "itl_p99_ms", "energy_per_token_j", "vram_used_mib",
                  "gpu_util_pct", "power_w", "bandwidth_efficiency")


def _metric(name: str) -> Column:
    m = registry.get(name)
    scope = ", run-level" if name in registry.RUN_LEVEL_METRICS else ""
    return Column(name, "float", "metric", f"{m.definition} ({m.unit}{scope})")


COLUMNS: tuple[Column, ...] = (
    # identity and provenance
    Column("source_format", "str", "id", "harness | llama-bench-json | llama-bench-jsonl | llama-bench-csv | "
           "llama-bench-sql | pytest-benchmark | ollama-calls | ollama-config-calls | ollama-api | ollama-verbose | "
           "llama-server | vllm-bench-serve | guidellm | aiperf-records | optimum-benchmark | csv | json (read by "
           "meaning, harness.analysis.columns)"),
    Column("source_file", "str", "id", "file the sample came from (relative to the analysed path)"),
    Column("run_id", "str", "id", "one configuration point of one invocation (our run_id, or a synthetic id)"),
    Column("sweep", "str", "id", "sweep name / folder"),
    Column("job", "str", "id", "job / config name"),
    Column("rep", "int", "id", "repetition index inside the run (0-based)"),
    Column("round", "int", "meta", "sweep round the sample was measured in (bench.rounds); empty when not scheduled"),
    Column("order", "int", "meta", "place of the sample in its invocation's execution order; empty when not scheduled"),
    Column("status", "str", "id", "ok | failed"),
    Column("error", "str", "id", "error text of a failed sample"),
    Column("started_at", "str", "meta", "ISO time of the run, when known"),
    # never pooled across these
    Column("hardware", "str", "group", "CPU model + GPU name(s) (not the host name: identical machines pool), e.g. 'AMD EPYC | NVIDIA H100'"),
    Column("model", "str", "group", "model name or file name; a performance twin's is marked, e.g. 'gemma3_1b (twin)'"),
    Column("model_sha256", "str", "group", "model file hash when known"),
    Column("model_desc", "str", "meta", "the model as llama.cpp describes it (llama_model_desc: architecture, "
           "size class, file type), e.g. 'gemma3 270M Q4_K - Medium'"),
    Column("engine", "str", "group", "engine and build, e.g. 'llama-cpp-python 0.3.36 cpu'"),
    # the model's weights: real, or a performance twin's (synthetic: the real shape's speed, no text)
    Column("weights", "str", "meta", "real | twin (a performance twin: synthetic weights); empty when unknown"),
    Column("twin_of", "str", "meta", "what a twin is a twin of (its source model or architecture spec)"),
    Column("weight_bytes", "float", "meta", "bytes of the model's tensor data: the least read per generated "
           "token (the roofline's bytes per token)"),
    # parameters (requested and effective)
    Column("n_gpu_layers", "str", "param", "requested offload as written (all, -1, 40, 50%)"),
    Column("n_gpu_layers_effective", "float", "param", "layers actually offloaded (NaN when unknown)"),
    Column("n_ctx", "float", "param", "context size requested"),
    Column("n_ctx_effective", "float", "param", "context size the engine allocated"),
    Column("n_batch", "float", "param", ""),
    Column("n_ubatch", "float", "param", ""),
    Column("n_threads", "float", "param", ""),
    Column("flash_attn", "str", "param", "on | off | auto (requested)"),
    Column("type_k", "str", "param", ""),
    Column("type_v", "str", "param", ""),
    Column("temperature", "float", "param", ""),
    Column("top_p", "float", "param", ""),
    Column("top_k", "float", "param", ""),
    Column("min_p", "float", "param", ""),
    Column("repeat_penalty", "float", "param", ""),
    Column("workload", "str", "param", "workload name / prompt label"),
    Column("n_prompt_tokens", "float", "param", "prompt length in tokens"),
    Column("max_tokens", "float", "param", "generation budget"),
    Column("request_rate", "float", "param", "requests per second a load generator sent (inf: all at once)"),
    Column("concurrency", "float", "param", "requests in flight at once (a load generator's limit)"),
    Column("offload_param", "str", "meta", "the name the source gave its offload parameter (num_gpu, ngl, "
           "n_gpu_layers), when it is not ours"),
    Column("effective_id", "str", "param", "equal ids = the same effective configuration"),
    # metrics (per sample; run-level ones repeat on each sample of the run)
    _metric("load_ms"),
    Column("load_reused", "bool", "meta", "True when the run reused a model loaded by an earlier point "
           "(its load_ms is then empty: the load belongs to the point that made it)"),
    *(_metric(n) for n in METRIC_NAMES if n != "load_ms"),
    Column("throttled", "bool", "meta", "throttle reasons other than idle seen during the run"),
    Column("fan_reported", "bool", "meta", "False when the GPU did not report fan speed"),
    Column("gpu_shared", "bool", "meta", "another process used the sampled GPU"),
    Column("weights_huge_share", "float", "meta", "share of the mapped model file the kernel mapped with 2 MiB "
           "pages after the load (run.json load.mapping; empty without mmap): it follows how the file was last "
           "written or read, and moves CPU decode speed"),
)

#: Runs of one model whose weights_huge_share differ by more than this are named (report risks,
#: compare notes): where the weights sit in memory moves CPU decode speed.
HUGE_SHARE_SPREAD = 0.25

NAMES = tuple(c.name for c in COLUMNS)
GROUP_KEYS = tuple(c.name for c in COLUMNS if c.kind == "group")
PARAMS = tuple(c.name for c in COLUMNS if c.kind == "param")
METRICS = tuple(c.name for c in COLUMNS if c.kind == "metric")
BY_NAME = {c.name: c for c in COLUMNS}


#: The table of pre-aggregated values (means, percentiles of n requests the file does not list):
#: one row per value a file claims, never a sample (analysis.aggregates).
AGGREGATE_COLUMNS = ("source_format", "source_file", "run_id", "started_at", *GROUP_KEYS, "job",
                     *(p for p in PARAMS if p != "effective_id"), "offload_param", "metric", "stat", "value",
                     "unit", "n_claimed", "note")


def empty_row() -> dict:
    return dict.fromkeys(NAMES)


def frame(rows: list[dict]):
    """A pandas DataFrame with every column, in order, with the declared dtypes."""
    import pandas as pd

    # Column by column into one frame without a shared object block: a large table built from
    # chunks keeps no per-row Python objects alive.
    cols = {}
    for c in COLUMNS:
        s = pd.Series([r.get(c.name) for r in rows], dtype=object)
        if c.dtype == "float":
            cols[c.name] = pd.to_numeric(s, errors="coerce").astype("float64")
        elif c.dtype == "int":
            cols[c.name] = pd.to_numeric(s, errors="coerce").astype("Int64")
        elif c.dtype == "bool":
            cols[c.name] = s.astype("boolean")
        else:
            cols[c.name] = s.astype("string")
    return pd.DataFrame(cols, columns=list(NAMES), copy=False)


def concat(chunks: list) -> "pd.DataFrame":  # noqa: F821 - pandas is imported where it is used
    """One frame of the chunk frames `frame` made (emptied from the list as it goes): column by
    column, so that at most one column exists twice at a time (a large table is not copied whole)."""
    import pandas as pd

    if not chunks:
        return frame([])
    if len(chunks) == 1:
        return chunks.pop()
    parts = [dict(c.items()) for c in chunks]
    chunks.clear()
    cols = {name: pd.concat([p.pop(name) for p in parts], ignore_index=True) for name in NAMES}
    return pd.DataFrame(cols, copy=False)


def rows_from_record(rec: dict, source_file: str) -> list[dict]:
    """Sample rows of one of our run.json records (one per repetition; one failed row when the run
    failed before measuring anything)."""
    cfg = rec.get("config") or {}
    rt, sp, wl = cfg.get("runtime") or {}, cfg.get("sampling") or {}, cfg.get("workload") or {}
    eff = rec.get("effective") or {}
    prov = rec.get("provenance") or {}
    tel = rec.get("telemetry") or {}
    gpu = tel.get("gpu") or {}
    decode = (tel.get("phases") or {}).get("decode") or {}
    host = prov.get("host") or {}
    engine = prov.get("engine") or {}
    # The sampled GPU when telemetry ran; else the GPUs the machine has (a run with NVML off, or one
    # that failed before sampling, still belongs with its hardware).
    gpu_names = [gpu["name"]] if gpu.get("name") else sorted(
        {g.get("name") for g in (prov.get("gpu") or {}).get("gpus") or () if g.get("name")})
    hardware = " | ".join(x for x in (host.get("cpu_model"), *gpu_names) if x) or None
    unsupported = tel.get("unsupported") or {}
    load = rec.get("load") or {}
    pmodel = prov.get("model") or {}
    twin = pmodel.get("synthetic") is True
    name = (cfg.get("model") or {}).get("name")
    base = empty_row() | {
        "source_format": "harness", "source_file": source_file, "run_id": rec.get("run_id"),
        "sweep": rec.get("sweep_name"), "job": rec.get("job_name"), "started_at": rec.get("started_at"),
        "hardware": hardware, "model": twin_label(name) if twin else name,
        "model_sha256": pmodel.get("sha256"),
        "model_desc": model_desc(pmodel.get("architecture"), pmodel.get("n_layers"), pmodel.get("file_type")),
        "weights": pmodel.get("weights") or ("twin" if twin else "real" if pmodel else None),
        "twin_of": pmodel.get("twin_of") if twin else None,
        "weight_bytes": (rec.get("roofline") or {}).get("bytes_per_token_min") or pmodel.get("tensor_data_bytes"),
        "engine": " ".join(str(x) for x in ("llama-cpp-python", engine.get("llama_cpp_python"),
                                               "gpu" if engine.get("gpu_offload_supported") else "cpu",
                                               rec.get("timing_path")) if x) if engine else None,
        "n_gpu_layers": None if rt.get("n_gpu_layers") is None else str(rt.get("n_gpu_layers")),
        "n_gpu_layers_effective": eff.get("n_gpu_layers_effective"), "n_ctx": rt.get("n_ctx"),
        "n_ctx_effective": eff.get("n_ctx_effective"), "n_batch": rt.get("n_batch"), "n_ubatch": rt.get("n_ubatch"),
        "n_threads": eff.get("n_threads") or rt.get("n_threads"), "flash_attn": rt.get("flash_attn"),
        "type_k": rt.get("type_k"), "type_v": rt.get("type_v"), "temperature": sp.get("temperature"),
        "top_p": sp.get("top_p"), "top_k": sp.get("top_k"), "min_p": sp.get("min_p"),
        "repeat_penalty": sp.get("repeat_penalty"), "workload": wl.get("name"),
        "n_prompt_tokens": (rec.get("prompt") or {}).get("n_tokens"), "max_tokens": wl.get("max_tokens"),
        "effective_id": eff.get("effective_id"),
        "load_ms": None if load.get("reused") is True else load.get("load_ms"), "load_reused": load.get("reused"),
        "energy_per_token_j": decode.get("energy_per_token_j"),
        "vram_used_mib": decode.get("vram_used_mib_max"), "gpu_util_pct": decode.get("gpu_util_pct_mean"),
        "power_w": decode.get("power_w_mean"),
        "bandwidth_efficiency": (rec.get("roofline") or {}).get("bandwidth_efficiency"),
        "throttled": bool([r for r in decode.get("throttle_reasons") or () if r != "gpu_idle"]) if tel else None,
        "fan_reported": ("fan" not in unsupported) if gpu else None,
        "gpu_shared": bool(tel.get("other_processes")) if gpu else None,
        "weights_huge_share": (load.get("mapping") or {}).get("huge_share"),
    }
    reps = rec.get("repetitions") or []
    out = []
    for r in reps:
        out.append(base | {
            "rep": r.get("rep"), "round": r.get("round"), "order": r.get("order"),
            "status": "ok", "ttft_ms": r.get("ttft_ms"), "prompt_eval_ms": r.get("prompt_eval_ms"),
            "prefill_tps": r.get("prefill_tps"), "decode_ms": r.get("decode_ms"), "decode_tps": r.get("decode_tps"),
            "e2e_ms": r.get("e2e_ms"), "n_gen_tokens": r.get("n_gen_tokens"), "itl_p50_ms": r.get("itl_p50_ms"),
            "itl_p99_ms": r.get("itl_p99_ms"),
            "n_prompt_tokens": r.get("n_prompt_tokens", base["n_prompt_tokens"]),
        })
    if rec.get("status") == "failed":
        err = (rec.get("error") or {}).get("message")
        if out:  # measured repetitions of a run that failed later stay data; the failure is one more row
            out.append(base | {"rep": len(reps), "status": "failed", "error": err})
        else:
            out.append(base | {"status": "failed", "error": err})
    return out
