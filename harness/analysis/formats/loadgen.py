"""Results of load generators that time requests against a serving endpoint: vLLM `bench serve`,
GuideLLM and NVIDIA AIPerf. Request rate and concurrency become parameters (request_rate,
concurrency); per-request timings become samples; statistics of requests the file does not list
become aggregates (never samples).

Definitions, where they differ from ours (ours: harness.registry):
- TTFT of a load generator is measured by the client, from sending the request to the first
  streamed chunk: it includes the network, the server's queue and scheduling, which ours (in
  process, no queue) never does.
- vLLM: `ttfts` and `itls` are seconds per request; ITL is between streamed chunks (a chunk may
  carry several tokens); TPOT = (latency - TTFT) / (output tokens - 1), which is our decode
  definition, so a request's decode_tps = (n - 1) / sum(itls) and the aggregate `tpot` is the
  inverse of a mean decode rate. `output_throughput` is all requests' tokens over the run's
  duration: a server throughput, not one request's rate (aggregate `output_throughput`).
- GuideLLM: `inter_token_latency_ms` = (latency - TTFT) / (output tokens - 1), our decode
  definition (decode_tps = 1000 / ITL); its per-request `output_tokens_per_second` divides by the
  whole latency (TTFT included) and is not used as decode_tps; `request_latency` is in seconds.
- AIPerf: `inter_token_latency` is (latency - TTFT) / (output tokens - 1) as above, and
  `output_token_throughput_per_user` its inverse (our decode_tps); `output_token_throughput` is the
  server's total (aggregate `output_throughput`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from typing import Any, Iterable, Iterator

from .. import columns
from ..foreign import base_row, num, synthetic_id
from ..reading import Reading, claim

_VLLM_STAT = re.compile(r"^(mean|median|std|min|max|p\d{1,3}(?:\.\d+)?)_(ttft|tpot|itl|e2el|e2e)_ms$")
_VLLM_METRIC = {"ttft": "ttft_ms", "tpot": "tpot_ms", "itl": "itl_ms", "e2el": "e2e_ms", "e2e": "e2e_ms"}
VLLM_NOTE = ("vLLM bench serve: TTFT measured by the client (queueing and network included); decode_tps = "
             "(output tokens - 1) / sum of the request's ITLs (vLLM's TPOT definition)")
GUIDELLM_NOTE = ("GuideLLM: TTFT measured by the client (queueing and network included); decode_tps = 1000 / "
                 "inter_token_latency_ms; its output_tokens_per_second (TTFT included) is not used")
AIPERF_NOTE = ("AIPerf: TTFT measured by the client (queueing and network included); decode_tps = "
               "output_token_throughput_per_user (1 / inter_token_latency)")


def _p(stat: str) -> str:
    return "mean" if stat == "avg" else "std" if stat in ("std_dev", "stdev", "std") else stat


def to_ms(v: Any, unit: str | None) -> float | None:
    x = num(v)
    if x is None:
        return None
    u = (unit or "ms").lower()
    u = {"sec": "s", "seconds": "s", "secs": "s", "millis": "ms", "nanoseconds": "ns"}.get(u, u)
    factor = columns.DURATION_MS.get(u)
    return None if factor is None else x * factor  # a unit we do not know is not guessed


def _percentiles(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    s = sorted(xs)

    def q(p):
        k = (len(s) - 1) * p
        lo, hi = math.floor(k), math.ceil(k)
        return s[lo] + (s[hi] - s[lo]) * (k - lo)
    return q(0.5), q(0.99)


# --- vLLM bench serve ---------------------------------------------------------------------------------------

def vllm(doc: Any, rel: str) -> Reading | None:
    """A `vllm bench serve --save-result` JSON (also benchmark_serving.py's), or None."""
    if not isinstance(doc, dict) or "request_throughput" not in doc or not (
            any(_VLLM_STAT.match(k) for k in doc) or isinstance(doc.get("ttfts"), list)):
        return None
    rate = num(doc.get("request_rate"))
    base = base_row("vllm-bench-serve", rel, engine=str(doc.get("backend") or "vllm"), job="vllm bench serve",
                    model=doc.get("model_id") if isinstance(doc.get("model_id"), str) else None,
                    started_at=doc.get("date") if isinstance(doc.get("date"), str) else None,
                    request_rate=rate if rate is not None else (math.inf if str(doc.get("request_rate")) == "inf"
                                                                else None),
                    concurrency=num(doc.get("max_concurrency")))
    base["run_id"] = synthetic_id(rel, (base["model"], base["request_rate"], base["concurrency"]))
    reading = Reading("vllm-bench-serve", notes=[VLLM_NOTE])
    ttfts = doc.get("ttfts") if isinstance(doc.get("ttfts"), list) else []
    rows = []
    if ttfts:
        itls = doc.get("itls") if isinstance(doc.get("itls"), list) else []
        outs, ins = doc.get("output_lens") or [], doc.get("input_lens") or []
        errs = doc.get("errors") if isinstance(doc.get("errors"), list) else []
        e2els = doc.get("e2els") if isinstance(doc.get("e2els"), list) else []
        for i, t in enumerate(ttfts):
            err = errs[i] if i < len(errs) and errs[i] else None
            row = dict(base, rep=i)
            if err:
                row["error"] = str(err)
                rows.append(row)
                continue
            gaps = [g for g in (itls[i] if i < len(itls) and isinstance(itls[i], list) else []) if num(g) is not None]
            n = num(outs[i]) if i < len(outs) else None
            ttft = to_ms(t, "s")
            decode_s = sum(gaps) if gaps else None
            p50, p99 = _percentiles([g * 1e3 for g in gaps])
            row.update(ttft_ms=ttft, n_gen_tokens=n, n_prompt_tokens=num(ins[i]) if i < len(ins) else None,
                       decode_ms=None if decode_s is None else decode_s * 1e3,
                       decode_tps=(n - 1) / decode_s if n and n > 1 and decode_s else None,
                       itl_p50_ms=p50, itl_p99_ms=p99,
                       e2e_ms=to_ms(e2els[i], "s") if i < len(e2els) else (
                           None if ttft is None or decode_s is None else ttft + decode_s * 1e3))
            rows.append(row)
    else:
        n_claimed = num(doc.get("completed"))
        for k, v in doc.items():
            m = _VLLM_STAT.match(k)
            if m:
                got = claim(base, _VLLM_METRIC[m.group(2)], m.group(1), v, n_claimed)
                if got is not None:
                    reading.aggregates.append(got)
        for k, metric in (("output_throughput", "output_throughput"), ("request_throughput", "request_throughput")):
            got = claim(base, metric, "total", doc.get(k), n_claimed)
            if got is not None:
                reading.aggregates.append(got)
        reading.notes.append("no per-request lists (saved without --save-detailed): statistics shown as aggregates")
    reading.rows = rows
    return reading


# --- GuideLLM -----------------------------------------------------------------------------------------------

_GUIDE_METRICS = {"time_to_first_token_ms": ("ttft_ms", "ms"), "inter_token_latency_ms": ("itl_ms", "ms"),
                  "time_per_output_token_ms": ("tpot_ms", "ms"), "request_latency": ("e2e_ms", "s"),
                  "output_tokens_per_second": ("output_throughput", None),
                  "requests_per_second": ("request_throughput", None),
                  "output_token_count": ("n_gen_tokens", None), "prompt_token_count": ("n_prompt_tokens", None)}


def _find(d: Any, key: str, depth: int = 4) -> Any:
    """The first value of `key` in nested dicts (breadth first, `depth` levels)."""
    level = [d]
    for _ in range(depth):
        nxt = []
        for x in level:
            if isinstance(x, dict):
                if key in x and x[key] is not None and not isinstance(x[key], (dict, list)):
                    return x[key]
                nxt.extend(v for v in x.values() if isinstance(v, dict))
        level = nxt
    return None


def _strategy(b: dict) -> tuple[float | None, float | None]:
    """(request_rate, concurrency) of one GuideLLM benchmark."""
    strat = None
    for holder in (b.get("args"), b.get("config"), b):
        if isinstance(holder, dict) and isinstance(holder.get("strategy"), dict):
            strat = holder["strategy"]
            break
    strat = strat or {}
    kind = str(strat.get("type_") or strat.get("type") or "").lower()
    rate = num(strat.get("rate"))
    if rate is None and isinstance(b.get("config"), dict):
        rate = num(b["config"].get("rate"))
    streams = num(strat.get("streams")) or num(strat.get("max_concurrency"))
    if kind == "synchronous":
        streams = 1.0
    if kind == "throughput" and rate is None:
        rate = math.inf
    if kind == "concurrent" and streams is None:
        streams = rate
        rate = None
    return rate, streams


def guidellm(doc: Any, rel: str) -> Reading | None:
    """A GuideLLM benchmarks report (`--output-path report.json`), or None."""
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        return None
    benches = [b for b in doc["benchmarks"] if isinstance(b, dict) and isinstance(b.get("metrics"), dict)]
    if not benches or not any(k in _GUIDE_METRICS for b in benches for k in b["metrics"]):
        return None
    reading = Reading("guidellm", notes=[GUIDELLM_NOTE])
    rows: list[dict] = []
    model = _find(doc, "model") or _find(doc, "backend_model")
    for bi, b in enumerate(benches):
        rate, conc = _strategy(b)
        m = _find(b, "model") or _find(b, "backend_model") or model
        base = base_row("guidellm", rel, engine="guidellm", job="guidellm", model=str(m) if m else None,
                        request_rate=rate, concurrency=conc)
        base["run_id"] = synthetic_id(rel, (bi, base["model"], rate, conc))
        reqs = b.get("requests") if isinstance(b.get("requests"), dict) else {}
        n_rows = 0
        for status in ("successful", "errored", "incomplete"):
            items = reqs.get(status)
            if not isinstance(items, list):
                continue
            for r in items:
                if not isinstance(r, dict):
                    continue
                t = r.get("timings") if isinstance(r.get("timings"), dict) else {}
                itl = num(r.get("inter_token_latency_ms"))
                row = dict(base, rep=n_rows, ttft_ms=num(r.get("time_to_first_token_ms")),
                           e2e_ms=to_ms(r.get("request_latency"), "s"),
                           n_gen_tokens=num(r.get("output_tokens")), n_prompt_tokens=num(r.get("prompt_tokens")),
                           decode_tps=1000.0 / itl if itl and itl > 0 else None)
                if row["e2e_ms"] is None and num(t.get("request_end")) is not None and num(t.get("request_start")):
                    row["e2e_ms"] = (num(t["request_end"]) - num(t["request_start"])) * 1e3
                if status != "successful":
                    row["error"] = str(r.get("error") or f"request {status}")
                rows.append(row)
                n_rows += 1
        if n_rows:
            continue
        totals = b.get("request_totals") or (b.get("run_stats") or {}).get("requests_made") or {}
        n_claimed = num(totals.get("successful")) if isinstance(totals, dict) else None
        for name, (metric, unit) in _GUIDE_METRICS.items():
            stats = b["metrics"].get(name)
            stats = stats.get("successful") if isinstance(stats, dict) else None
            if not isinstance(stats, dict):
                continue
            flat = dict(stats)
            if isinstance(stats.get("percentiles"), dict):
                flat.update({k if k.startswith("p") else f"p{k}": v for k, v in stats["percentiles"].items()})
            for stat in ("mean", "median", "std_dev", "min", "max", "p50", "p90", "p95", "p99"):
                v = flat.get(stat)
                got = claim(base, metric, _p(stat), to_ms(v, unit) if unit else v, n_claimed or num(flat.get("count")))
                if got is not None:
                    reading.aggregates.append(got)
    reading.rows = rows
    return reading


# --- AIPerf -----------------------------------------------------------------------------------------------

_AIPERF = {"time_to_first_token": "ttft_ms", "inter_token_latency": "itl_ms", "request_latency": "e2e_ms",
           "output_token_throughput_per_user": "decode_tps", "output_token_throughput": "output_throughput",
           "request_throughput": "request_throughput", "output_sequence_length": "n_gen_tokens",
           "input_sequence_length": "n_prompt_tokens", "time_to_second_token": "ttst_ms",
           # the tags of older exports ({"records": {"ttft": {"tag": "ttft", "unit": "ms", "avg": ...}}})
           "ttft": "ttft_ms", "itl": "itl_ms", "ttst": "ttst_ms"}
_AIPERF_STATS = ("avg", "p50", "p90", "p95", "p99", "min", "max", "std")


def is_aiperf_record(o: dict) -> bool:
    """One line of AIPerf's profile_export.jsonl: metadata + metrics of {value, unit}."""
    m = o.get("metrics")
    return isinstance(o.get("metadata"), dict) and (isinstance(m, dict) or m is None) and "error" in o and (
        m is None or any(isinstance(v, dict) and "value" in v for v in m.values()))


def aiperf_records(objs: Iterable[dict], rel: str, reading: Reading) -> Iterator[dict]:
    reading.notes.append(AIPERF_NOTE)
    run_id = synthetic_id(rel, "aiperf")
    for i, o in enumerate(objs):
        if not isinstance(o, dict):
            continue
        m = o.get("metrics") if isinstance(o.get("metrics"), dict) else {}

        def val(name):
            x = m.get(name)
            return (x.get("value"), x.get("unit")) if isinstance(x, dict) else (None, None)

        row = base_row("aiperf-records", rel, engine="aiperf", job="aiperf", run_id=run_id, rep=i)
        for name, col in (("time_to_first_token", "ttft_ms"), ("request_latency", "e2e_ms")):
            v, u = val(name)
            row[col] = to_ms(v, u)
        row["n_gen_tokens"] = num(val("output_sequence_length")[0] or val("output_token_count")[0])
        row["n_prompt_tokens"] = num(val("input_sequence_length")[0])
        rate = num(val("output_token_throughput_per_user")[0])
        itl = to_ms(*val("inter_token_latency"))
        row["decode_tps"] = rate if rate is not None else (1000.0 / itl if itl else None)
        err = o.get("error")
        if err:
            row["error"] = str(err.get("message") or err.get("type") or err) if isinstance(err, dict) else str(err)
        yield row


def _aiperf_base(rel: str, cfg: Any) -> dict:
    cfg = cfg if isinstance(cfg, dict) else {}
    load = cfg.get("loadgen") if isinstance(cfg.get("loadgen"), dict) else {}
    ep = cfg.get("endpoint") if isinstance(cfg.get("endpoint"), dict) else {}
    names = ep.get("model_names")
    model = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    base = base_row("aiperf", rel, engine="aiperf", job="aiperf", model=model,
                    concurrency=num(load.get("concurrency")), request_rate=num(load.get("request_rate")))
    base["run_id"] = synthetic_id(rel, (model, base["concurrency"], base["request_rate"]))
    return base


def aiperf_json(doc: Any, rel: str) -> Reading | None:
    """AIPerf's profile_export_aiperf.json (statistics of the run: aggregates), or None."""
    if not isinstance(doc, dict):
        return None
    holder = doc["records"] if isinstance(doc.get("records"), dict) else doc  # older exports nest them
    stats = {k: v for k, v in holder.items() if k in _AIPERF and isinstance(v, dict) and "unit" in v}
    if not stats or not any("avg" in v for v in stats.values()):
        return None
    base = _aiperf_base(rel, doc.get("input_config"))
    count = holder.get("request_count") or doc.get("request_count")
    n_claimed = num(count.get("avg")) if isinstance(count, dict) else num(count)
    reading = Reading("aiperf", notes=[AIPERF_NOTE])
    for name, st in stats.items():
        metric = _AIPERF[name]
        values = {s: st.get(s) for s in _AIPERF_STATS}
        if metric in ("output_throughput", "request_throughput"):  # one value for the whole run
            values = {"total": st.get("avg")}
        _aiperf_claims(reading, base, metric, st.get("unit"), values, n_claimed)
    errs = doc.get("error_summary")
    if isinstance(errs, list) and errs:
        n = sum(int(num(e.get("count")) or 0) for e in errs if isinstance(e, dict))
        reading.notes.append(f"{n} failed requests in error_summary (not listed one by one)")
    return reading


def _aiperf_claims(reading: Reading, base: dict, metric: str, unit: str | None, values: dict, n_claimed) -> None:
    for s, v in values.items():
        x = to_ms(v, unit) if metric.endswith("_ms") else num(v)
        got = claim(base, metric, _p(s), x, n_claimed)
        if got is not None:
            reading.aggregates.append(got)


def aiperf_csv(text: str, rel: str) -> Reading | None:
    """AIPerf's profile_export_aiperf.csv (sections of `Metric,avg,...` and `Metric,Value` rows:
    aggregates), or None."""
    if not text.lstrip("\ufeff \r\n").startswith("Metric,"):
        return None
    base = _aiperf_base(rel, None)
    reading = Reading("aiperf", notes=[AIPERF_NOTE])
    header: list[str] = []
    n_claimed = None
    pending = []
    for rec in csv.reader(io.StringIO(text)):
        if not rec or not any(c.strip() for c in rec):
            header = []
            continue
        if rec[0].strip() == "Metric":
            header = [h.strip().lower() for h in rec]
            continue
        if not header or "metric" not in header:
            continue
        name = rec[header.index("metric")] if header[0] == "metric" else None
        if name is None:
            continue
        unit_m = re.search(r"\(([^)]*)\)\s*$", name)
        unit = unit_m.group(1) if unit_m else None
        key = "_".join(columns.words(re.sub(r"\([^)]*\)\s*$", "", name)))
        if key == "request_count" and "value" in header:
            n_claimed = num(rec[header.index("value")])
        metric = _AIPERF.get(key)
        if metric is None:
            continue
        vals = {h: rec[j] for j, h in enumerate(header) if h in _AIPERF_STATS and j < len(rec)}
        if "value" in header:
            vals = {"total" if metric in ("output_throughput", "request_throughput") else "avg":
                    rec[header.index("value")]}
        pending.append((metric, unit, vals))
    if not pending:
        return None
    for metric, unit, vals in pending:
        _aiperf_claims(reading, base, metric, unit, vals, n_claimed)
    return reading

