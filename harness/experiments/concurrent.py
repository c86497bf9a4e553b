"""concurrent_agents: K agents generating at the same time in one process.

One loaded model (its weights shared) and K llama contexts of its own, one per agent, each driven
by its own thread; llama.cpp's C calls release the GIL (ctypes.CDLL), so the agents' decode steps
run in parallel. A Barrier starts the K threads together; its action stamps the common start.
Every agent generates the same prompt with the same token budget and end-of-generation banned,
so every agent does the same work.

Per round (one repetition at one K):
  per-agent decode tok/s = (n_gen - 1) / (t_last - t_first)          (metrics.rep_metrics)
  aggregate tok/s        = sum of generated tokens / (t_last of the last agent - common start)
Over repetitions, per K:
  speedup(K)    = mean aggregate(K) / mean aggregate(1), with the Fieller 95% CI and Welch p of
                  `harness compare` (ratios.ratio_rows)
  efficiency(K) = speedup(K) / K (CI divided by K)
The sum of per-agent durations over the wall time is about K by construction and says nothing
about throughput; it is not reported.

Threads: with threads_per_agent=split every agent gets max(1, physical cores // K) threads, so K=1
uses the whole machine and the speedup compares equal hardware; a fixed number is used as given.
Repetitions visit the K levels in ascending order, then descending, alternately, so that a slow
drift of the machine does not favour one K.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Sequence

from ..metrics import rep_metrics, summarize
from . import SCHEMA_VERSION, report
from .ratios import ratio_rows
from .spec import THREADS_SPLIT, ConcurrentSpec

NAME = "concurrent_agents"
TABLE_FILE = "concurrent_agents.csv"
TABLE_HEADER = ("k", "threads_per_agent", "rounds_ok", "rounds_failed", "per_agent_decode_tps_mean",
                "per_agent_decode_tps_ci95_low", "per_agent_decode_tps_ci95_high", "per_agent_ttft_ms_mean",
                "aggregate_tps_mean", "aggregate_tps_ci95_low", "aggregate_tps_ci95_high", "aggregate_tps_cv",
                "speedup", "speedup_ci95_low", "speedup_ci95_high", "efficiency", "efficiency_ci95_low",
                "efficiency_ci95_high", "p_value", "significant")


# --- the arithmetic (pure) ----------------------------------------------------------------------

def aggregate_tps(token_ns: Sequence[Sequence[int]]) -> float | None:
    """Total generated tokens / seconds from the common start (0) to the last token of any agent.
    `token_ns`: per agent, its token timestamps in ns relative to the common start."""
    n = sum(len(t) for t in token_ns)
    last = max((t[-1] for t in token_ns if len(t)), default=0)
    return n / (last / 1e9) if n and last > 0 else None


def threads_per_agent(k: int, setting: str | int, cores: int) -> int:
    """Threads of each agent's context at K agents: cores // K (at least 1) for "split"."""
    return max(1, cores // k) if setting == THREADS_SPLIT else int(setting)


def speedups(aggregate_by_k: dict[int, Sequence[float]]) -> dict[int, dict]:
    """K -> speedup over K=1 (ratio of mean aggregate rates, Fieller 95% CI, Welch p, significant)
    and efficiency = speedup / K with the CI divided by K. K=1 is 1 by definition (no CI)."""
    base = [x for x in aggregate_by_k.get(1, ()) if x is not None]
    out: dict[int, dict] = {}
    for k, values in sorted(aggregate_by_k.items()):
        vals = [x for x in values if x is not None]
        if k == 1:
            out[k] = {"speedup": 1.0 if base else None, "speedup_ci95_low": None, "speedup_ci95_high": None,
                      "p_value": None, "significant": None, "note": "reference"}
        elif not base or not vals:
            out[k] = {"speedup": None, "speedup_ci95_low": None, "speedup_ci95_high": None,
                      "p_value": None, "significant": None, "note": "no successful round at K=1 or at this K"}
        else:
            r = ratio_rows({"aggregate_tps": base}, {"aggregate_tps": vals}, ["aggregate_tps"])["aggregate_tps"]
            out[k] = {"speedup": r["ratio"], "speedup_ci95_low": r["ratio_ci95_low"],
                      "speedup_ci95_high": r["ratio_ci95_high"], "p_value": r["p_value"],
                      "significant": r["significant"], "note": r["note"]}
        s = out[k]
        s["efficiency"] = s["speedup"] / k if s["speedup"] is not None else None
        s["efficiency_ci95_low"] = s["speedup_ci95_low"] / k if _num(s["speedup_ci95_low"]) else None
        s["efficiency_ci95_high"] = s["speedup_ci95_high"] / k if _num(s["speedup_ci95_high"]) else None
    return out


def _num(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def summary(rounds: list[dict], ks: Sequence[int]) -> list[dict]:
    """One row per K from the raw rounds (see TABLE_HEADER)."""
    agg = {k: [r["aggregate_tps"] for r in rounds if r["k"] == k and r["status"] == "ok"] for k in ks}
    sp = speedups(agg)
    rows = []
    for k in ks:
        ok = [r for r in rounds if r["k"] == k and r["status"] == "ok"]
        dec = summarize(a["decode_tps"] for r in ok for a in r["agents"])
        ttft = summarize(a["ttft_ms"] for r in ok for a in r["agents"])
        ag = summarize(agg[k])
        threads = sorted({r["threads_per_agent"] for r in rounds if r["k"] == k})
        rows.append({
            "k": k, "threads_per_agent": threads[0] if len(threads) == 1 else ",".join(map(str, threads)),
            "rounds_ok": len(ok), "rounds_failed": sum(1 for r in rounds if r["k"] == k and r["status"] != "ok"),
            "per_agent_decode_tps_mean": dec.mean if dec else None,
            "per_agent_decode_tps_ci95_low": dec.ci95_low if dec else None,
            "per_agent_decode_tps_ci95_high": dec.ci95_high if dec else None,
            "per_agent_ttft_ms_mean": ttft.mean if ttft else None,
            "aggregate_tps_mean": ag.mean if ag else None,
            "aggregate_tps_ci95_low": ag.ci95_low if ag else None,
            "aggregate_tps_ci95_high": ag.ci95_high if ag else None,
            "aggregate_tps_cv": ag.cv if ag else None,
            **{f: sp[k][f] for f in ("speedup", "speedup_ci95_low", "speedup_ci95_high", "efficiency",
                                     "efficiency_ci95_low", "efficiency_ci95_high", "p_value", "significant")},
            "note": sp[k]["note"],
        })
    return rows


# --- running ------------------------------------------------------------------------------------

def engine_rounds(lm, timing: str, tokens: Sequence[int], sampling, max_tokens: int, n_ctx: int,
                  kmax_threads: int, warmup_seeds: Sequence[Sequence[int]], schedule: Sequence[tuple]) -> dict:
    """The engine side, run where the model is loaded (the engine worker, through backend.call):
    max K contexts on `lm`, the warm-up rounds, then every round of `schedule` ((rep, k, threads,
    seeds) in order). Returns {"n_ctx": per context, "rounds": [(common start ns, per agent RawRep
    or a RemoteError)]}: plain data across the process boundary."""
    from .. import engine
    from ..engine.backend import RemoteError

    generate = engine.generate
    if timing == "native":
        from ..engine import native

        generate = native.generate
    kmax = max((k for _, k, _, _ in schedule), default=len(warmup_seeds[0]) if warmup_seeds else 1)
    contexts = []
    out: dict = {"n_ctx": None, "rounds": []}
    try:
        for _ in range(kmax):
            contexts.append(engine.new_context(lm, n_threads=kmax_threads, n_ctx=n_ctx))
        out["n_ctx"] = contexts[0].n_ctx
        for seeds in warmup_seeds:
            run_round(lm, contexts, tokens, sampling, seeds, max_tokens, generate)
        for _rep, k, threads, seeds in schedule:
            for ec in contexts[:k]:
                engine.set_threads(ec, threads)
            t0, results = run_round(lm, contexts[:k], tokens, sampling, seeds, max_tokens, generate)
            out["rounds"].append((t0, [RemoteError(type(r).__name__, str(r)) if isinstance(r, BaseException) else r
                                       for r in results]))
    finally:
        for ec in contexts:
            engine.free_context(ec)
    return out


def run_round(lm, contexts, tokens: Sequence[int], sampling, seeds: Sequence[int], max_tokens: int,
              generate) -> tuple[int, list]:
    """K agents at once, K = len(contexts). Returns (common start ns, per agent RawRep or the
    exception it raised)."""
    from .. import engine

    k = len(contexts)
    views = [engine.context_view(lm, ec) for ec in contexts]
    start: dict = {}
    barrier = threading.Barrier(k, action=lambda: start.setdefault("t", time.perf_counter_ns()))
    results: list = [None] * k

    def agent(i: int) -> None:
        try:
            barrier.wait()
            results[i] = generate(views[i], text=None, tokens=tokens, add_bos=False, sampling=sampling,
                                  seed=seeds[i], max_tokens=max_tokens, ignore_eos=True)
        except Exception as e:  # the round boundary: one agent's failure fails the round, not the run
            results[i] = e

    threads = [threading.Thread(target=agent, args=(i,), name=f"agent-{i}") for i in range(k)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C: the contexts must outlive every agent still decoding on them
        for t in threads:
            t.join()
        raise
    return start.get("t", 0), results


def _round_record(rep: int, k: int, threads: int, seeds, t0: int, results: list) -> dict:
    from ..engine.backend import error_type

    errors = [f"agent {i}: {error_type(r)}: {r}" for i, r in enumerate(results) if isinstance(r, BaseException)]
    rec = {"rep": rep, "k": k, "threads_per_agent": threads, "status": "failed" if errors else "ok",
           "error": "; ".join(errors) or None, "agents": []}
    if errors:
        return rec
    agents = []
    for i, raw in enumerate(results):
        m = rep_metrics(rep, raw.t_request_ns, raw.token_ns, raw.n_prompt_tokens, raw.engine_prompt_eval_ms)
        agents.append({"agent": i, "seed": seeds[i], "t_request_ns": raw.t_request_ns - t0,
                       "token_ns": [t - t0 for t in raw.token_ns], "n_prompt_tokens": raw.n_prompt_tokens,
                       "n_gen_tokens": m.n_gen_tokens, "ttft_ms": m.ttft_ms, "decode_tps": m.decode_tps,
                       "e2e_ms": m.e2e_ms})
    rec["agents"] = agents
    rec["n_gen_tokens"] = sum(a["n_gen_tokens"] for a in agents)
    rec["wall_ms"] = max(a["token_ns"][-1] for a in agents) / 1e6
    rec["aggregate_tps"] = aggregate_tps([a["token_ns"] for a in agents])
    return rec


def run(cfg: dict, spec: ConcurrentSpec, rc, plan) -> int:
    """Measure, write the experiment folder, print where it is. Returns the exit code: 1 when a
    round failed or the model or a context could not be set up (recorded in experiment.json with
    everything measured before it)."""
    from .. import engine
    from ..engine.backend import error_type
    from ..measure import backend_for, env_isolated, timing_path
    from ..plan import default_threads

    out = report.new_folder(rc.results_dir, NAME)
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    load_before = report.machine_load()
    timing, _native = timing_path(rc.bench.timing)
    cores = default_threads()
    for msg in plan.warnings:
        print(f"warning: {msg}", file=sys.stderr)
    state: dict = {"rounds": [], "lm": None, "prompt": None, "n_ctx": None, "lock": None}
    error = None
    backend = backend_for(rc, isolated=env_isolated())
    try:
        _measure(spec, rc, plan, backend, timing, cores, state)
    except Exception as e:  # the run boundary: a load, context or worker failure is recorded, not a traceback
        error = f"{error_type(e)}: {e}"
        print(f"{NAME}: failed: {error}", file=sys.stderr)
    finally:
        backend.close()
    rounds, lm, prompt = state["rounds"], state["lm"], state["prompt"]
    rows = summary(rounds, spec.k)
    failed = error is not None or any(r["status"] != "ok" for r in rounds)
    raw = {
        "schema_version": SCHEMA_VERSION, "experiment": NAME, "status": "failed" if failed else "ok",
        "error": error, "started_at": started,
        "ended_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "spec": asdict(spec), "config": cfg,
        "setup": {"timing_path": timing, "physical_cores": cores, "gil_released": engine.releases_gil(),
                  "model_path": plan.model_path, "n_ctx_per_context": state["n_ctx"],
                  "load_ms": lm.info.load_ms if lm else None, "isolated": backend.isolated, "prompt": prompt.summary() if prompt else {},
                  "workload": rc.workload.name, "max_tokens": rc.workload.max_tokens, "ignore_eos": True,
                  "engine": engine.engine_info(), "warnings": list(plan.warnings), "device_lock": state["lock"],
                  "machine_load_before": load_before, "machine_load_after": report.machine_load()},
        "rounds": rounds, "summary": rows,
    }
    doc = _document(raw)
    paths = report.write(out, raw, TABLE_FILE, TABLE_HEADER, [[row[h] for h in TABLE_HEADER] for row in rows], doc)
    _print_table(rows)
    print(f"report: {paths['html']}")
    return 1 if failed else 0


def _measure(spec: ConcurrentSpec, rc, plan, backend, timing: str, cores: int, state: dict) -> None:
    """Load, build the prompt, then run the contexts, the warm-up and every round in the engine's
    process (engine_rounds) into state["rounds"]. The whole schedule runs in one engine request:
    bench.point_timeout_s bounds it as a whole."""
    from .. import devicelock
    from ..workload import build_prompt

    s, w = rc.sampling, rc.workload
    # The devices are held as a sweep point holds them, right before the load (DeviceBusy when
    # another harness job measures on them, unless bench.allow_shared_device=true).
    lock = state["lock"] = devicelock.hold_for(plan, rc.bench.allow_shared_device)
    for k, pid in lock["shared_with"].items():
        print(f"warning: device {k} is shared with another harness job (pid {pid})", file=sys.stderr)
    lm = state["lm"] = backend.model(plan.load_key, plan.gguf.architecture)
    prompt = state["prompt"] = build_prompt(w, lm, s.seed)
    tokens = list(prompt.tokens) if prompt.tokens is not None else lm.tokenize(prompt.text, prompt.add_bos)
    kmax = max(spec.k)
    schedule = []
    for r in range(spec.repetitions):
        for k in (spec.k if r % 2 == 0 else tuple(reversed(spec.k))):
            schedule.append((r, k, threads_per_agent(k, spec.threads_per_agent, cores),
                             [s.seed + r + 1000 * i for i in range(k)]))
    warmup = [[s.seed + 1_000_000 + j for j in range(kmax)] for _ in range(spec.warmup)]
    limit = rc.bench.point_timeout_s  # per round: the one request gets that much per round
    print(f"{NAME}: {len(schedule)} rounds of up to K={kmax} agents, {spec.warmup} warm-up", file=sys.stderr)
    res = backend.call("harness.experiments.concurrent:engine_rounds", timing, tokens, s, w.max_tokens,
                       plan.n_ctx_effective, threads_per_agent(kmax, spec.threads_per_agent, cores), warmup, schedule,
                       timeout_s=None if limit is None else limit * (len(schedule) + len(warmup) + 1))
    state["n_ctx"] = res["n_ctx"]
    for (r, k, threads, seeds), (t0, results) in zip(schedule, res["rounds"]):
        rec = _round_record(r, k, threads, seeds, t0, results)
        state["rounds"].append(rec)
        if rec["status"] != "ok":
            print(f"{NAME}: rep {r + 1}/{spec.repetitions} K={k} failed: {rec['error']}", file=sys.stderr)
        else:
            print(f"{NAME}: rep {r + 1}/{spec.repetitions} K={k}: aggregate "
                  f"{rec['aggregate_tps']:.1f} tok/s", file=sys.stderr)


def _print_table(rows: list[dict]) -> None:
    f = report.fmt
    print(f"{'K':>3} {'thr/agent':>9} {'agent tok/s':>11} {'aggregate tok/s':>15} {'speedup':>8} {'efficiency':>10}")
    for r in rows:
        print(f"{r['k']:>3} {r['threads_per_agent']!s:>9} {f(r['per_agent_decode_tps_mean']):>11} "
              f"{f(r['aggregate_tps_mean']):>15} {f(r['speedup']):>8} {f(r['efficiency']):>10}")


def _document(raw: dict):
    from ..report.document import Bullets, Document, Paragraph, Table

    f, ci = report.fmt, report.ci
    st, rows = raw["setup"], raw["summary"]
    doc = Document(title="Concurrent agents",
                   subtitle=f"{raw['started_at']} · {st['engine']['llama_cpp_python']} · model "
                            f"{st['model_path']} · timing path {st['timing_path']}")
    sec = doc.section("Speedup and efficiency")
    sec.add(Table(
        headers=("K", "threads/agent", "rounds ok", "per-agent decode tok/s [95% CI]", "per-agent TTFT ms",
                 "aggregate tok/s [95% CI]", "CV", "speedup [95% CI]", "efficiency [95% CI]", "p", "significant"),
        rows=tuple((str(r["k"]), str(r["threads_per_agent"]), f"{r['rounds_ok']}/{r['rounds_ok'] + r['rounds_failed']}",
                    f"{f(r['per_agent_decode_tps_mean'])} {ci(r['per_agent_decode_tps_ci95_low'], r['per_agent_decode_tps_ci95_high'])}",
                    f(r["per_agent_ttft_ms_mean"]),
                    f"{f(r['aggregate_tps_mean'])} {ci(r['aggregate_tps_ci95_low'], r['aggregate_tps_ci95_high'])}",
                    f(r["aggregate_tps_cv"]),
                    "1 (reference)" if r["k"] == 1 else f"{f(r['speedup'])} {ci(r['speedup_ci95_low'], r['speedup_ci95_high'])}",
                    "1 (reference)" if r["k"] == 1 else f"{f(r['efficiency'])} {ci(r['efficiency_ci95_low'], r['efficiency_ci95_high'])}",
                    f(r["p_value"]), "-" if r["significant"] is None else ("yes" if r["significant"] else "no"))
                   for r in rows),
        caption="speedup = mean aggregate tok/s at K / mean at K=1 (Fieller 95% CI, Welch p, as harness "
                "compare); efficiency = speedup / K"))
    sec.add(Paragraph("Aggregate tok/s is every agent's generated tokens over the wall time from the common "
                      "start to the last token of any agent (prefill included). An efficiency of 1 means K "
                      "agents together produce K times the tokens per second of one agent."))
    m = doc.section("Method")
    lb, la = st.get("machine_load_before") or {}, st.get("machine_load_after") or {}
    m.add(Bullets(tuple(x for x in (
        f"{raw['spec']['repetitions']} repetitions per K, K levels alternately ascending and descending; "
        f"{raw['spec']['warmup']} warm-up round(s) with every context",
        f"each agent: its own llama context (n_ctx {st['n_ctx_per_context']}) on one shared model, its own "
        f"thread; {st['max_tokens']} generated tokens with end-of-generation banned; prompt of "
        f"{st['prompt'].get('n_tokens')} tokens (workload {st['workload']})",
        f"threads per agent: {raw['spec']['threads_per_agent']} ({st['physical_cores']} physical cores)",
        f"llama.cpp calls release the GIL: {'yes' if st['gil_released'] else 'NO'} (ctypes.CDLL)",
        f"machine load average (1 min) before {f(lb.get('loadavg_1m'))}, after {f(la.get('loadavg_1m'))} "
        f"on {lb.get('cpu_count')} CPUs: other work on the machine adds noise" if lb else None,
        *[f"warning: {x}" for x in st["warnings"]],
    ) if x)))
    failed = [r for r in raw["rounds"] if r["status"] != "ok"]
    if raw["error"]:
        sec.blocks.insert(0, Paragraph(f"The experiment stopped: {raw['error']}", strong=True))
    if failed:
        doc.section("Failed rounds").add(Bullets(tuple(f"rep {r['rep']} K={r['k']}: {r['error']}" for r in failed)))
    return doc
