"""The one metric registry: name, unit, label, which direction is better, definition, whether the
quantity is non-negative, the largest value that is still a measurement, and the default metric
lists. The report, compare, effects, best, exports, ingest, the sweep tables and the glossary
(docs/metrics.md) read it instead of keeping their own lists (which drifted apart).

Why a module of its own and not part of `fields.py`: `fields.FIELDS` describes the columns of the
sweep-level runs.csv (where each lives in run.json and how the terminal prints it: statistics of a
metric, configuration, provenance); the registry describes the *quantities* themselves, whatever
table carries them (the tidy sample table, runs.csv, compare rows, facts of the narrative). Several
fields are statistics of one metric (`decode_tps_mean`, `decode_tps_cv`), and most users of the
registry (analysis, report) never touch run.json. So fields.py reads the registry, never the
reverse. The module imports nothing of the harness: any module may use it without a cycle.

Units are written the same way everywhere (and the narrative's fact check understands them):
"ms", "ns", "tok/s", "tokens", "J", "J/token", "tok/J", "MiB", "%", "W", "MHz", "GB/s",
"fraction" (a ratio shown as a percentage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Statistic suffixes of configuration / runs.csv columns (`<metric>_<stat>`), longest first.
STAT_SUFFIXES = ("_ci95_low", "_ci95_high", "_median", "_mean", "_std", "_min", "_max", "_cv", "_n")

# Plausibility bounds: beyond these a value is not a measurement of local inference (a unit error,
# an overflow, a corrupt file), and ingest rejects it with the reason.
_MAX_RATE_TPS = 1e7  # decode: ~1e4 tok/s is a very fast GPU today
_MAX_PREFILL_TPS = 1e8
_MAX_MS = 1e9  # ~11.6 days
_MAX_NS = _MAX_MS * 1e6
_MAX_TOKENS = 1e9


@dataclass(frozen=True)
class Metric:
    """One measured or derived quantity.

    name: the column / key name, unit in the name; unit: as in the module docstring;
    label: short human name without the unit ("TTFT", "decode"); better: "higher" | "lower" | None
    (no better direction, e.g. utilisation); definition: one line, as in the glossary;
    non_negative: a negative value is not a measurement; max_plausible: a value above it is not a
    measurement (None: no bound); scope: "rep" (one value per repetition), "run" (measured once per
    run, repeated on its samples), "aggregate" (computed over a run's repetitions), "alias"
    (Ollama-compatible integer field); fmt: display format of a value.
    """

    name: str
    unit: str
    label: str
    better: str | None
    definition: str
    non_negative: bool = True
    max_plausible: float | None = None
    scope: str = "rep"
    fmt: str = "{:.1f}"

    @property
    def heading(self) -> str:
        """Label with the unit in parentheses, for plot axes and report headers: "TTFT (ms)"."""
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def short(self) -> str:
        """Label and unit without parentheses, for narrow table headers: "TTFT ms"."""
        return f"{self.label} {self.unit}" if self.unit else self.label


def _m(name, unit, label, better, definition, *, max_plausible=None, scope="rep", fmt="{:.1f}",
       non_negative=True) -> Metric:
    return Metric(name, unit, label, better, definition, non_negative, max_plausible, scope, fmt)


METRICS: tuple[Metric, ...] = (
    # per repetition (harness.metrics.RepMetrics)
    _m("ttft_ms", "ms", "TTFT", "lower", "t_first - t_request: tokenisation + prefill + first sampling; never load",
       max_plausible=_MAX_MS),
    _m("prompt_eval_ms", "ms", "prefill", "lower", "the engine's own prefill time of the prompt",
       max_plausible=_MAX_MS),
    _m("prefill_tps", "tok/s", "prefill", "higher", "n_prompt_tokens / prompt_eval_s",
       max_plausible=_MAX_PREFILL_TPS, fmt="{:.0f}"),
    _m("decode_ms", "ms", "decode", "lower", "t_last - t_first", max_plausible=_MAX_MS),
    _m("decode_tps", "tok/s", "decode", "higher", "(n_gen_tokens - 1) / decode_s (llama-bench's tg t/s)",
       max_plausible=_MAX_RATE_TPS),
    _m("e2e_ms", "ms", "e2e", "lower", "t_last - t_request", max_plausible=_MAX_MS, fmt="{:.0f}"),
    _m("e2e_tps", "tok/s", "e2e", "higher", "n_gen_tokens / e2e_s", max_plausible=_MAX_RATE_TPS),
    _m("itl_p50_ms", "ms", "ITL p50", "lower", "median inter-token latency t_i - t_(i-1) of a repetition",
       max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("itl_p90_ms", "ms", "ITL p90", "lower", "90th percentile inter-token latency of a repetition",
       max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("itl_p99_ms", "ms", "ITL p99", "lower", "99th percentile inter-token latency of a repetition",
       max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("itl_max_ms", "ms", "ITL max", "lower", "largest inter-token latency of a repetition",
       max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("decode_engine_ms", "ms", "decode (engine)", "lower",
       "time inside llama_decode of the n_gen_tokens - 1 decode steps", max_plausible=_MAX_MS),
    _m("decode_engine_tps", "tok/s", "decode (engine)", "higher",
       "(n_gen_tokens - 1) / decode_engine_s: decode without sampling and driver overhead",
       max_plausible=_MAX_RATE_TPS),
    _m("sampling_ms", "ms", "sampling", "lower", "mean time per generated token inside llama_sampler_sample",
       max_plausible=_MAX_MS, fmt="{:.3f}"),
    _m("n_gen_tokens", "tokens", "generated", None, "tokens generated in a repetition",
       max_plausible=_MAX_TOKENS, fmt="{:.0f}"),
    _m("n_prompt_tokens", "tokens", "prompt", None, "prompt length in tokens", max_plausible=_MAX_TOKENS,
       fmt="{:.0f}"),
    # Ollama-compatible aliases (integers)
    _m("prompt_eval_count", "tokens", "prompt eval count", None, "= n_prompt_tokens", scope="alias",
       max_plausible=_MAX_TOKENS, fmt="{:.0f}"),
    _m("prompt_eval_duration", "ns", "prompt eval duration", "lower", "= prompt_eval_ms in ns", scope="alias",
       max_plausible=_MAX_NS, fmt="{:.0f}"),
    _m("eval_count", "tokens", "eval count", None, "= n_gen_tokens", scope="alias", max_plausible=_MAX_TOKENS,
       fmt="{:.0f}"),
    _m("eval_duration", "ns", "eval duration", "lower", "total_duration - prompt_eval_duration (generation phase)",
       scope="alias", max_plausible=_MAX_NS, fmt="{:.0f}"),
    _m("total_duration", "ns", "total duration", "lower", "= e2e_ms in ns; excludes load, unlike Ollama's",
       scope="alias", max_plausible=_MAX_NS, fmt="{:.0f}"),
    # per run, over the repetitions
    _m("decode_tps_weighted", "tok/s", "decode (weighted)", "higher",
       "sum(n_gen_tokens - 1) / sum(decode_s) over repetitions", scope="aggregate", max_plausible=_MAX_RATE_TPS),
    _m("itl_pooled_p50_ms", "ms", "ITL p50 (pooled)", "lower", "median of the ITLs of all repetitions together",
       scope="aggregate", max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("itl_pooled_p90_ms", "ms", "ITL p90 (pooled)", "lower", "p90 of the ITLs of all repetitions together",
       scope="aggregate", max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("itl_pooled_p99_ms", "ms", "ITL p99 (pooled)", "lower", "p99 of the ITLs of all repetitions together",
       scope="aggregate", max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("itl_pooled_max_ms", "ms", "ITL max (pooled)", "lower", "largest ITL of all repetitions",
       scope="aggregate", max_plausible=_MAX_MS, fmt="{:.2f}"),
    _m("n_gen_tokens_total", "tokens", "gen tokens", None, "tokens generated over all repetitions",
       scope="aggregate", max_plausible=_MAX_TOKENS, fmt="{:.0f}"),
    # measured once per run
    _m("load_ms", "ms", "load", "lower",
       "model + context creation, once per load (empty where the point reused a loaded model: load_reused)",
       scope="run", max_plausible=_MAX_MS, fmt="{:.0f}"),
    _m("energy_j", "J", "energy", "lower", "GPU energy of a phase: counter delta, or integrated power",
       scope="run", max_plausible=1e12, fmt="{:.1f}"),
    _m("energy_per_token_j", "J/token", "energy per token", "lower", "decode energy_j / generated tokens",
       scope="run", max_plausible=1e6, fmt="{:.3g}"),
    _m("tokens_per_j", "tok/J", "tokens per joule", "higher", "decode tokens / energy_j", scope="run",
       max_plausible=1e9, fmt="{:.3g}"),
    _m("vram_used_mib", "MiB", "VRAM", "lower", "max GPU memory used during decode", scope="run",
       max_plausible=1e8, fmt="{:.0f}"),
    _m("gpu_util_pct", "%", "GPU util", None, "mean GPU utilisation during decode", scope="run",
       max_plausible=100.0, fmt="{:.0f}"),
    _m("power_w", "W", "power", "lower", "mean GPU power during decode", scope="run", max_plausible=1e5,
       fmt="{:.0f}"),
    _m("decode_tps_ceiling", "tok/s", "decode ceiling", None,
       "peak memory bandwidth / model weight bytes (roofline upper bound)", scope="run",
       max_plausible=_MAX_RATE_TPS),
    _m("bandwidth_efficiency", "fraction", "bandwidth efficiency", "higher", "decode_tps (mean) / decode_tps_ceiling",
       scope="run", max_plausible=100.0, fmt="{:.1%}"),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

# --- default lists (each names its users; they read these instead of keeping their own) -----------

#: Report executive summary and configuration table (report/build.py).
HEADLINE_METRICS = ("decode_tps", "ttft_ms", "prefill_tps", "energy_per_token_j", "vram_used_mib", "itl_p99_ms")
#: Effects of the varying parameters (analysis/effects.py).
EFFECT_METRICS = ("decode_tps", "ttft_ms", "prefill_tps", "energy_per_token_j", "vram_used_mib")
#: A/B comparison and regression checks (analysis/compare.py).
COMPARE_METRICS = ("decode_tps", "ttft_ms", "prefill_tps", "e2e_ms", "energy_per_token_j")
#: A configuration is noisy when the CV of one of these is high (analysis/stats.py).
NOISE_METRICS = ("decode_tps", "ttft_ms")
#: Per-run means the pytest-benchmark export and fixture carry in extra_info.
EXTRA_INFO_METRICS = ("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms", "prompt_eval_ms", "decode_ms",
                      "itl_p50_ms", "itl_p99_ms", "n_gen_tokens", "load_ms")
#: Metrics measured once per run (analysed with the run as the unit) that the tidy table carries.
RUN_LEVEL_METRICS = ("load_ms", "energy_per_token_j", "vram_used_mib", "gpu_util_pct", "power_w",
                     "bandwidth_efficiency")


def get(name: str) -> Metric:
    """The metric `name`; KeyError names the unknown metric."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r} (not in harness.registry.METRICS)") from None


def base_metric(column: str) -> str | None:
    """The registry metric a column is about: the name itself, or `<metric>_<stat>` with a stat
    suffix (decode_tps_mean -> decode_tps); None when it is no metric's."""
    if column in BY_NAME:
        return column
    for s in STAT_SUFFIXES:
        if column.endswith(s) and column[: -len(s)] in BY_NAME:
            return column[: -len(s)]
    return None


def better(name: str) -> str | None:
    """"higher", "lower", or None (no better direction, or not a metric) for a metric or one of
    its statistic columns (a CV is better lower; a count has no direction)."""
    base = base_metric(name)
    if base is None or name.endswith("_n"):
        return None
    if name.endswith(("_cv", "_std")):
        return "lower"
    return BY_NAME[base].better


def unit(name: str) -> str:
    """Unit of a metric or one of its statistic columns ("" for counts and unknown names;
    "fraction" for a CV)."""
    base = base_metric(name)
    if base is None or name.endswith("_n"):
        return ""
    if name.endswith("_cv"):
        return "fraction"
    return BY_NAME[base].unit


def label(name: str) -> str:
    """Short human label of a metric (the name itself when it is not one)."""
    m = BY_NAME.get(name)
    return m.label if m else name


def implausible(name: str, value: float) -> str | None:
    """Why `value` cannot be a measurement of metric `name`, in words without the value ("not
    finite", "negative", "above the plausible maximum of 1e+07 tok/s"), or None when it can."""
    m = BY_NAME[name]
    if not math.isfinite(value):
        return "not finite"
    if m.non_negative and value < 0:
        return "negative"
    if m.max_plausible is not None and value > m.max_plausible:
        return f"above the plausible maximum of {m.max_plausible:g} {m.unit}"
    return None


def glossary_table() -> str:
    """The Markdown table of every metric, as docs/metrics.md carries it (checked by a test)."""
    lines = ["| name | unit | better | definition |", "|---|---|---|---|"]
    for m in METRICS:
        lines.append(f"| `{m.name}` | {m.unit} | {m.better or '-'} | {m.definition} |")
    return "\n".join(lines) + "\n"
