"""The canonical columns foreign files are read by: what a column *means*, whatever the tool named it.

A header such as `mean_ttft_s`, `Generation Time (ms)`, `average_tokens_per_second` or `eval_s_mean`
is split into three parts: a statistic (mean, p95, ... or none: a single measurement), a unit (s,
ms, us, ns; tok/s) and a base name, which the alias table maps to one canonical column of the tidy
table (`ttft_ms`, `e2e_ms`, `decode_tps`, ...) or to a parameter or metadata. Values are converted
to the canonical unit (durations to ms). A duration whose name gives no unit (`ttft`, `latency`,
`prompt_eval`) takes its unit from a default the alias names (Ollama's `*_duration` are ns) or,
failing that, from the magnitude of its values (`guess_duration_unit`), and the reader says which.

What a file needs to be read as data is decided by `Layout`: at least one throughput or latency
column, plus something that names the configuration a row measured (a parameter, the model, a
test or config name, the prompt).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

#: Duration units -> factor to milliseconds.
DURATION_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "min": 6e4}


@dataclass(frozen=True)
class Canonical:
    """One meaning a column can have.

    name: the tidy-table column it fills (or a reader-level key: "status", "error", "n_claimed",
    "tag", "prompt_index", "ignored"); role: "metric" | "param" | "meta" | "status" | "error" |
    "count" | "ignored"; kind: "duration" (converted to ms) | "rate" (tok/s) | "tokens" | "number" |
    "text" | "flag"; default_unit: the unit of a duration whose name gives none (None: guessed from
    its values).
    """

    name: str
    role: str
    kind: str
    aliases: tuple[str, ...]
    default_unit: str | None = None


CANONICAL: tuple[Canonical, ...] = (
    # metrics
    Canonical("ttft_ms", "metric", "duration", ("ttft", "time_to_first_token", "first_token_latency",
                                                 "time_to_first_token_latency", "first_token")),
    Canonical("decode_tps", "metric", "rate", ("tokens", "tokens_per_second", "tok", "tps", "token_rate",
                                               "eval_rate", "decode_rate", "decode", "generation_rate",
                                               "generation_speed", "output_tokens_per_second",
                                               "output_token_throughput", "output_throughput", "tg",
                                               "predicted_per_second", "gen", "speed", "throughput",
                                               "decode_throughput", "tokens_sec", "tps_decode")),
    Canonical("prefill_tps", "metric", "rate", ("prompt_eval_rate", "prompt_tokens_per_second",
                                                "prefill", "prefill_rate", "pp", "prompt_per_second",
                                                "prompt_throughput", "input_tokens_per_second",
                                                "prefill_throughput")),
    Canonical("load_ms", "metric", "duration", ("load", "load_time", "load_duration", "model_load",
                                                "model_load_time")),
    Canonical("prompt_eval_ms", "metric", "duration", ("prompt_eval", "prompt_eval_duration", "prompt_eval_time",
                                                       "prefill_time", "prefill_latency", "prompt_time",
                                                       "prompt_processing_time")),
    Canonical("decode_ms", "metric", "duration", ("eval", "eval_duration", "eval_time", "decode_time",
                                                  "decode_latency", "predicted", "generation_duration")),
    Canonical("e2e_ms", "metric", "duration", ("total_duration", "e2e", "e2e_latency", "e2el", "end_to_end_latency",
                                               "request_latency", "latency", "total_time", "generation_time",
                                               "response_time", "duration", "elapsed", "elapsed_time",
                                               "wall_time", "total_latency"), None),
    Canonical("itl_ms", "metric", "duration", ("itl", "inter_token_latency", "tpot", "time_per_output_token",
                                               "per_token_latency", "time_per_token", "predicted_per_token")),
    Canonical("n_gen_tokens", "metric", "tokens", ("eval_count", "output_tokens", "completion_tokens",
                                                   "generated_tokens", "tokens_generated", "n_gen",
                                                   "predicted_n", "output_len", "num_tokens", "output_length",
                                                   "tokens_predicted", "total_tokens_generated", "n_tokens",
                                                   "token_count", "output_token_count",
                                                   "output_sequence_length")),
    Canonical("n_prompt_tokens", "param", "tokens", ("prompt_eval_count", "prompt_tokens", "input_tokens",
                                                     "prompt_n", "n_prompt", "input_len", "input_length",
                                                     "prompt_token_count", "input_sequence_length",
                                                     "tokens_evaluated")),
    Canonical("energy_per_token_j", "metric", "number", ("energy_per_token", "energy_per_token_j",
                                                         "joules_per_token")),
    Canonical("vram_used_mib", "metric", "number", ("vram_used_mib", "vram_mib", "gpu_memory_mib",
                                                    "gpu_memory_used_mib", "vram_used", "gpu_memory_used")),
    Canonical("gpu_util_pct", "metric", "number", ("gpu_util", "gpu_utilization", "gpu_util_pct",
                                                   "gpu_utilization_pct", "gpu_usage")),
    Canonical("power_w", "metric", "number", ("power", "power_w", "gpu_power", "gpu_power_w", "power_draw")),
    # parameters
    Canonical("n_gpu_layers", "param", "text", ("num_gpu", "n_gpu_layers", "ngl", "gpu_layers", "n_gpu")),
    Canonical("n_ctx", "param", "number", ("num_ctx", "n_ctx", "ctx", "ctx_size", "context_size", "context",
                                           "context_length", "context_window")),
    Canonical("n_batch", "param", "number", ("num_batch", "n_batch", "batch_size", "batch")),
    Canonical("n_ubatch", "param", "number", ("n_ubatch", "ubatch_size")),
    Canonical("n_threads", "param", "number", ("num_thread", "n_threads", "threads", "num_threads")),
    Canonical("temperature", "param", "number", ("temperature", "temp")),
    Canonical("top_p", "param", "number", ("top_p",)),
    Canonical("top_k", "param", "number", ("top_k",)),
    Canonical("min_p", "param", "number", ("min_p",)),
    Canonical("repeat_penalty", "param", "number", ("repeat_penalty", "repetition_penalty")),
    Canonical("max_tokens", "param", "number", ("num_predict", "max_tokens", "n_predict", "max_new_tokens",
                                                "max_output_tokens")),
    Canonical("flash_attn", "param", "text", ("flash_attn", "flash_attention")),
    Canonical("request_rate", "param", "number", ("request_rate", "rate", "qps", "requests_per_second_target",
                                                  "target_rate")),
    Canonical("concurrency", "param", "number", ("concurrency", "max_concurrency", "num_concurrent",
                                                 "concurrent_requests", "streams", "num_workers", "clients")),
    # identity and metadata
    Canonical("model", "meta", "text", ("model", "model_name", "model_id", "llm", "model_tag")),
    Canonical("tag", "meta", "text", ("tag", "quant", "quantization", "quantisation", "variant_tag")),
    Canonical("job", "meta", "text", ("config_name", "test_name", "name", "config", "scenario", "test",
                                      "variant", "configuration_name", "label", "run_name", "benchmark",
                                      "case", "experiment")),
    Canonical("workload", "meta", "text", ("prompt", "prompt_text", "prompt_label", "workload", "task", "query",
                                           "question", "input", "input_text")),
    Canonical("prompt_index", "meta", "text", ("prompt_index", "prompt_id", "prompt_idx", "question_id",
                                               "sample_id", "prompt_no")),
    Canonical("started_at", "meta", "text", ("timestamp", "created_at", "date", "time", "datetime", "started_at",
                                             "start_time", "run_started")),
    Canonical("hardware", "meta", "text", ("hardware", "gpu", "gpu_name", "device", "host_gpu")),
    Canonical("engine", "meta", "text", ("engine", "backend", "runtime")),
    Canonical("rep", "meta", "number", ("rep", "repetition", "iteration", "run_index", "trial", "attempt")),
    # outcome
    Canonical("status", "status", "flag", ("success", "succeeded", "ok", "passed", "status", "successful",
                                           "completed_ok", "is_success")),
    Canonical("error", "error", "text", ("error", "errors", "error_message", "exception", "failure", "err",
                                         "error_msg", "failure_reason")),
    Canonical("n_claimed", "count", "number", ("n", "count", "total_requests", "num_requests", "requests",
                                               "n_requests", "n_samples", "samples", "num_samples", "runs",
                                               "num_runs", "completed", "request_count", "successful_requests")),
    # known and deliberately not used (text of responses, sizes of outputs)
    Canonical("ignored", "ignored", "text", ("response", "response_text", "response_chars", "output", "output_text",
                                             "completion", "response_length", "total_tokens", "notes", "comment",
                                             "id", "request_id", "run_id", "uuid")),
)

BY_ALIAS: dict[str, Canonical] = {}
for _c in CANONICAL:
    for _a in _c.aliases:
        BY_ALIAS.setdefault(_a, _c)

#: The statistics a column name can carry; "mean" covers avg/average.
_STAT_WORDS = {"mean": "mean", "avg": "mean", "average": "mean", "median": "median", "std": "std",
               "stdev": "std", "stddev": "std", "min": "min", "max": "max", "minimum": "min", "maximum": "max"}
_PCTL = re.compile(r"^p(\d{1,3}(?:\.\d+)?)$")
_UNIT_WORDS = {"ns": "ns", "nanoseconds": "ns", "us": "us", "µs": "us", "microseconds": "us", "ms": "ms",
               "millis": "ms", "milliseconds": "ms", "msec": "ms", "s": "s", "sec": "s", "secs": "s", "seconds": "s",
               "second": "s"}
_RATE_TAILS = (("tokens", "per", "second"), ("tokens", "per", "sec"), ("tok", "s"), ("tokens", "s"), ("t", "s"),
               ("tokens", "sec"), ("tok", "sec"), ("per", "second"), ("per", "sec"), ("tps",))
#: The phase a rate's name gives once its unit is taken off ("prompt_per_second" -> prefill).
_RATE_OF = {"prompt": "prefill", "prompt_eval": "prefill", "input": "prefill", "prefill": "prefill",
            "predicted": "decode", "eval": "decode", "output": "decode", "generated": "decode",
            "generation": "decode", "decode": "decode", "completion": "decode", "": "tps"}
#: Ollama's API durations: ns when the name gives no unit (its documented unit).
_NS_NAMES = frozenset({"load_duration", "prompt_eval_duration", "eval_duration", "total_duration"})
_PAREN = re.compile(r"[\(\[]([^\)\]]*)[\)\]]")
_NON_WORD = re.compile(r"[^0-9a-zµ]+")


@dataclass(frozen=True)
class Parsed:
    """A header split into meaning: `canonical` (None when unknown), `stat` (None: one measurement;
    "mean", "median", "std", "min", "max", "p95", "total", "value"), `unit` as named (None when the
    name gives none) and the raw header."""

    raw: str
    canonical: Canonical | None
    stat: str | None
    unit: str | None


def words(name: str) -> list[str]:
    """A header as lower-case words: 'Tokens per Second' -> ['tokens', 'per', 'second']."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())  # camelCase -> camel_case
    return [w for w in _NON_WORD.split(s.lower().replace("tok/s", "tok_s").replace("t/s", "t_s")) if w]


@lru_cache(maxsize=4096)
def parse(header: str) -> Parsed:
    """The meaning of one column name (see the module docstring)."""
    unit = None
    paren = _PAREN.findall(header)
    bare = _PAREN.sub(" ", header)
    for p in paren:
        pw = words(p)
        if pw and " ".join(pw) in ("tok s", "tokens s", "t s", "tokens sec", "tokens per second", "tokens second"):
            unit = "tok/s"
        elif len(pw) == 1 and pw[0] in _UNIT_WORDS:
            unit = _UNIT_WORDS[pw[0]]
    w = words(bare)
    stat = None
    # statistic words at either end
    for _ in range(2):
        if w and (w[0] in _STAT_WORDS or _PCTL.match(w[0])) and len(w) > 1:
            stat = _STAT_WORDS.get(w[0]) or w[0]
            w = w[1:]
        if w and (w[-1] in _STAT_WORDS or _PCTL.match(w[-1])) and len(w) > 1:
            stat = _STAT_WORDS.get(w[-1]) or w[-1]
            w = w[:-1]
    # unit words at the end
    for tail in _RATE_TAILS:
        if len(w) > len(tail) and tuple(w[-len(tail):]) == tail:
            unit = "tok/s"
            w = w[: -len(tail)]
            rate = _RATE_OF.get("_".join(w))
            if rate:
                w = [rate]
            break
        if tuple(w) == tail and tail != ("per", "second"):
            unit = "tok/s"
            w = ["tokens"]
            break
    if unit is None and len(w) > 1 and w[-1] in _UNIT_WORDS:
        unit = _UNIT_WORDS[w[-1]]
        w = w[:-1]
    for _ in range(1):  # a statistic after the unit: eval_s_mean was handled above, ttft_ms_p95 here
        if w and len(w) > 1 and (w[-1] in _STAT_WORDS or _PCTL.match(w[-1])):
            stat = _STAT_WORDS.get(w[-1]) or w[-1]
            w = w[:-1]
            if unit is None and len(w) > 1 and w[-1] in _UNIT_WORDS:
                unit = _UNIT_WORDS[w[-1]]
                w = w[:-1]
    base = "_".join(w)
    canon = BY_ALIAS.get(base)
    if unit is None and base in _NS_NAMES:
        unit = "ns"
    if canon is None and base.startswith("total_") and BY_ALIAS.get(base[6:]) is not None:
        c2 = BY_ALIAS[base[6:]]
        if c2.kind in ("tokens", "duration") and c2.role == "metric":
            canon, stat = c2, stat or "total"
    if canon is None and base.endswith("_count") and base[:-6] in ("prompt_eval", "eval"):
        canon = BY_ALIAS.get(base)
    if canon is not None and canon.kind == "rate" and unit not in (None, "tok/s"):
        canon = None  # "prompt_ms" is not a rate: look again as a duration
        for c in CANONICAL:
            if c.kind == "duration" and base in c.aliases:
                canon = c
    if canon is None and unit in DURATION_MS:
        # llama-server's prompt_ms / predicted_ms: the base names a rate's phase, the unit a duration
        phase = {"prompt": "prompt_eval_ms", "predicted": "decode_ms", "prefill": "prompt_eval_ms",
                 "decode": "decode_ms", "generation": "e2e_ms", "tokens": None}.get(base)
        if phase:
            canon = next(c for c in CANONICAL if c.name == phase)
    if canon is not None and canon.kind == "duration" and unit == "tok/s":
        canon = None
    if canon is not None and canon.name == "decode_tps" and base in ("tokens", "tok") and unit is None and not stat:
        canon = BY_ALIAS["output_tokens"]  # a bare "Tokens" column is a count, not a rate
    return Parsed(header, canon, stat, unit)


def guess_duration_unit(values: list[float]) -> str:
    """The unit of durations whose name gives none, from their magnitude: a median of at least 1e6
    is ns (a millisecond or more in ns), under 30 is s (no latency of local inference is reported
    as under 30 ms while being whole seconds), else ms."""
    vals = sorted(v for v in values if v is not None and math.isfinite(v) and v > 0)
    if not vals:
        return "ms"
    med = vals[len(vals) // 2]
    if med >= 1e6:
        return "ns"
    if med < 30:
        return "s"
    return "ms"


def to_canonical(c: Canonical, value: float, unit: str | None) -> float:
    """`value` in the canonical unit of `c` (durations in ms)."""
    if c.kind == "duration":
        return value * DURATION_MS.get(unit or c.default_unit or "ms", 1.0)
    return value


@dataclass
class Layout:
    """How one file's columns are read: which column fills what, and what is left over."""

    columns: list[Parsed]
    used: dict[int, Parsed] = field(default_factory=dict)  # column index -> meaning
    unknown: list[str] = field(default_factory=list)
    metric_cols: list[int] = field(default_factory=list)
    identity_cols: list[int] = field(default_factory=list)
    aggregate: bool = False

    @property
    def readable(self) -> bool:
        return bool(self.metric_cols) and bool(self.identity_cols)

    def why_not(self) -> str:
        if not self.metric_cols:
            return "no throughput or latency column"
        return "no column names the configuration (a parameter, model, test or config name, or prompt)"


#: Metric columns that make a row a measurement (a count of tokens alone does not).
DEFINING = frozenset({"ttft_ms", "decode_tps", "prefill_tps", "prompt_eval_ms", "decode_ms", "e2e_ms", "itl_ms",
                      "load_ms"})


def layout(header: list[str]) -> Layout:
    """The Layout of a table with `header`: each column's meaning; a column whose meaning another
    already took stays unknown (the first wins), and so does one of unknown meaning."""
    parsed = [parse(h) for h in header]
    lay = Layout(parsed)
    taken: set[tuple[str, str | None]] = set()
    for i, p in enumerate(parsed):
        c = p.canonical
        if c is None:
            if p.raw.strip():
                lay.unknown.append(p.raw.strip())
            continue
        key = (c.name, p.stat)
        if key in taken and c.role != "ignored":
            lay.unknown.append(p.raw.strip())
            continue
        taken.add(key)
        lay.used[i] = p
        if c.role == "metric" and c.name in DEFINING:
            lay.metric_cols.append(i)
            if p.stat is not None:
                lay.aggregate = True
        elif c.role in ("param",) and c.name != "n_prompt_tokens" or c.name in ("model", "job", "workload",
                                                                                "prompt_index", "tag"):
            lay.identity_cols.append(i)
    return lay
