"""Per-repetition metrics from raw token timestamps, and per-run aggregates.

Definitions (docs/metrics.md is the glossary; all clocks are time.perf_counter_ns / CLOCK_MONOTONIC):
  ttft_ms    = t_first - t_request            (tokenisation + prefill + first sampling; never load)
  decode_ms  = t_last - t_first;  decode_tps = (n_gen - 1) / decode_s
  itl_ms[i]  = t_i - t_{i-1}
  e2e_ms     = t_last - t_request; e2e_tps   = n_gen / e2e_s
  prefill_tps = n_prompt / prompt_eval_s      (prompt_eval_ms: the engine's own prefill time)
  decode_engine_ms  = time inside llama_decode of the decode steps (native: its per-token clock;
                      python: llama_perf_context's t_eval_ms); decode_engine_tps = (n_gen - 1) / it
  sampling_ms = mean time per token inside llama_sampler_sample
Aggregates are derived from the raw per-repetition values, never stored instead of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

NS_PER_MS = 1_000_000

# The per-repetition metrics that are aggregated per run, in display order.
AGGREGATED = ("ttft_ms", "prompt_eval_ms", "prefill_tps", "decode_ms", "decode_tps", "e2e_ms",
              "e2e_tps", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms", "itl_max_ms")
# Aggregated too, but added after schema-1 records were first written: records of older harness
# versions have no such values, so their aggregates carry no entry (rather than a null one).
AGGREGATED_OPTIONAL = ("decode_engine_tps",)
# Per-repetition values added later: written only when known, so older records round-trip unchanged.
OPTIONAL_REP_FIELDS = ("decode_engine_ms", "decode_engine_tps", "sampling_ms")


@dataclass(frozen=True)
class RepMetrics:
    rep: int
    n_prompt_tokens: int
    n_gen_tokens: int
    ttft_ms: float | None
    prompt_eval_ms: float | None
    prefill_tps: float | None
    decode_ms: float | None
    decode_tps: float | None
    e2e_ms: float | None
    e2e_tps: float | None
    itl_p50_ms: float | None
    itl_p90_ms: float | None
    itl_p99_ms: float | None
    itl_max_ms: float | None
    # Ollama-compatible aliases (ns), so data from Ollama-style tools lines up:
    prompt_eval_count: int
    prompt_eval_duration: int | None  # engine prefill time
    eval_count: int  # generated tokens
    eval_duration: int | None  # t_last - t_request - prompt_eval: the generation phase
    total_duration: int | None  # t_request .. t_last (load excluded: load_duration is per run)
    # Engine/sampling split of the decode phase (OPTIONAL_REP_FIELDS):
    decode_engine_ms: float | None = None  # in llama_decode, the n_gen - 1 decode steps
    decode_engine_tps: float | None = None  # (n_gen - 1) / decode_engine_s
    sampling_ms: float | None = None  # mean per generated token

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in OPTIONAL_REP_FIELDS:
            if d[k] is None:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RepMetrics":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def rep_metrics(rep: int, t_request_ns: int, token_ns: Sequence[int], n_prompt_tokens: int,
                prompt_eval_ms: float | None, *, decode_engine_ms: float | None = None,
                sampling_ms: float | None = None) -> RepMetrics:
    """Metrics of one repetition from absolute timestamps (ns) of the request and of each token,
    and (optional) the engine time of its decode steps and the mean sampling time per token."""
    t = np.asarray(token_ns, dtype=np.int64)
    n = int(t.size)
    if n and (t[0] < t_request_ns or np.any(np.diff(t) < 0)):
        raise ValueError("token timestamps must be monotonic and not before the request")
    ttft = (t[0] - t_request_ns) / NS_PER_MS if n else None
    e2e = (t[-1] - t_request_ns) / NS_PER_MS if n else None
    decode = (t[-1] - t[0]) / NS_PER_MS if n >= 2 else None
    itl = np.diff(t) / NS_PER_MS
    pe = prompt_eval_ms if prompt_eval_ms and prompt_eval_ms > 0 else None
    de = decode_engine_ms if n >= 2 and decode_engine_ms and decode_engine_ms > 0 else None
    return RepMetrics(
        rep=rep,
        n_prompt_tokens=n_prompt_tokens,
        n_gen_tokens=n,
        ttft_ms=ttft,
        prompt_eval_ms=pe,
        prefill_tps=(n_prompt_tokens / (pe / 1e3)) if pe else None,
        decode_ms=decode,
        decode_tps=((n - 1) / (decode / 1e3)) if decode else None,
        e2e_ms=e2e,
        e2e_tps=(n / (e2e / 1e3)) if e2e else None,
        itl_p50_ms=_pct(itl, 50),
        itl_p90_ms=_pct(itl, 90),
        itl_p99_ms=_pct(itl, 99),
        itl_max_ms=float(itl.max()) if itl.size else None,
        prompt_eval_count=n_prompt_tokens,
        prompt_eval_duration=int(round(pe * NS_PER_MS)) if pe else None,
        eval_count=n,
        eval_duration=int(round((e2e - pe) * NS_PER_MS)) if (e2e is not None and pe and e2e > pe) else None,
        total_duration=int(t[-1] - t_request_ns) if n else None,
        decode_engine_ms=de,
        decode_engine_tps=((n - 1) / (de / 1e3)) if de else None,
        sampling_ms=sampling_ms if n else None,
    )


@dataclass(frozen=True)
class Stat:
    """Summary of one metric over repetitions. ci95 is the t interval of the mean (None for n < 2)."""

    n: int
    mean: float
    median: float
    std: float | None
    cv: float | None
    min: float
    max: float
    ci95_low: float | None
    ci95_high: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(values: Iterable[float | None]) -> Stat | None:
    """n, mean, median, sample std, CV, min, max and the 95% t-interval of the mean.

    Missing values (None) are left out, never counted as zero. Returns None when nothing is left.
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return None
    mean = float(v.mean())
    if v.size >= 2:
        from scipy import special  # the t quantile alone: scipy.stats costs a second to import

        std = float(v.std(ddof=1))
        half = float(special.stdtrit(v.size - 1, 0.975)) * std / math.sqrt(v.size)
        lo, hi = mean - half, mean + half
        cv = std / mean if mean else None
    else:
        std = cv = lo = hi = None
    return Stat(n=int(v.size), mean=mean, median=float(np.median(v)), std=std, cv=cv,
                min=float(v.min()), max=float(v.max()), ci95_low=lo, ci95_high=hi)


def aggregate(reps: Sequence[RepMetrics], itl_ms: Sequence[Sequence[float]] = ()) -> dict:
    """Per-run aggregates: a Stat per metric, token-weighted decode rate, pooled ITL percentiles.

    `itl_ms` holds each repetition's inter-token latencies; pooling them (rather than averaging
    per-repetition percentiles) gives the true percentiles over all tokens of the run.
    """
    out: dict = {}
    for name in AGGREGATED:
        s = summarize(getattr(r, name) for r in reps)
        out[name] = s.to_dict() if s else None
    for name in AGGREGATED_OPTIONAL:
        s = summarize(getattr(r, name) for r in reps)
        if s:
            out[name] = s.to_dict()
    dec = [(r.n_gen_tokens - 1, r.decode_ms) for r in reps if r.decode_ms]
    total_s = sum(ms for _, ms in dec) / 1e3
    out["decode_tps_weighted"] = (sum(n for n, _ in dec) / total_s) if total_s > 0 else None
    pooled = np.concatenate([np.asarray(x, dtype=float) for x in itl_ms]) if itl_ms else np.empty(0)
    out["itl_pooled_ms"] = {
        "n": int(pooled.size),
        "p50": _pct(pooled, 50), "p90": _pct(pooled, 90), "p99": _pct(pooled, 99),
        "max": float(pooled.max()) if pooled.size else None,
    }
    out["n_gen_tokens_total"] = int(sum(r.n_gen_tokens for r in reps))
    return out
