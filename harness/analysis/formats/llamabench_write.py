"""Writing a tidy frame (ours or imported) as llama-bench output, in each of its printers' exact
layout, so llama.cpp's `scripts/compare-llama-bench.py` reads our runs.

Only llama-bench's json/jsonl printers write `samples_ns` / `samples_ts`; we add them to csv and
sql too (space-separated numbers, as trailing columns), and every test carries its run's own tidy
rows in a last `harness` field (`formats.embedded`), so reading an export back gives the same
samples, configurations and statistics. compare-llama-bench.py ignores fields it does not know.

What llama-bench's fields cannot say, and how it is written so compare-llama-bench.py still keeps
our configurations apart (it joins and groups on its key columns, model_type among them, and
averages whatever else is equal):
- build_commit: the llama.cpp commit the engine vendors, or a short hash of the engine build
  (`llamabench_desc.build_commit`), never a sentence.
- model_type: llama_model_desc() ("gemma3 270M Q4_K - Medium"), followed in brackets by the
  settings llama-bench has no field for: context size, sampling parameters, the timing path and a
  twin's weights, "gemma3 270M Q4_K - Medium [n_ctx=512 temperature=0.8 ... timing=python]".
  Always all of those the run has, so exports made apart still line up.
- n_depth of a generation test: the prompt length it followed (llama-bench's tgN @ dP).
"""

from __future__ import annotations

import json
import math
import statistics
from datetime import datetime, timezone

import pandas as pd

from . import embedded
from .llamabench_desc import build_commit, timing_path
from .llamabench_spec import DEFAULTS, FIELD_TYPES, FIELDS, FORMATS, SQL_TABLE, SQL_TYPES

#: Parameters llama-bench has no field for, written into model_type in brackets (in this order).
MODEL_TYPE_PARAMS = ("n_ctx", "temperature", "top_p", "top_k", "min_p", "repeat_penalty")


def dump(df, fmt: str, carry: bool = True) -> str:
    """A tidy frame (ours or imported) as llama-bench output in `fmt` (a FORMATS name, or the bare
    "json" | "jsonl" | "csv" | "sql"). Each run_id gives a pp test (its prefill samples) and a tg
    test (its decode samples); a run with neither but e2e samples gives a pp+tg test. llama-bench
    has no way to say "failed": failed samples and runs are only in the `harness` field. With
    carry=False that field is left out: llama-bench's own fields, what llama.cpp's readers see."""
    kind = fmt.removeprefix("llama-bench-")
    writers = {"json": _write_json, "jsonl": _write_jsonl, "csv": _write_csv, "sql": _write_sql}
    if kind not in writers:
        raise ValueError(f"llama-bench format must be one of {FORMATS}, got {fmt!r}")
    fields = FIELDS if carry else tuple(f for f in FIELDS if f != embedded.KEY)
    return writers[kind](tests(df), fields)


def tests(df) -> list[dict]:
    """The llama-bench tests (dicts over FIELDS, typed as FIELD_TYPES says) of a tidy frame. Each
    run's tests carry all its rows, failed ones included, in `harness`; a run with no ok sample
    has no test of its own and rides along in one of the others, spread over them (in a test
    without samples when the export has no other)."""
    out: list[dict] = []
    orphans = []
    for _, run in df.groupby(df["run_id"].fillna(""), sort=False, dropna=False):
        made = _run_tests(run[run["status"] == "ok"])
        if not made:
            orphans.append(run)
            continue
        carried = embedded.pack([run])
        for t in made:
            t["harness"] = carried
        out.extend(made)
    if orphans and out:
        # spread over the tests, so no one field grows past what csv readers take (128 KiB a field)
        for k, run in enumerate(orphans):
            t = out[k % len(out)]
            t["harness"] = {**t["harness"], "runs": t["harness"]["runs"] + [embedded.pack_run(run)]}
    elif orphans:
        for run in orphans:
            row = run.iloc[0]
            n_prompt = _int_or(row["n_prompt_tokens"], 0)
            t = _test(row, n_prompt, max(_int_or(row["max_tokens"], 1) - 1, 0), [], [])
            t["harness"] = embedded.pack([run])
            out.append(t)
    return out


def _run_tests(run) -> list[dict]:
    """The pp, tg (or pp+tg) tests of one run's ok samples, harness field not yet set."""
    out: list[dict] = []
    for n_prompt, grp in _groups(run, "n_prompt_tokens", ("prefill_tps", "prompt_eval_ms")):
        if n_prompt > 0:
            ts, ns = _pairs(grp["prefill_tps"], grp["prompt_eval_ms"], n_prompt)
            out.append(_test(grp.iloc[0], n_prompt, 0, ns, ts))
    for n_tokens, grp in _groups(run, "n_gen_tokens", ("decode_tps", "decode_ms")):
        if n_tokens >= 2:
            ts, ns = _pairs(grp["decode_tps"], grp["decode_ms"], n_tokens - 1)
            # generation after the prompt: llama-bench's tgN at depth n_prompt
            out.append(_test(grp.iloc[0], 0, n_tokens - 1, ns, ts, n_depth=_int_or(grp.iloc[0]["n_prompt_tokens"], 0)))
    if not out:
        e2e = run[run["e2e_ms"].notna() & run["n_prompt_tokens"].notna() & run["n_gen_tokens"].notna()]
        for (n_prompt, n_tokens), grp in e2e.groupby(["n_prompt_tokens", "n_gen_tokens"], sort=False):
            n_gen = int(n_tokens) - 1
            if n_prompt > 0 and n_gen > 0:
                ns = [float(x) * 1e6 for x in grp["e2e_ms"]]
                ts = [1e9 * (int(n_prompt) + n_gen) / x for x in ns]
                out.append(_test(grp.iloc[0], int(n_prompt), n_gen, ns, ts))
    return out


def _groups(run, count_col: str, metric_cols: tuple[str, str]):
    has = run[run[metric_cols[0]].notna() | run[metric_cols[1]].notna()]
    has = has[has[count_col].notna()]
    for n, grp in has.groupby(count_col, sort=False):
        yield int(n), grp


def _pairs(tps, ms, n_tokens: int) -> tuple[list[float], list[float]]:
    """(samples_ts, samples_ns) of one test; a missing one of the pair is derived from the other."""
    ts, ns = [], []
    for t, m in zip(tps, ms):
        t = None if t is None or math.isnan(t) else float(t)
        m = None if m is None or math.isnan(m) else float(m)
        ts.append(t if t is not None else n_tokens / (m / 1e3))
        ns.append(m * 1e6 if m is not None else 1e9 * n_tokens / t)
    return ts, ns


def _clean(v):
    return None if v is None or pd.isna(v) else v


def _int_or(v, default: int) -> int:
    v = _clean(v)
    if v is None:
        return default
    try:
        return int(float(v))
    except ValueError:
        return default


def _test_time(v) -> str:
    v = _clean(v)
    if v is None:
        return ""
    try:
        dt = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return str(v)
    dt = dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(v) -> str:
    """A parameter value as written in model_type: 2048.0 as 2048, 0.8 as 0.8."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def model_type(row) -> str:
    """model_type of a test: llama_model_desc() (or the model's name when the frame has no
    description), then in brackets the settings llama-bench has no field for."""
    desc = str(_clean(row["model_desc"]) or _clean(row["model"]) or "unknown model")
    params = []
    for p in MODEL_TYPE_PARAMS:
        v = _clean(row["n_ctx_effective"]) if p == "n_ctx" and _clean(row["n_ctx_effective"]) is not None \
            else _clean(row[p])
        if v is not None:
            params.append(f"{p}={_plain(v)}")
    timing = timing_path(_clean(row["engine"]))
    if timing:
        params.append(f"timing={timing}")
    if _clean(row["weights"]) == "twin":
        params.append("weights=twin")
    return f"{desc} [{' '.join(params)}]" if params else desc


def _test(row, n_prompt: int, n_gen: int, ns: list[float], ts: list[float], n_depth: int = 0) -> dict:
    hw = [x.strip() for x in str(_clean(row["hardware"]) or "").split(" | ")]
    commit, number, backends = build_commit(_clean(row["engine"]))
    eff = _clean(row["n_gpu_layers_effective"])
    ngl = int(eff) if eff is not None else _int_or(
        {"all": -1, "auto": -1}.get(str(_clean(row["n_gpu_layers"])), row["n_gpu_layers"]), -1)
    fa = {"on": 1, "off": 0, "auto": -1}.get(str(_clean(row["flash_attn"])).lower(), -1)
    engine = str(_clean(row["engine"]) or "")
    cpu_only = "cpu" in engine.lower().split()  # our engine string says "cpu" for builds without GPU offload
    ns_int = [int(round(x)) for x in ns]
    test = dict(DEFAULTS) | {
        "build_commit": commit, "build_number": number, "cpu_info": hw[0] if hw else "",
        "gpu_info": ", ".join(hw[1:]), "backends": backends or ("CPU" if cpu_only else ""),
        "model_filename": str(_clean(row["model"]) or ""), "model_type": model_type(row),
        "n_batch": _int_or(row["n_batch"], 0),
        "n_ubatch": _int_or(row["n_ubatch"], 0), "n_threads": _int_or(row["n_threads"], 0),
        "type_k": str(_clean(row["type_k"]) or ""), "type_v": str(_clean(row["type_v"]) or ""),
        "n_gpu_layers": ngl, "flash_attn": fa, "n_prompt": n_prompt, "n_gen": n_gen, "n_depth": n_depth,
        "test_time": _test_time(row["started_at"]),
        # llama-bench: uint64 mean (integer division) and sample std of ns; double mean/std of t/s
        "avg_ns": sum(ns_int) // len(ns_int) if ns_int else 0,
        "stddev_ns": int(statistics.stdev(ns_int)) if len(ns_int) > 1 else 0,
        "avg_ts": statistics.fmean(ts) if ts else 0.0, "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
        "samples_ns": ns_int, "samples_ts": [float(x) for x in ts], "harness": None,
    }
    return {k: test[k] for k in FIELDS}


def _json_value(name: str, v) -> str:
    kind = FIELD_TYPES[name]
    if kind == "samples":
        return "[ " + ", ".join(json.dumps(x) for x in v) + " ]"
    if kind == "bool":
        return "true" if v else "false"
    if kind == "json":
        return json.dumps(v, separators=(",", ":"), allow_nan=False)
    return json.dumps(v)


def _write_json(tests_: list[dict], fields) -> str:
    objs = []
    for t in tests_:
        objs.append("  {\n" + ",\n".join(f'    "{k}": {_json_value(k, t[k])}' for k in fields) + "\n  }")
    return "[\n" + ",\n".join(objs) + ("\n" if objs else "") + "]\n"


def _write_jsonl(tests_: list[dict], fields) -> str:
    return "".join("{" + ", ".join(f'"{k}": {_json_value(k, t[k])}' for k in fields) + "}\n" for t in tests_)


def _text_value(name: str, v) -> str:
    """As llama-bench's get_values() prints a field: bools as 0/1, samples space-separated."""
    kind = FIELD_TYPES[name]
    if kind == "samples":
        return " ".join(repr(x) for x in v)
    if kind == "json":
        return json.dumps(v, separators=(",", ":"), allow_nan=False)
    if kind == "bool":
        return str(int(bool(v)))
    return repr(v) if isinstance(v, float) else str(v)


def _write_csv(tests_: list[dict], fields) -> str:
    # llama-bench: header unquoted, every value in double quotes with '"' doubled
    lines = [",".join(fields)]
    for t in tests_:
        lines.append(",".join('"' + _text_value(k, t[k]).replace('"', '""') + '"' for k in fields))
    return "\n".join(lines) + "\n"


def _write_sql(tests_: list[dict], fields) -> str:
    cols = ",\n".join(f"  {k} {SQL_TYPES[FIELD_TYPES[k]]}" for k in fields)
    out = [f"CREATE TABLE IF NOT EXISTS {SQL_TABLE} (\n{cols}\n);\n\n"]
    names = ", ".join(fields)
    for t in tests_:
        values = ", ".join("'" + _text_value(k, t[k]).replace("'", "''") + "'" for k in fields)
        out.append(f"INSERT INTO {SQL_TABLE} ({names}) VALUES ({values});\n")
    return "".join(out)
