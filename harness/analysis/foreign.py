"""Rows of Ollama API responses and pytest-benchmark's saved JSON, mapped to the columns of the
tidy sample table in our metric names and units (nanoseconds and seconds become ms), and the small
helpers every foreign reader shares (num, label, synthetic_id). Tables of any tool, the older
Ollama tool's CSVs among them, are read by meaning (`bymeaning`); other tools' formats live in
`formats/`.

A pytest-benchmark benchmark made by the `harness_bench` fixture has one row per timed round: its
per-round values from extra_info["samples"] (decode_tps, prefill_tps, ttft_ms, e2e_ms), and its
parameters, model, hardware and engine from the run record in extra_info["record"]. Other
benchmarks have one row per entry of stats.data (seconds per round, as e2e_ms), else one
aggregate (stats.mean of stats.rounds rounds: not a sample).

Values are taken as the file states them; `normalise` then decides what is data.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any

from . import table
from .reading import claim

PROMPT_LABEL_CHARS = 80
#: The keys every timed Ollama API response has.
OLLAMA_API_KEYS = frozenset({"total_duration", "eval_count", "eval_duration"})
_PARAM_ALIASES = {"num_gpu": "n_gpu_layers", "num_ctx": "n_ctx", "ngl": "n_gpu_layers"}
#: The per-round lists a harness_bench benchmark keeps in extra_info["samples"] (one value per
#: timed round, in round order; None where a round has no value).
SAMPLE_METRICS = ("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms")
#: Columns a harness_bench benchmark takes from its embedded run record.
_RECORD_COLUMNS = tuple(c for c in table.NAMES if table.BY_NAME[c].kind in ("group", "param")
                        ) + ("load_ms", "load_reused", "energy_per_token_j", "vram_used_mib",
                             "gpu_util_pct", "power_w", "bandwidth_efficiency", "throttled",
                             "fan_reported", "gpu_shared", "weights_huge_share")


def num(v: Any) -> float | None:
    """A number, or None (empty, text, NaN, bool). Infinities are kept: `normalise` rejects them
    with the reason, rather than letting them vanish as if the file had left them empty."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
    try:
        x = float(v)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(x) else x


def scaled(v: Any, factor: float) -> float | None:
    """`v` times `factor` (a unit conversion), or None when `v` is not a number."""
    x = num(v)
    return None if x is None else x * factor


def ratio(numerator: Any, denominator: Any, factor: float = 1.0) -> float | None:
    """numerator / (denominator * factor), or None when either is missing or the denominator is 0."""
    n, d = num(numerator), num(denominator)
    return None if n is None or not d else n / (d * factor)


def synthetic_id(rel: str, config: Any) -> str:
    """A stable run id for a configuration of a foreign file (it has none of its own)."""
    return hashlib.sha256(f"{rel}\0{config!r}".encode("utf-8", "surrogatepass")).hexdigest()[:16]


def label(prompt: str) -> str:
    """A prompt as a one-line workload label of at most PROMPT_LABEL_CHARS characters."""
    s = " ".join(prompt.split())
    return s if len(s) <= PROMPT_LABEL_CHARS else s[: PROMPT_LABEL_CHARS - 1] + "…"


def base_row(fmt: str, rel: str, **kw) -> dict:
    """An empty tidy row of format `fmt` from file `rel`, with the columns `kw` set."""
    row = table.empty_row()
    row["source_format"], row["source_file"] = fmt, rel
    row.update(kw)
    return row


def ollama_api_rows(objs, rel: str) -> tuple[list[dict], str | None]:
    """(rows, note) of Ollama API responses (a document's list)."""
    counts: Counter = Counter()
    rows = list(ollama_api_iter(objs, rel, counts))
    return rows, ollama_api_note(counts)


def ollama_api_note(counts: Counter) -> str | None:
    n = counts["chunks"]
    return f"{n} streamed partial responses without timings ignored" if n else None


def ollama_api_iter(objs, rel: str, counts: Counter):
    """The rows of Ollama API responses one at a time (JSON Lines stream through here); streamed
    partial responses without timings are counted in counts["chunks"]."""
    reps: Counter = Counter()
    ids: dict = {}
    for o in objs:
        if not isinstance(o, dict):
            continue
        if not (OLLAMA_API_KEYS & o.keys()) and not o.get("error"):
            counts["chunks"] += 1  # a streamed partial response: its timings are in the final object
            continue
        model = o.get("model") if isinstance(o.get("model"), str) else None
        load_ms = scaled(o.get("load_duration"), 1e-6)
        total_ms = scaled(o.get("total_duration"), 1e-6)
        rid = ids.get(model)
        if rid is None:
            rid = ids[model] = synthetic_id(rel, model)
        row = {"source_format": "ollama-api", "source_file": rel, "engine": "ollama", "job": "ollama",
               "model": model, "run_id": rid, "started_at": o.get("created_at"),
               "load_ms": load_ms, "prompt_eval_ms": scaled(o.get("prompt_eval_duration"), 1e-6),
               "n_prompt_tokens": num(o.get("prompt_eval_count")), "n_gen_tokens": num(o.get("eval_count")),
               "decode_ms": scaled(o.get("eval_duration"), 1e-6),
               "decode_tps": ratio(o.get("eval_count"), o.get("eval_duration"), 1e-9),
               "prefill_tps": ratio(o.get("prompt_eval_count"), o.get("prompt_eval_duration"), 1e-9),
               "e2e_ms": None if total_ms is None else total_ms - (load_ms or 0.0),
               "error": o.get("error"), "rep": reps[rid]}
        reps[rid] += 1
        yield row


def pytest_benchmark_rows(doc: dict, rel: str) -> tuple[list[dict], str | None]:
    """(sample rows, note) of a pytest-benchmark saved run (its aggregates left out: see
    pytest_benchmark_read)."""
    rows, note, _ = pytest_benchmark_read(doc, rel)
    return rows, note


def pytest_benchmark_read(doc: dict, rel: str) -> tuple[list[dict], str | None, list[dict]]:
    """(sample rows, note, aggregate rows) of a pytest-benchmark saved run: a benchmark without
    per-round data gives aggregates (its stats), never samples."""

    mi = doc.get("machine_info") if isinstance(doc.get("machine_info"), dict) else {}
    cpu = mi.get("cpu") if isinstance(mi.get("cpu"), dict) else {}
    brand = cpu.get("brand_raw") or cpu.get("brand") or mi.get("processor") or None
    node = mi.get("node") or None
    hardware = f"{brand} @ {node}" if brand and node else (brand or node)
    out: list[dict] = []
    aggs: list[dict] = []
    averaged = 0
    for b in doc["benchmarks"]:
        if not isinstance(b, dict):
            continue
        name = b.get("name") or b.get("fullname")
        extra = b.get("extra_info") if isinstance(b.get("extra_info"), dict) else {}
        stats = b.get("stats") if isinstance(b.get("stats"), dict) else {}
        base = base_row("pytest-benchmark", rel, job=name, run_id=synthetic_id(rel, b.get("fullname") or name),
                     hardware=hardware, started_at=doc.get("datetime"),
                     engine=extra.get("engine") if isinstance(extra.get("engine"), str) else None)
        for src in (b.get("params") if isinstance(b.get("params"), dict) else {}, extra):
            for k, v in src.items():
                col = _PARAM_ALIASES.get(k, k)
                if col == "n_gpu_layers" and v is not None:
                    base[col] = str(v)
                elif col in table.PARAMS or col == "model":
                    base[col] = v
        for m in table.METRICS:
            if m in extra:
                base[m] = num(extra[m])
        per_round = harness_bench_rows(extra, base, rel)
        data = stats.get("data")
        if per_round is not None:
            out.extend(per_round)
        elif isinstance(data, list) and data:
            out.extend(base | {"rep": i, "e2e_ms": scaled(v, 1e3)} for i, v in enumerate(data))
        else:
            averaged += 1
            for stat in ("mean", "median", "min", "max", "stddev"):
                got = claim(base, "e2e_ms", "std" if stat == "stddev" else stat, scaled(stats.get(stat), 1e3),
                            num(stats.get("rounds")))
                if got is not None:
                    aggs.append(got)
    note = (f"{averaged} benchmarks without stats.data: their statistics are shown as aggregates, not samples"
            if averaged else None)
    return out, note, aggs


def harness_bench_rows(extra: dict, base: dict, rel: str) -> list[dict] | None:
    """One row per timed round of a harness_bench benchmark (extra_info["samples"]), or None when
    the benchmark has no per-round samples. `base` is the benchmark's row (name, run id, source);
    the embedded run record, when there is one, adds its parameters, group keys and run-level
    values."""
    samples = extra.get("samples")
    if not isinstance(samples, dict):
        return None
    lists = {m: v for m, v in samples.items() if m in SAMPLE_METRICS and isinstance(v, list)}
    n = max((len(v) for v in lists.values()), default=0)
    if n == 0:
        return None
    rec = extra.get("record")
    rec_rows = table.rows_from_record(rec, rel) if isinstance(rec, dict) else []
    row0 = dict(base)
    if rec_rows:
        row0.update({c: rec_rows[0][c] for c in _RECORD_COLUMNS if rec_rows[0].get(c) is not None})
    for m in table.METRICS:  # the means of extra_info are not samples: only the per-round lists are
        if m not in _RECORD_COLUMNS:
            row0[m] = None
    return [row0 | {"rep": i} | {m: num(v[i]) if i < len(v) else None for m, v in lists.items()}
            for i in range(n)]
