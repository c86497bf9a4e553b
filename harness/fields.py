"""One registry of the per-run columns: it drives runs.csv/runs.parquet and the terminal table.

Each field has a column name (units in the name), a path into run.json, and a display format.
Headers and formats of metric columns come from the metric registry (harness.registry).

A point that reused a model loaded by an earlier point did not load anything: its `load_ms` is
empty (the first load's time belongs to that point only), `load_reused` is True, and the terminal
table shows "reused" in the load column (see `cell`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import registry


@dataclass(frozen=True)
class Field:
    name: str  # column name, unit in the name
    path: tuple[str, ...]  # where it lives in run.json
    display: str  # header in tables
    fmt: str = "{}"  # format for tables
    summary: bool = False  # shown in the terminal summary table


def _f(name: str, path: str, display: str, fmt: str = "{}", summary: bool = False) -> Field:
    return Field(name, tuple(path.split(".")), display, fmt, summary)


def _stat(metric: str, summary_mean: bool = True, qualifier: str = "") -> list[Field]:
    m = registry.get(metric)
    display, fmt = m.short + qualifier, m.fmt
    base = f"aggregates.{metric}"
    return [
        _f(f"{metric}_mean", f"{base}.mean", f"{display}", fmt, summary_mean),
        _f(f"{metric}_median", f"{base}.median", f"{display} median", fmt),
        _f(f"{metric}_std", f"{base}.std", f"{display} std", fmt),
        _f(f"{metric}_cv", f"{base}.cv", f"{display} CV", "{:.1%}"),
        _f(f"{metric}_ci95_low", f"{base}.ci95_low", f"{display} CI95 low", fmt),
        _f(f"{metric}_ci95_high", f"{base}.ci95_high", f"{display} CI95 high", fmt),
        _f(f"{metric}_n", f"{base}.n", f"{display} n", "{}"),
    ]


def _metric(metric: str, path: str, summary: bool = False) -> Field:
    """A field holding one value of a registry metric (header and format from the registry)."""
    m = registry.get(metric)
    return _f(metric, path, m.short, m.fmt, summary)


FIELDS: tuple[Field, ...] = (
    _f("job", "job_name", "job", summary=True),
    _f("status", "status", "status", summary=True),
    _f("error", "error.message", "error"),
    _f("sweep_name", "sweep_name", "sweep"),
    _f("run_id", "run_id", "run id"),
    _f("started_at", "started_at", "started"),
    _f("model", "config.model.name", "model", summary=True),  # a performance twin's marked (twin_label)
    _f("weights", "provenance.model.weights", "weights"),
    _f("twin_of", "provenance.model.twin_of", "twin of"),
    _f("workload", "config.workload.name", "workload", summary=True),
    _f("n_gpu_layers", "config.runtime.n_gpu_layers", "ngl", summary=True),
    _f("n_gpu_layers_effective", "effective.n_gpu_layers_effective", "ngl eff", summary=True),
    _f("n_ctx", "config.runtime.n_ctx", "n_ctx", summary=True),
    _f("n_ctx_effective", "effective.n_ctx_effective", "n_ctx eff"),
    _f("n_batch", "config.runtime.n_batch", "n_batch", summary=True),
    _f("n_ubatch", "config.runtime.n_ubatch", "n_ubatch", summary=True),
    _f("n_threads", "effective.n_threads", "threads", summary=True),
    _f("flash_attn", "config.runtime.flash_attn", "fa", summary=True),
    _f("type_k", "config.runtime.type_k", "type_k", summary=True),
    _f("type_v", "config.runtime.type_v", "type_v", summary=True),
    _f("temperature", "config.sampling.temperature", "temp", summary=True),
    _f("top_p", "config.sampling.top_p", "top_p", summary=True),
    _f("top_k", "config.sampling.top_k", "top_k", summary=True),
    _f("min_p", "config.sampling.min_p", "min_p", summary=True),
    _f("repeat_penalty", "config.sampling.repeat_penalty", "rep pen", summary=True),
    _f("seed", "config.sampling.seed", "seed"),
    _f("max_tokens", "config.workload.max_tokens", "max tok"),
    _f("ignore_eos", "config.bench.ignore_eos", "ignore eos"),
    _f("effective_id", "effective.effective_id", "effective id"),
    _f("n_prompt_tokens", "prompt.n_tokens", "prompt tok"),
    _f("repetitions", "config.bench.repetitions", "reps"),
    _metric("load_ms", "load.load_ms", True),
    _f("load_reused", "load.reused", "load reused"),
    *_stat("ttft_ms"),
    *_stat("prompt_eval_ms", False),
    *_stat("prefill_tps"),
    *_stat("decode_tps"),
    *_stat("decode_engine_tps", False),
    *_stat("e2e_ms", False),
    *_stat("itl_p50_ms", False, " (per rep)"),
    _metric("decode_tps_weighted", "aggregates.decode_tps_weighted"),
    _metric("itl_pooled_p50_ms", "aggregates.itl_pooled_ms.p50"),
    _metric("itl_pooled_p99_ms", "aggregates.itl_pooled_ms.p99", True),
    _f("n_gen_tokens_total", "aggregates.n_gen_tokens_total", "gen tokens"),
    _f("timing_path", "timing_path", "timing"),
    _f("engine_version", "provenance.engine.llama_cpp_python", "engine"),
    _f("gpu_offload_supported", "provenance.engine.gpu_offload_supported", "gpu build"),
    _f("cpu_model", "provenance.host.cpu_model", "cpu"),
    _f("hostname", "provenance.host.hostname", "host"),
    _f("model_sha256", "provenance.model.sha256", "model sha256"),
    _f("model_path", "effective.model_path", "model path"),
)


def get(record: dict, path: tuple[str, ...]) -> Any:
    cur: Any = record
    for k in path:
        if not isinstance(cur, dict) or k not in cur:
            return None
        cur = cur[k]
    return cur


TWIN_MARK = " (twin)"


def twin_label(model: str | None) -> str:
    """The model label of every figure measured on a performance twin (synthetic weights):
    'gemma3_1b (twin)'. Plain text (no markup), so terminals and reports show it as written."""
    return f"{model or 'unknown model'}{TWIN_MARK}"


def row(record: dict) -> dict:
    """One tidy row (column -> value) for a run record. A reused load has no load time; a
    performance twin's model is marked (twin_label)."""
    out = {f.name: get(record, f.path) for f in FIELDS}
    if out.get("load_reused") is True:
        out["load_ms"] = None
    if get(record, ("provenance", "model", "synthetic")) is True:
        out["model"] = twin_label(out.get("model"))
    return out


#: What the load column shows for a point that reused a loaded model.
REUSED = "reused"


def cell(field: Field, values: dict) -> str:
    """The table text of `field` in a row of `row()`: its formatted value, or "reused" in the
    load column of a point that reused a model loaded by an earlier point."""
    if field.name == "load_ms" and values.get("load_reused") is True and values.get("load_ms") is None:
        return REUSED
    return fmt(field, values.get(field.name))


def fmt(field: Field, value: Any) -> str:
    if value is None:
        return "-"
    try:
        return field.fmt.format(value)
    except (ValueError, TypeError):
        return str(value)
