"""How often the regression gate cries wolf, and how often it catches a real slowdown.

    .venv/bin/python benchmarks/regression_gate.py --pairs 20
    .venv/bin/python benchmarks/regression_gate.py --pairs 20 --only ab --change sampling.top_k=30000 --reps 5

Each pair measures the default regression benchmark (`benchmarks/test_default_model.py::
test_short_chat_decode64`: short_chat, 64 generated tokens) twice, as side A and side B, with
`--reps` timed rounds per side after one warm-up each, on one supervised engine worker. The rounds
of A and B alternate (A B A B ...), so a drift of the machine falls on both sides alike.

- A/A pairs: both sides the same configuration. Every alarm is a false alarm.
- A/B pairs: side B adds `--change` (a real configuration change that slows decoding, e.g.
  `sampling.top_k=0` at temperature 0.8: sampling over the whole 262k-token vocabulary). Every
  alarm is a detection.

Each pair is judged twice, on the data pytest-benchmark would save for the two sessions:
- the harness gate (`--harness-fail-on decode_tps:-5%`, harness.pytest_plugin.gate, the code the
  pytest option and `harness compare --fail-on` run): fails only on a change that is significant
  (Fieller 95% CI of B/A excludes 1, Welch p < 0.05) AND at least the threshold in the bad
  direction;
- pytest-benchmark's `--benchmark-compare-fail=mean:10%` (its own check object): fails when the
  mean seconds per round grew by more than 10%.

Writes JSON (every sample, every verdict, load averages, wall times) to --out and prints a table.

Measured on the 2-core development VM with no other jobs, 20 pairs per row (README, "Regression
checks"; every sample in benchmarks/results/regression_gate_*.json):
  --reps 10: A/A gate 0/20 alarms (mean:10% 0/20); top_k=15000 (B/A decode 0.888) gate 20/20.
  --reps 5:  A/A gate 0/20 (mean:10% 3/20); top_k=15000 17/20; top_k=30000 (0.804) 20/20;
             top_k=0 (0.606) 20/20.
About 17 s per pair (both sides) at 10 rounds, 10 s at 5.
HARNESS_DEVICE_LOCK_SCOPE isolates the device lock when other harness jobs share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

BENCH = "test_short_chat_decode64"
BASE = ("workload=short_chat", "workload.max_tokens=64", "bench.warmup=1", "bench.allow_shared_device=true",
        "telemetry.nvml=off")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _point(backend, overrides: tuple[str, ...]):
    """A begun, loaded and prompted harness.measure.Point of `overrides`, warmed up, paused."""
    from harness.hydra_conf import compose
    from harness.measure import Point, new_record
    from harness.runner import preflight

    cfg = compose(list(overrides))
    rc, plan = preflight(cfg)
    p = Point(rc, plan, backend, new_record(rc, plan, job_name=BENCH, overrides=overrides, config=cfg))
    p.start()
    p.warm_up(rc.bench.warmup)
    p.pause()
    return p


def _bench_dict(point, name: str) -> dict:
    """The benchmark as pytest-benchmark would save it from the harness_bench fixture: per-round
    samples in extra_info, seconds per round in stats."""
    from harness.pytest_plugin import SAMPLES

    rec = point.record
    reps = [r.metrics for r in rec.repetitions]
    secs = [m.e2e_ms / 1e3 for m in reps]
    return {"name": name, "fullname": f"benchmarks/test_default_model.py::{name}",
            "stats": {"mean": statistics.fmean(secs), "min": min(secs), "data": secs},
            "extra_info": {"samples": {m: [getattr(x, m) for x in reps] for m in SAMPLES},
                           "record": rec.to_dict()}}


def run_pair(backend, a_over: tuple[str, ...], b_over: tuple[str, ...], reps: int) -> tuple[dict, dict, float]:
    """(A, B as saved benchmarks, wall seconds): rounds alternate A B A B ..."""
    t0 = time.perf_counter()
    pa, pb = _point(backend, a_over), _point(backend, b_over)
    for r in range(reps):
        for p in (pa, pb):
            p.resume()
            p.repetition(r)
            p.pause()
    out = []
    for p in (pa, pb):
        p.finish()
        p.close()
        out.append(_bench_dict(p, BENCH))
    return out[0], out[1], time.perf_counter() - t0


def _saved_pair(p: dict) -> tuple[dict, dict]:
    """A and B of a stored pair as the benchmarks judge() takes (the per-round values it keeps)."""
    out = []
    for side in ("a", "b"):
        secs = p[f"{side}_round_s"]
        out.append({"name": BENCH, "fullname": f"benchmarks/test_default_model.py::{BENCH}",
                    "stats": {"mean": statistics.fmean(secs), "data": secs},
                    "extra_info": {"samples": {"decode_tps": p[f"{side}_decode_tps"]}}})
    return out[0], out[1]


def judge(a: dict, b: dict, checks: list, pb_check) -> dict:
    from harness.pytest_plugin import gate

    lines, failed = gate(checks, [b], {"baseline": {a["fullname"]: a}})
    da, db = a["extra_info"]["samples"]["decode_tps"], b["extra_info"]["samples"]["decode_tps"]
    pb_fail = bool(pb_check.fails(b["stats"], a["stats"]))
    return {"harness_gate_failed": failed, "harness_gate": lines[0] if lines else "",
            "pytest_benchmark_failed": pb_fail,
            "decode_ratio": statistics.fmean(db) / statistics.fmean(da),
            "mean_time_change_pct": (b["stats"]["mean"] / a["stats"]["mean"] - 1) * 100}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=20, help="A/A pairs, and as many A/B pairs (default 20)")
    ap.add_argument("--reps", type=int, default=10, help="timed rounds per side (default 10, as the README recommends)")
    ap.add_argument("--fail-on", default="decode_tps:-5%", help="the harness gate's check (default decode_tps:-5%%)")
    ap.add_argument("--change", default="sampling.top_k=15000",
                    help="side B's overrides in A/B pairs, space-separated (default: about 11%% slower decode)")
    ap.add_argument("--max-tokens", type=int, default=64, help="tokens per round (default 64: the benchmark's)")
    ap.add_argument("--only", choices=("aa", "ab"), help="run only the A/A or only the A/B pairs")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="start no new pair after this many seconds (the JSON says how many ran)")
    ap.add_argument("--out", type=Path, default=Path("results/regression_gate.json"))
    ap.add_argument("--append", action="store_true",
                    help="add the pairs to those already in --out (same settings), e.g. after a --budget-s stop")
    a = ap.parse_args(argv)

    from pytest_benchmark.utils import parse_compare_fail

    from harness.analysis.compare import parse_check
    from harness.measure import backend_for

    checks = [parse_check(a.fail_on)]
    pb_check = parse_compare_fail("mean:10%")
    base = tuple(x if not x.startswith("workload.max_tokens=") else f"workload.max_tokens={a.max_tokens}"
                 for x in BASE) + (f"bench.repetitions={a.reps}",)
    change = tuple(a.change.split())
    kinds = [k for k in ("aa", "ab") if a.only in (None, k)]
    doc: dict = {"benchmark": BENCH, "overrides": list(base), "change": list(change), "reps": a.reps,
                 "check": a.fail_on, "pytest_benchmark_check": "mean:10%", "cpu_count": os.cpu_count(),
                 "loadavg_before": _loadavg(), "pairs": [], "sessions": []}
    if a.append and a.out.exists():
        old = json.loads(a.out.read_text())
        if (old["overrides"], old["change"], old["check"]) != (doc["overrides"], doc["change"], doc["check"]):
            print(f"error: --append: {a.out} was measured with other settings", file=sys.stderr)
            return 2
        doc["pairs"], doc["loadavg_before"] = old["pairs"], old["loadavg_before"]
        doc["sessions"] = old.get("sessions") or [{"wall_s": old["wall_s"], "loadavg_after": old["loadavg_after"]}]
    first = 1 + max((p["pair"] for p in doc["pairs"]), default=-1)
    if a.append:  # judge the earlier pairs again with the code as it is now
        doc["pairs"] = [p | judge(*_saved_pair(p), checks, pb_check) if "error" not in p else p for p in doc["pairs"]]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # SIGTERM still writes the JSON
    backend = backend_for(None)
    t_all = time.perf_counter()
    try:
        for i in range(first, first + a.pairs):
            if a.budget_s is not None and time.perf_counter() - t_all > a.budget_s:
                print(f"time budget of {a.budget_s:g} s spent: stopping after {i - first} pairs", flush=True)
                break
            for kind in kinds:
                b_over = base + (change if kind == "ab" else ())
                la0 = _loadavg()
                try:
                    A, B, wall = run_pair(backend, base, b_over, a.reps)
                except Exception as e:  # a pair's boundary: an engine crash costs that pair (the worker restarts)
                    doc["pairs"].append({"kind": kind, "pair": i, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                    print(f"{kind} {i:2d}  failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                    continue
                v = judge(A, B, checks, pb_check)
                row = {"kind": kind, "pair": i, "wall_s": round(wall, 2), "loadavg_before": la0,
                       "loadavg_after": _loadavg(), **v,
                       "a_decode_tps": A["extra_info"]["samples"]["decode_tps"],
                       "b_decode_tps": B["extra_info"]["samples"]["decode_tps"],
                       "a_round_s": A["stats"]["data"], "b_round_s": B["stats"]["data"]}
                doc["pairs"].append(row)
                print(f"{kind} {i:2d}  B/A decode {v['decode_ratio']:.3f}  gate {'FAIL' if v['harness_gate_failed'] else 'pass'}"
                      f"  mean:10% {'FAIL' if v['pytest_benchmark_failed'] else 'pass'}  {wall:5.1f} s"
                      f"  load {la0[0]:.1f}", flush=True)
    finally:
        backend.close()
        doc["loadavg_after"] = _loadavg()
        doc["sessions"].append({"wall_s": round(time.perf_counter() - t_all, 1), "loadavg_after": doc["loadavg_after"]})
        doc["wall_s"] = round(sum(x["wall_s"] for x in doc["sessions"]), 1)
        doc["summary"] = summarize(doc["pairs"])
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1))
    print(table(doc))
    print(f"json: {a.out}")
    return 0


def summarize(pairs: list[dict]) -> dict:
    out = {}
    for kind in ("aa", "ab"):
        ps = [p for p in pairs if p["kind"] == kind and "error" not in p]
        n_failed = sum(1 for p in pairs if p["kind"] == kind and "error" in p)
        if not ps:
            continue
        ratios = sorted(p["decode_ratio"] for p in ps)
        out[kind] = {"pairs": len(ps), "failed_pairs": n_failed, "harness_gate_alarms": sum(p["harness_gate_failed"] for p in ps),
                     "mean_10pct_alarms": sum(p["pytest_benchmark_failed"] for p in ps),
                     "decode_ratio_median": statistics.median(ratios),
                     "decode_ratio_min": ratios[0], "decode_ratio_max": ratios[-1],
                     "wall_s_per_pair_median": statistics.median(p["wall_s"] for p in ps)}
    return out


def table(doc: dict) -> str:
    s = doc["summary"]
    lines = [f"{doc['benchmark']}, {doc['reps']} rounds per side, gate {doc['check']}, B change: "
             f"{' '.join(doc['change'])}; load average {doc['loadavg_before']} -> {doc['loadavg_after']} "
             f"on {doc['cpu_count']} CPUs; {doc['wall_s']} s in all",
             "| pairs | n | harness gate alarms | mean:10% alarms | B/A decode median [min, max] | s per pair (both sides) |",
             "|---|---|---|---|---|---|"]
    for kind, name in (("aa", "A/A (same config)"), ("ab", "A/B (the change)")):
        if kind in s:
            x = s[kind]
            lines.append(f"| {name} | {x['pairs']} | {x['harness_gate_alarms']} | {x['mean_10pct_alarms']} | "
                         f"{x['decode_ratio_median']:.3f} [{x['decode_ratio_min']:.3f}, {x['decode_ratio_max']:.3f}] | "
                         f"{x['wall_s_per_pair_median']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
