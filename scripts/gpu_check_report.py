"""The summary of a GPU check run (scripts/gpu_check.sh): one Markdown file from its scratch folder.

    python scripts/gpu_check_report.py --scratch DIR --out gpu_check.md

Reads what the steps left in the scratch folder: run.env, machine.env, steps.tsv, logs/, the
sweep's run.json files under results/, llama_bench.json (pytest-benchmark's JSON of
benchmarks/test_vs_llama_bench.py) and gpu_tests.xml. Standard library only, so it writes a summary
whatever failed; the VRAM estimate of a point that offloaded nothing (a CPU build) is computed with
harness.vram when the harness can be imported. Every figure comes from those files; a missing one
is written as a dash, and a null reading with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

DASH = "-"


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE or KEY<tab>VALUE lines."""
    out: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            for sep in ("\t", "="):
                if sep in line:
                    k, v = line.split(sep, 1)
                    out.setdefault(k.strip(), v.strip())
                    break
    return out


def read_steps(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            f = line.split("\t")
            if len(f) >= 5:
                rows.append({"step": f[0], "status": f[1], "seconds": f[2], "budget": f[3], "note": f[4]})
    return rows


def get(d, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def mean_of(agg: dict, name: str):
    v = agg.get(name)
    return v.get("mean") if isinstance(v, dict) else v


def fmt(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return DASH
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def ngl_order(v) -> float:
    s = str(v)
    if s in ("all", "-1"):
        return 1e9
    if s.endswith("%"):
        return float(s[:-1]) / 100 * 1e6
    try:
        return float(s)
    except ValueError:
        return 1e10


def load_runs(results: Path) -> list[dict]:
    runs = []
    for p in sorted(results.glob("*/*/run.json")):
        try:
            runs.append(json.loads(p.read_text()))
        except (OSError, ValueError) as e:
            runs.append({"status": "unreadable", "error": f"{p}: {e}", "job_name": p.parent.name})
    return runs


def vram_estimate(rec: dict) -> tuple[dict | None, str]:
    """The VRAM record of a point: run.json's load.vram (the harness's pre-flight and the measured
    drop in free memory), else the estimate for the offload it asked for, computed here from the
    model's header (a CPU build offloads nothing, so it has no pre-flight)."""
    v = get(rec, "load", "vram")
    if isinstance(v, dict) and v.get("estimate"):
        return v, "pre-flight"
    path = get(rec, "effective", "model_path")
    rt = get(rec, "config", "runtime") or {}
    if not path or not rt:
        return None, ""
    try:
        from harness import vram
        from harness.plan import effective_offload
    except ImportError:
        return None, ""
    try:
        s = vram.shape(path)
        ngl = effective_offload(rt.get("n_gpu_layers"), s.n_layers)
        if ngl <= 0:
            return None, ""
        est = vram.estimate(s, n_gpu_layers=ngl, n_ctx=int(rt.get("n_ctx")), n_ubatch=int(rt.get("n_ubatch") or 512),
                            type_k=rt.get("type_k") or "f16", type_v=rt.get("type_v") or "f16",
                            flash_attn=rt.get("flash_attn") == "on", offload_kqv=bool(rt.get("offload_kqv", True)))
    except Exception as e:  # a summary is still written; the cell says why it is empty
        return None, f"not computed ({type(e).__name__}: {e})"
    return {"estimate": est.to_dict()}, "computed here (no offload on this build)"


def point_row(rec: dict) -> dict:
    agg = rec.get("aggregates") or {}
    dec = get(rec, "telemetry", "phases", "decode") or {}
    unsupported = get(rec, "telemetry", "unsupported") or {}
    fan = dec.get("fan_pct_mean")
    fan_txt = fmt(fan, 0) if fan is not None else ("null: " + unsupported["fan"] if "fan" in unsupported else DASH)
    v, how = vram_estimate(rec)
    est = (v or {}).get("estimate") or {}
    return {
        "model": get(rec, "config", "model", "name") or rec.get("job_name", DASH),
        "twin": get(rec, "provenance", "model", "synthetic"),
        "ngl": get(rec, "config", "runtime", "n_gpu_layers"),
        "ngl_eff": get(rec, "effective", "n_gpu_layers_effective"),
        "ngl_max": get(rec, "effective", "n_offloadable_layers"),
        "ctx": get(rec, "config", "runtime", "n_ctx"),
        "status": rec.get("status", DASH),
        "error": rec.get("error"),
        "decode": mean_of(agg, "decode_tps"),
        "prefill": mean_of(agg, "prefill_tps"),
        "ttft": mean_of(agg, "ttft_ms"),
        "util": dec.get("gpu_util_pct_mean"),
        "power": dec.get("power_w_mean"),
        "ept": dec.get("energy_per_token_j"),
        "fan": fan_txt,
        "vram_used": dec.get("vram_used_mib_max"),
        "est_total": est.get("total_mib"),
        "est": est,
        "est_how": how,
        "measured": (v or {}).get("measured_mib"),
        "verdict": (v or {}).get("verdict"),
        "bw_eff": get(rec, "roofline", "bandwidth_efficiency"),
        "gpu": get(rec, "telemetry", "gpu", "name"),
        "power_source": get(rec, "telemetry", "power_source"),
        "energy_methods": dec.get("energy_methods"),
        "timing": rec.get("timing_path"),
    }


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def render_steps(steps: list[dict]) -> str:
    return table(["step", "status", "time (s)", "budget (s)", "note"],
                 [[s["step"], "ok" if s["status"] == "ok" else f"**{s['status']}**", s["seconds"], s["budget"],
                   s["note"]] for s in steps])


def render_sweep(points: list[dict]) -> str:
    if not points:
        return "No sweep results."
    out = []
    for model in dict.fromkeys(p["model"] for p in points):
        ps = sorted((p for p in points if p["model"] == model), key=lambda p: (int(p["ctx"] or 0), ngl_order(p["ngl"])))
        twin = " (performance twin: synthetic weights)" if any(p["twin"] for p in ps) else ""
        out.append(f"### {model}{twin}\n")
        out.append(table(
            ["n_gpu_layers", "layers on GPU", "n_ctx", "status", "decode tok/s", "prefill tok/s", "TTFT ms",
             "GPU util % (decode)", "power W (decode)", "energy/token J", "fan %", "VRAM used MiB (max)",
             "bandwidth eff."],
            [[p["ngl"], f"{fmt(p['ngl_eff'], 0)}/{fmt(p['ngl_max'], 0)}", p["ctx"],
              p["status"] if p["status"] == "ok" else f"**{p['status']}**: {(p['error'] or '')[:160]}",
              fmt(p["decode"]), fmt(p["prefill"]), fmt(p["ttft"]), fmt(p["util"]), fmt(p["power"]),
              fmt(p["ept"], 3), p["fan"], fmt(p["vram_used"], 0), fmt(p["bw_eff"], 2)] for p in ps]))
        out.append("")
    return "\n".join(out)


def render_vram(points: list[dict]) -> str:
    rows = [p for p in points if p["est"]]
    if not rows:
        return "No point offloaded layers, so there is no VRAM estimate."
    hows = sorted({p["est_how"] for p in rows if p["est_how"]})
    body = table(
        ["model", "n_gpu_layers", "n_ctx", "estimate MiB", "weights", "KV cache", "compute", "CUDA context",
         "measured MiB", "measured / estimate", "verdict"],
        [[p["model"], p["ngl"], p["ctx"], fmt(p["est_total"]), fmt(p["est"].get("weights_mib")),
          fmt(p["est"].get("kv_mib")), fmt(p["est"].get("compute_mib")), fmt(p["est"].get("context_mib")),
          fmt(p["measured"]),
          fmt(p["measured"] / p["est_total"], 2) if p["measured"] is not None and p["est_total"] else DASH,
          p["verdict"] or DASH]
         for p in sorted(rows, key=lambda p: (p["model"], int(p["ctx"] or 0), ngl_order(p["ngl"])))])
    return f"Estimate: {', '.join(hows)}. Measured: the drop in NVML's free memory the load caused.\n\n{body}"


def render_llama_bench(path: Path, sizes: str | None = None) -> str:
    if not path.is_file():
        return "No llama-bench comparison (see the steps)."
    try:
        b = json.loads(path.read_text())["benchmarks"][0]["extra_info"]
    except (OSError, ValueError, KeyError, IndexError) as e:
        return f"llama_bench.json unreadable: {e}"
    lines = [f"{b.get('rounds')} interleaved rounds x {b.get('repetitions')} repetitions, {b.get('threads')} threads, "
             f"`llama-bench {b.get('llama_bench_args', '')}`",
             f"llama-bench medians: pp512 {fmt(b.get('llama_bench_pp512_median_tps'))} tok/s, "
             f"tg128 {fmt(b.get('llama_bench_tg128_median_tps'))} tok/s, "
             f"tg128 @ d512 {fmt(b.get('llama_bench_tg128_d512_median_tps'))} tok/s", ""]
    if sizes:
        p, g, r = sizes.split(",")
        lines[:0] = [f"Rehearsal sizes: {p} prompt tokens, {g} generated, {r} repetitions on both sides "
                     f"(named pp512 / tg128 below).", ""]
    rows = []
    for path_ in b.get("timing_paths", []):
        for name in ("prefill", "decode_engine", "decode_sampling", "decode_engine_vs_d0", "decode_sampling_vs_d0"):
            r = b.get(f"{path_}_{name}_ratio_of_means")
            if r is None:
                continue
            lo, hi = (b.get(f"{path_}_{name}_ratio_ci95") or [None, None])[:2]
            ci = f"[{fmt(lo, 3)}, {fmt(hi, 3)}]" if DASH not in (fmt(lo, 3), fmt(hi, 3)) else DASH
            rows.append([path_, name, fmt(b.get(f"{path_}_{name}_median_tps")), fmt(r, 3), ci,
                         " ".join(fmt(x, 3) for x in b.get(f"{path_}_{name}_ratio_per_round") or [])])
    lines.append(table(["timing path", "ratio", "harness tok/s (median)", "harness / llama-bench", "95% CI",
                        "per round"], rows))
    nvp = [(m, b.get(f"native_vs_python_{m}_ratio")) for m in ("prefill", "decode_engine", "decode_sampling")]
    if any(v is not None for _, v in nvp):
        lines += ["", "native / python: " + ", ".join(f"{m} {fmt(v, 3)}" for m, v in nvp)]
    for timing, why in (b.get("notes") or {}).items():
        lines.append(f"\n{timing}: not measured ({why})")
    if b.get("busy_flagged"):
        lines.append(f"\nOther processes were busy during: {', '.join(b['busy_flagged'])}")
    return "\n".join(lines)


def render_tests(path: Path) -> str:
    if not path.is_file():
        return "No test report."
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as e:
        return f"gpu_tests.xml unreadable: {e}"
    rows = []
    for tc in root.iter("testcase"):
        outcome, why = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome, why = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], el.get("message") or ""
                break
        rows.append([f"{tc.get('classname', '')}::{tc.get('name', '')}", outcome, fmt(float(tc.get("time") or 0), 1),
                     why[:200]])
    return table(["test", "outcome", "s", "reason"], rows) if rows else "No gpu-marked test ran."


def render_failures(steps: list[dict], logs: Path) -> str:
    out = []
    for s in steps:
        if s["status"] == "failed":
            log = logs / f"{s['step']}.log"
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.is_file() else []
            out.append(f"### {s['step']}\n\n```\n" + "\n".join(line[:300] for line in tail) + "\n```")
    return "\n\n".join(out)


def render(scratch: Path) -> str:
    run = read_env(scratch / "run.env")
    machine = read_env(scratch / "machine.env")
    steps = read_steps(scratch / "steps.tsv")
    points = [point_row(r) for r in load_runs(scratch / "results")]
    mode = run.get("mode", "?")
    t0 = float(run.get("t0_epoch") or 0)
    elapsed = f"{time.time() - t0:.0f} s" if t0 else DASH
    bad = [s["step"] for s in steps if s["status"] != "ok"]
    gpu_names = sorted({p["gpu"] for p in points if p["gpu"]})
    title = machine.get("gpu", DASH).split(",")[0]
    head = [f"# GPU check: {title}" + (" (rehearsal: a CPU build, the fake NVML)" if mode == "rehearse" else ""), "",
            f"Started {run.get('started', DASH)}; {elapsed} until this summary, budget {run.get('budget_s', DASH)} s. "
            + ("Every step ok." if not bad else f"**Not ok: {', '.join(bad)}.**"), ""]
    engine = next((s["note"] for s in steps if s["step"] == "build"), DASH)
    machine_rows = [
        ["GPU", machine.get("gpu", DASH) + (f" (NVML in the runs: {', '.join(gpu_names)})" if gpu_names else "")],
        ["CPU", f"{machine.get('cpu_model', DASH)}, {machine.get('cpus', DASH)} CPUs"],
        ["Python", machine.get("python", DASH)],
        ["engine build", f"llama-cpp-python's llama.cpp, {'CUDA sm_' + machine['cuda_arch'] if machine.get('cuda_arch') else 'CPU'}"
                         f" (GGML_NATIVE{', GGML_CUDA_NO_VMM' if machine.get('cuda_arch') else ''}): {engine}"],
        ["power reading", ", ".join(sorted({str(p["power_source"]) for p in points if p["power_source"]})) or DASH],
        ["energy method (decode)", ", ".join(sorted({m for p in points for m in (p["energy_methods"] or [])})) or DASH],
        ["timing path", ", ".join(sorted({str(p["timing"]) for p in points if p["timing"]})) or DASH],
    ]
    parts = head + ["## Machine", "", table(["", ""], machine_rows), "",
                    "## Steps", "", render_steps(steps), "",
                    "## Sweep: decode and prefill per offload level", "",
                    "Means over the repetitions; GPU readings are NVML's over the decode windows "
                    "(every 100 ms). Fan: null where the board has no fan reading, with NVML's answer.", "",
                    render_sweep(points), "",
                    "## VRAM: estimate vs measured", "", render_vram(points), "",
                    "## harness / llama-bench", "", render_llama_bench(scratch / "llama_bench.json", run.get("lb_sizes")), "",
                    "## GPU tests", "", render_tests(scratch / "gpu_tests.xml"), ""]
    fails = render_failures(steps, scratch / "logs")
    if fails:
        parts += ["## Failed steps (last log lines)", "", fails, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scratch", type=Path, required=True, help="the run's scratch folder")
    p.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    a = p.parse_args(argv)
    text = render(a.scratch)
    tmp = a.out.with_name(f".tmp-{os.getpid()}-{a.out.name}")
    tmp.write_text(text)
    os.replace(tmp, a.out)
    print(f"gpu_check: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
