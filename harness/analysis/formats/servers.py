"""Responses of inference servers, one request each: llama.cpp's llama-server (`/completion`, and the
OpenAI-compatible endpoints, which carry the same `timings` object) and the statistics Ollama prints
with `ollama run --verbose`.

llama-server `timings` (tools/server): `prompt_n` tokens evaluated in `prompt_ms` (cached tokens,
`cache_n`, are not among them), `predicted_n` tokens generated in `predicted_ms`, and the two
rates. Mapping: prompt_eval_ms, prefill_tps, n_prompt_tokens; decode_ms, n_gen_tokens, decode_tps.
Definitions differ from ours in one place: `predicted_per_second` is predicted_n / predicted_ms,
where our decode_tps counts n - 1 tokens over the span from the first token to the last; the
server's figure is taken as it states it. There is no TTFT in `timings` and none is invented.

`ollama run --verbose` prints, after each answer, `total duration`, `load duration`, `prompt eval
count`, `prompt eval duration`, `prompt eval rate`, `eval count`, `eval duration`, `eval rate`, with
Go durations (`1m2.5s`, `40.125ms`, `512µs`). One block is one request; e2e_ms is the total minus
the load, as for Ollama's API responses.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Iterator

from ..foreign import base_row, label, num, ratio, synthetic_id
from ..reading import Reading

TIMING_KEYS = frozenset({"predicted_per_second", "predicted_ms", "prompt_ms", "predicted_n"})
_SETTINGS = {"n_ctx": "n_ctx", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
             "repeat_penalty": "repeat_penalty", "n_predict": "max_tokens", "max_tokens": "max_tokens"}
LLAMA_SERVER_NOTE = ("llama-server timings: decode_tps is the server's predicted_per_second (predicted_n / "
                     "predicted_ms), prefill excludes cached prompt tokens; no TTFT in the response")


def is_llama_server(o: dict) -> bool:
    """A llama-server response: a `timings` object with the server's keys."""
    t = o.get("timings")
    return isinstance(t, dict) and len(TIMING_KEYS & t.keys()) >= 2


def llama_server_rows(objs: Iterable[dict], rel: str, reading: Reading) -> Iterator[dict]:
    reading.notes.append(LLAMA_SERVER_NOTE)
    reps: Counter = Counter()
    for o in objs:
        if not isinstance(o, dict):
            continue
        t = o.get("timings") if isinstance(o.get("timings"), dict) else {}
        gs = o.get("generation_settings") if isinstance(o.get("generation_settings"), dict) else {}
        model = o.get("model") if isinstance(o.get("model"), str) else gs.get("model")
        err = o.get("error")
        row = base_row("llama-server", rel, engine="llama-server", job="llama-server",
                       model=model if isinstance(model, str) else None,
                       prompt_eval_ms=num(t.get("prompt_ms")), prefill_tps=num(t.get("prompt_per_second")),
                       n_prompt_tokens=num(t.get("prompt_n")), decode_ms=num(t.get("predicted_ms")),
                       n_gen_tokens=num(t.get("predicted_n")), decode_tps=num(t.get("predicted_per_second")),
                       error=(err.get("message") if isinstance(err, dict) else str(err)) if err else None)
        for k, col in _SETTINGS.items():
            x = num(gs.get(k))
            if x is not None:
                row[col] = x
        prompt = o.get("prompt")
        if isinstance(prompt, str) and prompt.strip():
            row["workload"] = label(prompt)
        key = tuple(row.get(c) for c in ("model", "workload", "n_ctx", "temperature", "top_k", "top_p", "max_tokens"))
        row["run_id"] = synthetic_id(rel, key)
        row["rep"] = reps[row["run_id"]]
        reps[row["run_id"]] += 1
        yield row


# --- ollama run --verbose --------------------------------------------------------------------------------

_LINE = re.compile(r"^\s*(total duration|load duration|prompt eval count|prompt eval duration|prompt eval rate|"
                   r"eval count|eval duration|eval rate):\s*(\S.*?)\s*$", re.I | re.M)
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|µs|us|ns)")
_GO_MS = {"h": 3.6e6, "m": 6e4, "s": 1e3, "ms": 1.0, "µs": 1e-3, "us": 1e-3, "ns": 1e-6}


def go_duration_ms(s: str) -> float | None:
    """A Go time.Duration string ("1m2.5s", "40.125ms") in ms, or None."""
    s = s.strip()
    parts = _GO_PART.findall(s)
    if not parts or "".join(a + b for a, b in parts) != s.replace(" ", ""):
        return None
    return sum(float(a) * _GO_MS[b] for a, b in parts)


def ollama_verbose(text: str, rel: str) -> Reading | None:
    """The requests of `ollama run --verbose` output (one block of statistics each), or None when
    the text has no such block."""
    found = _LINE.findall(text)
    keys = {k.lower() for k, _ in found}
    if not {"eval count", "eval duration"} <= keys and "eval rate" not in keys:
        return None
    blocks: list[dict] = []
    cur: dict = {}
    for k, v in found:
        k = k.lower()
        if k in cur or (k == "total duration" and cur):
            blocks.append(cur)
            cur = {}
        cur[k] = v
    if cur:
        blocks.append(cur)
    rows = []
    run_id = synthetic_id(rel, "ollama-verbose")
    for i, b in enumerate(blocks):
        total, load = go_duration_ms(b.get("total duration", "")), go_duration_ms(b.get("load duration", ""))
        n_prompt = num(b.get("prompt eval count", "").split(" ")[0])
        n_gen = num(b.get("eval count", "").split(" ")[0])
        pe, ev = go_duration_ms(b.get("prompt eval duration", "")), go_duration_ms(b.get("eval duration", ""))
        rate = num(b.get("eval rate", "").split(" ")[0])
        prate = num(b.get("prompt eval rate", "").split(" ")[0])
        rows.append(base_row("ollama-verbose", rel, engine="ollama", job="ollama", run_id=run_id, rep=i,
                             load_ms=load, e2e_ms=None if total is None else total - (load or 0.0),
                             prompt_eval_ms=pe, n_prompt_tokens=n_prompt, n_gen_tokens=n_gen, decode_ms=ev,
                             decode_tps=rate if rate is not None else ratio(n_gen, ev, 1e-3),
                             prefill_tps=prate if prate is not None else ratio(n_prompt, pe, 1e-3)))
    return Reading("ollama-verbose", rows, notes=["ollama --verbose statistics: e2e_ms is the total duration "
                                                   "minus the load; no TTFT is printed"])
