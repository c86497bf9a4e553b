"""Tables and JSON documents read by what their columns mean (`columns`), not by an exact header.

`TableReader` reads a CSV (or JSON Lines of flat objects) row by row: each column fills the tidy
column its name means, in its unit; extra columns become parameters or metadata (model, tag,
timestamp, prompt), text columns of unknown meaning (a test's "Tone") become part of the workload
label so that rows differing in them are not pooled, and the rest are listed in the note as not
used. A success flag that says false, or an error text, makes the row a failure. A file whose
throughput or latency columns carry a statistic (`mean_tokens_s`, `p95_ttft_ms`) holds
pre-aggregated values: each row becomes aggregate claims, never samples.

`json_records` walks a JSON document of unknown shape for objects that carry a throughput or
latency, taking their configuration from sibling `configuration`/`config`/`params` objects and
their names from the keys above them (an agent run's `variants.fast.metrics.aggregate_metrics`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Iterator

from . import columns
from .columns import DEFINING, Layout, Parsed
from .foreign import label, num, synthetic_id
from .reading import Reading, claim

#: Ollama-script column names: a table using them is read as the older Ollama tool's.
OLLAMA_NAMES = frozenset({"tokens_s", "ttft_s", "load_s", "prompt_eval_s", "eval_s", "num_gpu", "num_ctx",
                          "eval_count", "prompt_eval_count", "mean_tokens_s", "mean_ttft_s", "mean_load_s",
                          "eval_s_mean", "load_duration", "eval_duration", "num_predict"})
_TRUE = frozenset({"true", "yes", "y", "1", "ok", "success", "succeeded", "passed", "pass", "done", "completed"})
_FALSE = frozenset({"false", "no", "n", "0", "fail", "failed", "failure", "error", "errored", "timeout",
                    "cancelled", "canceled", "aborted"})
#: Ambiguous Ollama names (no unit): the token count they name when their values are whole numbers.
COUNT_OF = {"prompt_eval": "prompt_eval_count", "eval": "eval_count"}
#: Names of objects that hold a configuration's parameters.
CONFIG_KEYS = frozenset({"configuration", "config", "params", "parameters", "options", "settings",
                         "generation_settings", "sampling", "runtime", "args", "model_config"})
#: Words in a path that say the values below are aggregates of requests.
AGG_WORDS = ("aggregate", "summary", "average", "stats", "statistics", "overall")


def flag(v: Any) -> bool | None:
    """A success flag's truth: True, False, or None when it says neither."""
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower() if v is not None else ""
    return True if s in _TRUE else False if s in _FALSE else None


def table_format(header: list[str], lay: Layout) -> str:
    """The source_format of a table read by meaning: the older Ollama tool's names keep their
    formats (ollama-calls: one row per call; ollama-config-calls: per call with a configuration;
    ollama-summary: pre-aggregated), any other table is "csv"."""
    names = {h.strip().lower() for h in header}
    if names & OLLAMA_NAMES:
        if lay.aggregate:
            return "ollama-summary"
        has_config = any(lay.used[i].canonical.role == "param" and lay.used[i].canonical.name != "n_prompt_tokens"
                         for i in lay.identity_cols)
        return "ollama-config-calls" if has_config else "ollama-calls"
    return "csv"


class TableReader:
    """Maps rows (lists of field strings, in header order) to tidy rows; see the module doc."""

    def __init__(self, header: list[str], rel: str, reading: Reading, sample: list[list[str]],
                 lay: Layout | None = None):
        self.header = [h.strip() for h in header]
        self.lay = lay or columns.layout(self.header)
        self.rel, self.reading = rel, reading
        self.fmt = reading.fmt
        ollama = self.fmt.startswith("ollama")
        self.engine = "ollama" if ollama else None
        self.default_job = "ollama" if ollama else None
        self.units: dict[int, str | None] = {}
        for i, p in list(self.lay.used.items()):
            c = p.canonical
            unit = p.unit
            if c.kind == "duration" and unit is None:
                values = [x for x in (num(r[i]) for r in sample if i < len(r)) if x is not None]
                count = COUNT_OF.get("_".join(columns.words(p.raw)))
                if count and values and all(x >= 1 and x == int(x) for x in values):
                    # Ollama's "prompt eval" / "eval" name both a duration and a token count: whole
                    # numbers without a unit are the count
                    self.lay.used[i] = Parsed(p.raw, columns.BY_ALIAS[count], p.stat, None)
                    reading.notes.append(f"{p.raw}: no unit and whole numbers, read as a token count")
                    continue
                unit = columns.guess_duration_unit(values)
                reading.notes.append(f"{p.raw}: no unit in the name, read as {unit} from its values")
            self.units[i] = unit
        self.text_unknown = [i for i, h in enumerate(self.header) if i not in self.lay.used and h]
        self._check_rate(sample)
        self.facets_used: set[str] = set()
        self.ids: dict[tuple, str] = {}
        self.labels: dict[str, str] = {}
        self.reps: Counter = Counter()
        self.malformed = 0
        self.n_agg_rows = 0
        self.failed_aggregates = 0
        self.ollama_style = ollama
        if self.lay.aggregate:
            reading.notes.append("pre-aggregated values (means or percentiles of requests the file does not list): "
                                 "shown as aggregates, not samples")

    def _check_rate(self, sample: list[list]) -> None:
        """Say so when a file's tokens-per-second column is its tokens over its total time (TTFT
        included): an end-to-end rate, which the file calls its throughput, not our decode rate."""
        col = {p.canonical.name: i for i, p in self.lay.used.items() if p.stat is None}
        if not {"decode_tps", "n_gen_tokens", "e2e_ms"} <= col.keys():
            return
        i_r, i_n, i_t = col["decode_tps"], col["n_gen_tokens"], col["e2e_ms"]
        close = total = 0
        for r in sample:
            if len(r) != len(self.header):
                continue
            rate, n, t = num(r[i_r]), num(r[i_n]), num(r[i_t])
            if rate and n and t:
                total += 1
                t_ms = columns.to_canonical(self.lay.used[i_t].canonical, t, self.units.get(i_t))
                close += abs(n / (t_ms / 1e3) - rate) <= 0.02 * rate
        if total and close >= 0.8 * total:
            self.reading.notes.append(f"{self.header[i_r]} is {self.header[i_n]} / {self.header[i_t]} (TTFT "
                                      "included): an end-to-end rate, read as decode_tps as the file states it")

    def _label(self, text: str) -> str:
        got = self.labels.get(text)
        if got is None:
            got = self.labels[text] = label(text)
        return got

    def map(self, fields: list[str]) -> dict | None:
        """The tidy row of one record (None for a blank or malformed one; aggregate claims go to the
        Reading instead)."""
        if not any(f.strip() for f in fields if isinstance(f, str)):
            return None
        if len(fields) != len(self.header):
            self.malformed += 1
            return None
        row: dict = {"source_format": self.fmt, "source_file": self.rel, "engine": self.engine,
                     "job": self.default_job}
        metrics: list[tuple[Parsed, float, int]] = []
        tag = prompt_index = status = None
        n_claimed = None
        facets = []
        for i, p in self.lay.used.items():
            v = fields[i]
            c = p.canonical
            role = c.role
            if role == "metric":
                x = num(v)
                if x is not None:
                    metrics.append((p, columns.to_canonical(c, x, self.units[i]), i))
            elif role == "param":
                if c.name == "n_gpu_layers":
                    s = str(v).strip()
                    if s:
                        row["n_gpu_layers"] = s
                        if p.raw.strip().lower() != "n_gpu_layers":
                            row["offload_param"] = p.raw.strip()
                elif c.kind == "text":
                    row[c.name] = str(v).strip() or None
                else:
                    x = num(v)
                    if x is not None:
                        row[c.name] = x
                    elif str(v).strip():  # "Context: short" is a workload facet, not a context size
                        facets.append(f"{p.raw.strip()}={str(v).strip()}")
            elif role == "meta":
                s = str(v).strip() if v is not None else ""
                if not s:
                    continue
                if c.name == "tag":
                    tag = s
                elif c.name == "prompt_index":
                    prompt_index = s
                elif c.name == "workload":
                    row["workload"] = self._label(s)
                elif c.name == "rep":
                    continue  # reps are counted per configuration below
                else:
                    row[c.name] = s
            elif role == "status":
                status = flag(v)
            elif role == "error":
                s = str(v).strip() if v is not None else ""
                if s and s.lower() not in ("none", "null", "nan", "0", "false"):
                    row["error"] = s
            elif role == "count":
                n_claimed = num(v)
        for i in self.text_unknown:
            s = fields[i].strip() if isinstance(fields[i], str) else ""
            if s and num(s) is None:
                facets.append(f"{self.header[i]}={s}")
                self.facets_used.add(self.header[i])
        if tag:
            m = row.get("model")
            row["model"] = f"{m}:{tag}" if m and ":" not in m else (m or tag)
        if prompt_index is not None and not row.get("workload"):
            row["workload"] = f"prompt {prompt_index}"
        if row.get("workload") is not None:
            # a named prompt's token count is measured per call (0 or missing when the call failed):
            # the prompt names the configuration, its count would only split it
            row.pop("n_prompt_tokens", None)
        if facets:  # "Context=short · Tone=formal", after the prompt's label when there is one
            row["workload"] = " · ".join(([row["workload"]] if row.get("workload") else []) + facets)
        key = (row.get("model"), row.get("job"), row.get("workload"), row.get("n_gpu_layers"),
               *(row.get(k) for k in ("n_ctx", "temperature", "top_p", "top_k", "repeat_penalty", "n_batch",
                                      "n_threads", "max_tokens", "request_rate", "concurrency")))
        rid = self.ids.get(key)
        if rid is None:
            rid = self.ids[key] = synthetic_id(self.rel, key)
        row["run_id"] = rid
        if self.lay.aggregate:
            self.n_agg_rows += 1
            if status is False or row.get("error") or not any(x for _, x, _ in metrics):
                self.failed_aggregates += 1  # a configuration that failed: zeros are not claims
                return None
            for p, x, _ in metrics:
                stat = p.stat or ("total" if p.raw.strip().lower().startswith("total") else "as stated")
                got = claim(row, p.canonical.name, stat, x, n_claimed)
                if got is not None:
                    self.reading.aggregates.append(got)
            return None
        itl = None
        for p, x, _ in metrics:
            if p.canonical.name == "itl_ms":
                itl = x
            else:
                row[p.canonical.name] = x
        if itl is not None and row.get("decode_tps") is None and itl > 0:
            # the mean time between a request's tokens is decode_s / (n - 1): our decode rate's inverse
            row["decode_tps"] = 1000.0 / itl
        if status is False:
            row["status"] = "failed"
            row.setdefault("error", "success flag false")
        row["rep"] = self.reps[rid]
        self.reps[rid] += 1
        return row

    def finish(self) -> None:
        unused = [u for u in self.lay.unknown if u not in self.facets_used]
        if unused:
            self.reading.notes.append("columns not used: " + ", ".join(unused[:12])
                                      + (f" (+{len(unused) - 12} more)" if len(unused) > 12 else ""))
        if self.failed_aggregates:
            self.reading.notes.append(f"{self.failed_aggregates} pre-aggregated rows failed (an error, a false "
                                      "success flag or only zeros): no values claimed")
        if self.malformed:
            self.reading.notes.append(f"{self.malformed} malformed rows dropped (wrong number of fields)")
        if self.facets_used:
            self.reading.notes.append("text columns of unknown meaning kept in the workload label: "
                                      + ", ".join(sorted(self.facets_used)))

    def rows(self, records: Iterable[list[str]]) -> Iterator[dict]:
        for fields in records:
            r = self.map(fields)
            if r is not None:
                yield r
        self.finish()


# --- JSON documents of unknown shape ---------------------------------------------------------------------

def scalar(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _canonical(p, v) -> float | None:
    """A metric's value in its canonical unit (the placed column's unit, the metric's default, or
    for a duration of no stated unit the one its value suggests); None for no number."""
    x = num(v)
    if x is None:
        return None
    unit = p.unit or p.canonical.default_unit
    if p.canonical.kind == "duration" and unit is None:
        unit = columns.guess_duration_unit([x])
    return columns.to_canonical(p.canonical, x, unit)


def node_keys(node: dict) -> set:
    """The meanings of an object's own scalar keys (which a configuration object beside them does
    not override)."""
    out = set()
    for k, v in node.items():
        if isinstance(k, str) and scalar(v):
            c = columns.parse(k).canonical
            if c is not None:
                out.add(("param", c.name) if c.role == "param" else c.name)
    return out


def json_records(doc: Any, rel: str, max_records: int = 100_000) -> Reading | None:
    """The samples and aggregates of a JSON document of no specific format, found by meaning (see
    the module doc); None when no object in it carries a throughput or latency and a name of its
    configuration."""
    found: list[tuple[dict, dict, list]] = []

    def visit(node: Any, ctx: dict, path: list, depth: int) -> None:
        if depth > 40 or len(found) >= max_records:
            return
        if isinstance(node, list):
            for i, item in enumerate(node):
                visit(item, ctx | {"_index": i} if isinstance(item, dict) else ctx, path + [i], depth + 1)
            return
        if not isinstance(node, dict):
            return
        here = dict(ctx)
        config: dict = {}  # parameters of a configuration object at this level: they override outer ones
        metrics: dict = {}
        for k, v in node.items():
            if not isinstance(k, str):
                continue
            if scalar(v):
                p = columns.parse(k)
                c = p.canonical
                if c is None or c.role == "ignored":
                    continue
                if c.role == "metric":
                    metrics[k] = (p, v)
                else:
                    here[c.name if c.role != "param" else ("param", c.name)] = (p, v)
            elif isinstance(v, dict) and k.lower() in CONFIG_KEYS:
                for kk, vv in v.items():
                    if isinstance(kk, str) and scalar(vv):
                        p = columns.parse(kk)
                        if p.canonical is not None and p.canonical.role in ("param", "meta"):
                            key = ("param", p.canonical.name) if p.canonical.role == "param" else p.canonical.name
                            config.setdefault(key, (p, vv))
        here.update({k: v for k, v in config.items() if k not in node_keys(node)})
        if any(p.canonical.name in DEFINING and num(v) is not None for p, v in metrics.values()):
            found.append((here, metrics, path))
        for k, v in node.items():
            if isinstance(v, (dict, list)) and not (isinstance(k, str) and k.lower() in CONFIG_KEYS):
                sub = here
                if isinstance(v, dict) and isinstance(k, str) and columns.parse(k).canonical is None \
                        and k.lower() not in ("metrics", "results", "data", "runs", "variants", "benchmarks",
                                              "aggregate_metrics", "summary", "stats", "statistics", "timings"):
                    sub = here | {"_label": k}
                visit(v, sub, path + [k], depth + 1)

    visit(doc, {}, [], 0)
    if not found:
        return None
    reading = Reading("json")
    if len(found) >= max_records:
        reading.notes.append(f"only the first {max_records} objects with measurements read")
    rows: list[dict] = []
    reps: Counter = Counter()
    n_agg = 0
    for ctx, metrics, path in found:
        row: dict = {"source_format": "json", "source_file": rel}
        tag = None
        for key, got in ctx.items():
            if key in ("_label", "_index"):
                continue
            p, v = got
            name = key[1] if isinstance(key, tuple) else key
            if name == "n_gpu_layers":
                if v is not None and str(v).strip():
                    row["n_gpu_layers"] = str(v).strip()
                    if p.raw.lower() != "n_gpu_layers":
                        row["offload_param"] = p.raw
            elif name in ("flash_attn",):
                row[name] = None if v is None else str(v)
            elif isinstance(key, tuple):
                x = num(v)
                if x is not None:
                    row[name] = x
            elif name == "tag":
                tag = v
            elif name in ("model", "job", "started_at", "hardware", "engine"):
                if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip():
                    row[name] = str(v).strip()
            elif name == "workload" and isinstance(v, str) and v.strip():
                row["workload"] = label(v)
            elif name == "status":
                row["_ok"] = flag(v)
            elif name == "error" and v not in (None, "", False) and str(v).strip().lower() not in ("none", "null"):
                row["error"] = str(v)
            elif name == "n_claimed":
                row["_n"] = num(v)
        if tag and isinstance(tag, str):
            m = row.get("model")
            row["model"] = f"{m}:{tag}" if m and ":" not in m else (m or tag)
        if "_label" in ctx and not row.get("job"):
            row["job"] = ctx["_label"]
        identity = [k for k in ("model", "job", "workload", "n_gpu_layers", "n_ctx", "temperature", "request_rate",
                                "concurrency") if row.get(k) is not None]
        if not identity:
            continue
        key = tuple(row.get(k) for k in ("model", "job", "workload", "n_gpu_layers", "n_ctx", "temperature", "top_p",
                                         "top_k", "repeat_penalty", "request_rate", "concurrency"))
        aggregate = any(p.stat is not None for p, _ in metrics.values()) or any(
            w in str(x).lower() for x in path for w in AGG_WORDS)
        # an aggregate is one object's claims (two runs of one variant stay two); samples of one
        # configuration are one run wherever they sit in the document
        where = tuple(str(x) for x in path if isinstance(x, int))[:1] if aggregate else ()
        row["run_id"] = synthetic_id(rel, (key, where))
        if aggregate:
            n_agg += 1
            for k, (p, v) in metrics.items():
                x = _canonical(p, v)
                if x is None:
                    continue
                stat = p.stat or ("total" if k.lower().startswith("total") else "as stated")
                got = claim(row, p.canonical.name, stat, x, row.get("_n"))
                if got is not None:
                    reading.aggregates.append(got)
            continue
        sample = {k: v for k, v in row.items() if not k.startswith("_")}
        itl = None
        for k, (p, v) in metrics.items():
            x = _canonical(p, v)
            if x is None:
                continue
            if p.canonical.name == "itl_ms":
                itl = x
            else:
                sample[p.canonical.name] = x
        if itl and sample.get("decode_tps") is None:
            sample["decode_tps"] = 1000.0 / itl
        if row.get("_ok") is False:
            sample["status"] = "failed"
            sample.setdefault("error", "success flag false")
        sample["rep"] = reps[sample["run_id"]]
        reps[sample["run_id"]] += 1
        rows.append(sample)
    if not rows and not reading.aggregates:
        return None
    reading.rows = rows
    if n_agg:
        reading.notes.append(f"{n_agg} objects of pre-aggregated values (of requests the file does not list): "
                             "shown as aggregates, not samples")
    return reading
