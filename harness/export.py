"""Export a tidy sample frame (harness.analysis.table) for other tools.

- "csv" / "parquet": the tidy frame as it is (parquet via pyarrow, as bytes).
- "pytest-benchmark": pytest-benchmark's saved-run JSON (`--benchmark-json` / `.benchmarks/`), one
  benchmark per run_id, timed by the per-sample end-to-end time in seconds.
- "llama-bench-json" | "-jsonl" | "-csv" | "-sql": llama-bench's printers (formats.llamabench.dump),
  readable by llama.cpp's scripts/compare-llama-bench.py.

Every format carries the whole sample table, so an export read back gives the configurations and
statistics of the folders it came from: csv and parquet are that table (read back by
formats.tidy); the others carry each run's rows in a `harness` field beside what the tool itself
reads (formats.embedded; the llama-bench reader prefers it): in each llama-bench test, in each
benchmark's extra_info, and for runs without an ok sample (no benchmark of their own) at the top
of the pytest-benchmark document.

Returns data; writing it anywhere is the caller's job.
"""

from __future__ import annotations

import io
import json
import statistics
from bisect import bisect_left, bisect_right
from datetime import datetime, timezone

from . import registry
from .analysis.formats import embedded, llamabench

FORMATS = ("csv", "parquet", "pytest-benchmark", "llama-bench-json", "llama-bench-jsonl", "llama-bench-csv",
           "llama-bench-sql")

# The pytest-benchmark JSON layout mirrored here (pytest_benchmark/plugin.py, stats.py).
PYTEST_BENCHMARK_VERSION = "5.1.0"
# Per-sample time the pytest-benchmark stats are computed over, first one a run has (ms columns).
TIMED_METRICS = ("e2e_ms", "decode_ms", "prompt_eval_ms")
# Per-run means in extra_info (metric columns of the tidy table)...
MEAN_METRICS = registry.EXTRA_INFO_METRICS
# ...and run-level values (equal on every sample of a run), taken as they are.
RUN_VALUES = (*(m for m in registry.RUN_LEVEL_METRICS if m not in MEAN_METRICS),
              "n_gpu_layers", "n_gpu_layers_effective", "n_ctx", "n_ctx_effective", "n_batch", "n_ubatch",
              "n_threads", "flash_attn", "type_k", "type_v", "temperature", "top_p", "top_k", "min_p",
              "repeat_penalty", "workload", "n_prompt_tokens", "max_tokens", "effective_id", "load_reused",
              "throttled", "fan_reported", "gpu_shared", "model_sha256", "started_at")
_PARAMS = ("n_gpu_layers", "n_ctx", "n_batch", "n_ubatch", "n_threads", "flash_attn", "type_k", "type_v",
           "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "n_prompt_tokens", "max_tokens")


def export(df, fmt: str) -> bytes | str:
    """`df` (a tidy sample frame) in format `fmt` (one of FORMATS): bytes for parquet, str otherwise."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "parquet":
        buf = io.BytesIO()
        df.to_parquet(buf, engine="pyarrow", index=False)
        return buf.getvalue()
    if fmt == "pytest-benchmark":
        return json.dumps(pytest_benchmark(df), indent=4) + "\n"
    if fmt in llamabench.FORMATS:
        return llamabench.dump(df, fmt)
    raise ValueError(f"export format must be one of {', '.join(FORMATS)}; got {fmt!r}")


def pytest_benchmark_stats(data: list[float]) -> dict:
    """pytest-benchmark's Stats.as_dict() of `data` (same definitions: sample stddev, quartiles by
    Wikipedia's method 3 for odd and method 2 for even counts, Tukey 1.5 IQR fences), plus
    `data` and `iterations` as its saved JSON has them."""
    d = sorted(data)
    n = len(d)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if n > 1 else 0
    if n == 1:
        q1 = q3 = d[0]
    elif n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            q1, q3 = 0.25 * d[k - 1] + 0.75 * d[k], 0.75 * d[3 * k] + 0.25 * d[3 * k + 1]
        else:
            q1, q3 = 0.75 * d[k] + 0.25 * d[k + 1], 0.25 * d[3 * k + 1] + 0.75 * d[3 * k + 2]
    else:
        q1, q3 = statistics.median(d[: n // 2]), statistics.median(d[n // 2:])
    iqr = q3 - q1
    if n == 1:
        ld15iqr = hd15iqr = d[0]
    else:
        ld15iqr = d[bisect_left(d, q1 - 1.5 * iqr)]
        hd15iqr = d[bisect_right(d, q3 + 1.5 * iqr) - 1]
    stddev_outliers = sum(1 for x in data if x < mean - stddev or x > mean + stddev)
    iqr_outliers = sum(1 for x in data if x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr)
    total = sum(data)
    return {
        "min": d[0], "max": d[-1], "mean": mean, "stddev": stddev, "rounds": n, "median": statistics.median(d),
        "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_outliers, "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}", "ld15iqr": ld15iqr, "hd15iqr": hd15iqr,
        "ops": n / total if total else 0, "total": total, "data": list(data), "iterations": 1,
    }


def _whole(v):
    """Parameters like n_ctx are floats in the tidy table (NaN = unknown); 2048.0 reads as 2048."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _first(run, col):
    vals = run[col].dropna()
    return embedded.json_scalar(vals.iloc[0]) if len(vals) else None


def _mean(values) -> float | None:
    vals = [float(v) for v in values.dropna()]
    return statistics.fmean(vals) if vals else None


def pytest_benchmark(df) -> dict:
    """The pytest-benchmark JSON document of a tidy frame. One benchmark per run_id that has at
    least one ok sample with a time; failed samples are left out of the stats and counted in
    extra_info.n_failed."""
    benchmarks, seen, orphans = [], set(), []
    for run_id, run in df.groupby(df["run_id"].fillna(""), sort=False, dropna=False):
        ok = run[run["status"] == "ok"]
        timed = next((m for m in TIMED_METRICS if ok[m].notna().any()), None)
        if timed is None:
            orphans.append(run)
            continue
        data = [float(x) / 1e3 for x in ok[timed].dropna()]
        model, workload, job = (_first(run, c) for c in ("model", "workload", "job"))
        fullname = "::".join(str(x) for x in (model, workload, job or run_id) if x)
        if fullname in seen:  # two runs of one config in one export: keep both, distinguishable
            fullname = f"{fullname}@{run_id}"
        seen.add(fullname)
        n_tokens = ok["n_gen_tokens"] - 1
        decode_s = ok["decode_ms"] / 1e3
        both = n_tokens.notna() & decode_s.notna() & (decode_s > 0)
        extra = {
            "run_id": run_id or None, "sweep": _first(run, "sweep"), "job": job, "model": model,
            "hardware": _first(run, "hardware"), "engine": _first(run, "engine"),
            "source_format": _first(run, "source_format"), "source_file": _first(run, "source_file"),
            "timed_metric": timed, "n_samples": len(data), "n_failed": int((run["status"] == "failed").sum()),
            "errors": sorted({str(e) for e in run.loc[run["status"] == "failed", "error"].dropna()}),
            **{m: _mean(ok[m]) for m in MEAN_METRICS},
            # token-weighted decode rate: sum(tokens - 1) / sum(decode s)
            "decode_tps_weighted": (float(n_tokens[both].sum() / decode_s[both].sum()) if both.any() else None),
            **{c: _whole(_first(run, c)) if c in _PARAMS else _first(run, c) for c in RUN_VALUES},
            embedded.KEY: embedded.pack([run]),
        }
        params = {c: _whole(_first(run, c)) for c in _PARAMS if _first(run, c) is not None}
        benchmarks.append({
            "group": " | ".join(str(x) for x in (model, _first(run, "hardware")) if x) or None,
            "name": f"{workload or 'run'}[{job or run_id}]",
            "fullname": fullname,
            "params": params or None,
            "param": job,
            "extra_info": extra,
            "options": {"disable_gc": False, "timer": "perf_counter_ns", "min_rounds": len(data),
                        "max_time": None, "min_time": None, "warmup": False},
            "stats": pytest_benchmark_stats(data),
        })
    hardware = sorted({str(x) for x in df["hardware"].dropna()})
    started = sorted(str(x) for x in df["started_at"].dropna())
    doc = {
        "machine_info": {
            "node": None, "processor": hardware[0].split(" | ")[0] if hardware else None, "machine": None,
            "python_compiler": None, "python_implementation": None, "python_implementation_version": None,
            "python_version": None, "python_build": None, "release": None, "system": None,
            "cpu": {"brand_raw": hardware[0].split(" | ")[0] if hardware else None},
            "hardware": hardware,
        },
        "commit_info": {"id": "unknown", "time": None, "author_time": None, "dirty": False, "project": "harness",
                        "branch": "(unknown)", "engines": sorted({str(x) for x in df["engine"].dropna()})},
        "benchmarks": benchmarks,
        "datetime": started[-1] if started else datetime.now(timezone.utc).isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }
    if orphans:
        doc[embedded.KEY] = embedded.pack(orphans)
    return doc
