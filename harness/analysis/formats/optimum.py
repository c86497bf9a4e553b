"""optimum-benchmark's `benchmark_report.json` (or `benchmark.json`, which holds it under "report"
next to its "config").

A report has one object per measured target (load, prefill, decode, per_token, forward, generate,
call), each with `latency` ({unit, values: one per iteration, count, mean, p50, ...}),
`throughput` ({unit, value}), `memory` and `energy`. Mapping: the i-th value of prefill is a
sample's prompt_eval_ms, of decode its decode_ms, of generate / forward / call its e2e_ms; load is
load_ms. per_token latencies are pooled over tokens (not one per iteration) and the throughputs are
computed from means: both are aggregates. optimum-benchmark's decode throughput is
(new tokens - 1) x batch size / decode latency, our decode definition for a batch of one.
"""

from __future__ import annotations

from typing import Any

from ..foreign import base_row, num, synthetic_id
from ..reading import Reading, claim
from .loadgen import to_ms

TARGETS = ("load", "load_model", "prefill", "decode", "per_token", "forward", "generate", "call")
_SAMPLE_COL = {"prefill": "prompt_eval_ms", "decode": "decode_ms", "generate": "e2e_ms", "forward": "e2e_ms",
               "call": "e2e_ms"}
_THROUGHPUT = {"prefill": "prefill_tps", "decode": "decode_tps", "generate": "e2e_tps"}
NOTE = ("optimum-benchmark: per-iteration latencies are samples; per_token latencies and throughputs "
        "(computed from means) are aggregates")


def _target(v: Any) -> bool:
    lat = v.get("latency") if isinstance(v, dict) else None
    return isinstance(lat, dict) and ("values" in lat or "mean" in lat) and "unit" in lat


def report(doc: Any, rel: str) -> Reading | None:
    """The Reading of an optimum-benchmark report, or None."""
    if not isinstance(doc, dict):
        return None
    cfg = doc.get("config") if isinstance(doc.get("config"), dict) else {}
    rep = doc.get("report") if isinstance(doc.get("report"), dict) else doc
    targets = {k: v for k, v in rep.items() if isinstance(k, str) and _target(v)}
    if not targets or not set(targets) & set(TARGETS):
        return None
    backend = cfg.get("backend") if isinstance(cfg.get("backend"), dict) else {}
    scenario = cfg.get("scenario") if isinstance(cfg.get("scenario"), dict) else {}
    gen = scenario.get("generate_kwargs") if isinstance(scenario.get("generate_kwargs"), dict) else {}
    shapes = scenario.get("input_shapes") if isinstance(scenario.get("input_shapes"), dict) else {}
    model = backend.get("model") if isinstance(backend.get("model"), str) else None
    base = base_row("optimum-benchmark", rel, engine=str(backend.get("name") or "optimum-benchmark"),
                    job=str(cfg.get("name") or "optimum-benchmark"), model=model,
                    max_tokens=num(gen.get("max_new_tokens")), n_prompt_tokens=num(shapes.get("sequence_length")),
                    n_batch=num(shapes.get("batch_size")))
    base["run_id"] = synthetic_id(rel, (model, base["job"]))
    reading = Reading("optimum-benchmark", notes=[NOTE])
    series: dict[str, list] = {}
    for name, t in targets.items():
        lat = t["latency"]
        unit = lat.get("unit")
        values = lat.get("values") if isinstance(lat.get("values"), list) else []
        col = "load_ms" if name.startswith("load") else _SAMPLE_COL.get(name)
        if col and values:
            series[col] = [to_ms(v, unit) for v in values]
        else:
            metric = "itl_ms" if name == "per_token" else f"{name}_latency_ms"
            for stat in ("mean", "p50", "p90", "p95", "p99"):
                got = claim(base, metric, stat, to_ms(lat.get(stat), unit), num(lat.get("count")))
                if got is not None:
                    reading.aggregates.append(got)
        tp = t.get("throughput")
        if isinstance(tp, dict) and name in _THROUGHPUT:
            got = claim(base, _THROUGHPUT[name], "mean", tp.get("value"), num(lat.get("count")),
                        note=f"{tp.get('unit')}, from the mean latency")
            if got is not None:
                reading.aggregates.append(got)
    load = series.pop("load_ms", None)
    n = max((len(v) for v in series.values()), default=0)
    rows = []
    for i in range(n):
        row = dict(base, rep=i, **{c: v[i] for c, v in series.items() if i < len(v)})
        if i == 0 and load:
            row["load_ms"] = load[0]
        rows.append(row)
    reading.rows = rows
    return reading
