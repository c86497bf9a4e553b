"""Write a realistic synthetic sweep of run.json records, for benchmarking the analysis and report.

    python benchmarks/make_synthetic_runs.py OUT_DIR --runs 10000 [--seed 0] [--max-tokens 32]

writes OUT_DIR/synthetic/<job>/run.json (schema_version 1, results/schema/run.schema.json), built
from the shape of tests/data/run_v1.json:

* a grid of 60 points, runtime.n_ctx in (512, 1024, 2048, 4096) x runtime.n_gpu_layers in
  ("all", 0, 9) x sampling.temperature in (0.0, 0.2, 0.7, 1.0, 1.2), repeated as trials (job name
  suffix ``+trial=N``) until there are `n_runs` jobs;
* two machines, as when results of two hosts are copied into one folder: two thirds of the trials
  on a CPU-only build like run_v1.json (every offload request runs 0 layers: the three n_gpu_layers
  values are one effective configuration, listed in equivalent_to), one third on an H100 host with
  a CUDA build (all -> 19 layers, 0 -> 0, 9 -> 9), each with a `telemetry` block (per-phase power,
  energy per token, VRAM, utilisation; the board reports no fan) and a `roofline` block;
* 5 repetitions per run from raw token timestamps: decode_tps ~ N(100 - n_ctx/200, 2),
  ttft_ms ~ N(50 + n_ctx/100, 3); every derived value (prefill_tps, e2e, ITL percentiles, the
  Ollama ns aliases) computed from them with harness.metrics' definitions, so the ground truth is
  known: n_ctx changes decode_tps and ttft_ms, temperature and n_gpu_layers change nothing;
* effective_id: the hash of the effective configuration (as harness.plan.Plan.effective_id);
* model reloads where the load key changes (n_ctx or effective offload), reused loads otherwise;
* about 2% failed runs: a quarter at load (effective kept; load, prompt, provenance empty),
  the rest during measurement after 0-4 repetitions (those stay data).

Aggregates of complete runs are computed vectorised with the formulas of
harness.metrics.aggregate (calling it per run costs ~4 ms, 40 s for 10,000 runs); failed runs with
partial repetitions use harness.metrics.aggregate itself. `check_aggregates` compares records with
RunRecord.from_dict(d).recompute_aggregates(). 10,000 runs (about 115 MB) take about 10 s to write.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "run_v1.json"
SCHEMA = REPO / "results" / "schema" / "run.schema.json"

SWEEP = "synthetic"
N_CTX = (512, 1024, 2048, 4096)
N_GPU_LAYERS = ("all", 0, 9)
TEMPERATURES = (0.0, 0.2, 0.7, 1.0, 1.2)
GRID = [(c, g, t) for c in N_CTX for g in N_GPU_LAYERS for t in TEMPERATURES]  # launch order
REPS = 5
N_PROMPT = 31
N_LAYERS = 18  # gemma-3-270m: 18 blocks + the output layer = 19 offloadable
FAILED_SHARE = 0.02
GPU_NAME = "NVIDIA H100 80GB HBM3"
AGGREGATED = ("ttft_ms", "prompt_eval_ms", "prefill_tps", "decode_ms", "decode_tps", "e2e_ms",
              "e2e_tps", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms", "itl_max_ms")
T975 = {4: 2.7764451051977987}  # scipy.stats.t.ppf(0.975, df), filled in lazily for other df

CPU_WARNING = ("runtime.n_gpu_layers={req} asks for GPU offload, but this llama.cpp build has no GPU backend: "
               "running on the CPU (n_gpu_layers_effective=0)")

GPU_STATIC = {"index": 0, "name": GPU_NAME, "uuid": "GPU-5b1e0d6a-8c0e-4b53-9f0e-2a1c3d4e5f60",
              "driver_version": "550.54.15", "cuda_driver_version": "12.4", "memory_total_mib": 81559.0,
              "power_limit_w": 700.0, "memory_bus_width_bits": 5120, "max_mem_clock_mhz": 2619,
              "max_sm_clock_mhz": 1980, "peak_mem_bandwidth_gbps": 3352.32, "n_fans": 0}


def _t975(df: int) -> float:
    if df not in T975:
        from scipy import stats

        T975[df] = float(stats.t.ppf(0.975, df))
    return T975[df]


# --- the constant parts of a record, per machine and grid point -------------------------------------

def _hosts(golden: dict) -> dict:
    """Provenance and engine facts of the two machines."""
    cpu_prov = golden["provenance"]
    gpu_prov = copy.deepcopy(cpu_prov)
    gpu_prov["engine"] = {"llama_cpp_python": "0.3.36", "gpu_offload_supported": True,
                          "system_info": "CUDA : ARCHS = 900 | USE_GRAPHS = 1 | PEER_MAX_BATCH_SIZE = 128 | "
                                         "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | "
                                         "AVX512 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"}
    gpu_prov["cuda_visible_devices"] = "0"
    gpu_prov["host"] = {"hostname": "gpu-node-07", "cpu_model": "Intel(R) Xeon(R) Platinum 8480+",
                        "cpu_cores_physical": 16, "cpu_cores_logical": 32, "cpu_affinity": 16,
                        "ram_total_mib": 131072, "os": "Linux-5.15.0-105-generic-x86_64-with-glibc2.35",
                        "python": "3.11.7"}
    gpu_prov["gpu"] = {"available": True, "reason": None, "driver_version": GPU_STATIC["driver_version"],
                       "cuda_driver_version": GPU_STATIC["cuda_driver_version"], "gpus": [dict(GPU_STATIC)]}
    return {
        "cpu": {"prov": cpu_prov, "offload": False, "threads": 2},
        "gpu": {"prov": gpu_prov, "offload": True, "threads": 16},
    }


def _effective_layers(req, offload: bool) -> int:
    if not offload:
        return 0
    return N_LAYERS + 1 if req == "all" else min(int(req), N_LAYERS + 1)


def _effective_id(cfg: dict, ngl_eff: int, n_ctx_eff: int, model: dict) -> str:
    """As harness.plan.Plan.effective_id: the load key (effective offload and context), the model,
    sampling, workload and bench settings."""
    rt = cfg["runtime"]
    eff = {
        "load": {"model_path": None, "model_size": model["size_bytes"], "n_gpu_layers": ngl_eff, "n_ctx": n_ctx_eff,
                 "n_batch": rt["n_batch"], "n_ubatch": rt["n_ubatch"], "n_threads": rt["n_threads"],
                 "n_threads_batch": rt["n_threads_batch"], "flash_attn": rt["flash_attn"], "type_k": rt["type_k"],
                 "type_v": rt["type_v"], "use_mmap": rt["use_mmap"], "offload_kqv": rt["offload_kqv"]},
        "model": [model["architecture"], model["size_bytes"], model["n_tensors"]],
        "sampling": cfg["sampling"], "workload": cfg["workload"], "bench": cfg["bench"],
    }
    return hashlib.sha256(json.dumps(eff, sort_keys=True).encode()).hexdigest()[:16]


def _points(golden: dict, hosts: dict, max_tokens: int) -> dict:
    """(host, grid index) -> the parts of a record fixed by the machine and the grid point."""
    model = golden["provenance"]["model"]
    out = {}
    for host, h in hosts.items():
        for gi, (n_ctx, ngl, temp) in enumerate(GRID):
            cfg = copy.deepcopy(golden["config"])
            cfg["runtime"]["n_ctx"], cfg["runtime"]["n_gpu_layers"] = n_ctx, ngl
            cfg["sampling"]["temperature"] = temp
            cfg["workload"]["max_tokens"] = max_tokens
            cfg["bench"]["repetitions"] = REPS
            cfg["sweep_name"] = SWEEP
            ngl_eff = _effective_layers(ngl, h["offload"])
            warnings = [CPU_WARNING.format(req=ngl)] if (not h["offload"] and ngl != 0) else []
            eff = {"model_path": golden["effective"]["model_path"], "n_gpu_layers_requested": ngl,
                   "n_gpu_layers_effective": ngl_eff, "n_offloadable_layers": N_LAYERS + 1,
                   "n_ctx_requested": n_ctx, "n_ctx_effective": n_ctx, "n_ctx_train": 32768,
                   "gpu_offload_supported": h["offload"], "effective_id": _effective_id(cfg, ngl_eff, n_ctx, model),
                   "warnings": warnings, "flash_attn_effective": "on", "n_threads": h["threads"],
                   "n_threads_batch": h["threads"]}
            overrides = [f"runtime.n_ctx={n_ctx}", f"runtime.n_gpu_layers={ngl}", f"sampling.temperature={temp}",
                         f"workload.max_tokens={max_tokens}", f"bench.repetitions={REPS}"]
            out[host, gi] = {"cfg": cfg, "eff": eff, "warnings": warnings, "overrides": overrides,
                             "load_key": (n_ctx, ngl_eff)}
    return out


# --- metrics, vectorised over all runs --------------------------------------------------------------

def _metrics(rng: np.random.Generator, n_ctx: np.ndarray, ngl_eff: np.ndarray, n_gen: int) -> dict:
    """Raw token timings of every repetition of every run and the per-repetition metrics derived
    from them exactly as harness.metrics.rep_metrics does. Arrays of shape (runs, REPS[, n_gen-1])."""
    n = len(n_ctx)
    nl = n_gen - 1
    ctx = n_ctx[:, None].astype(float)
    ttft_ms = np.maximum(rng.normal(50 + ctx / 100, 3, (n, REPS)), 5.0)
    tps = np.maximum(rng.normal(100 - ctx / 200, 2, (n, REPS)), 10.0)
    # Inter-token latencies around 1000/tps with a little jitter and the odd hiccup, scaled so the
    # repetition's decode rate is the drawn one.
    jitter = rng.lognormal(0.0, 0.06, (n, REPS, nl))
    spikes = rng.random((n, REPS, nl)) < 0.01
    jitter = np.where(spikes, jitter * rng.uniform(1.5, 3.0, (n, REPS, nl)), jitter)
    jitter /= jitter.mean(axis=2, keepdims=True)
    itl_ns = np.rint(jitter * (1e9 / tps)[:, :, None]).astype(np.int64)
    ttft_ns = np.rint(ttft_ms * 1e6).astype(np.int64)
    t_last = ttft_ns + itl_ns.sum(axis=2)  # t_request = 0
    itl_ms = itl_ns / 1e6
    m = {"ttft_ms": ttft_ns / 1e6, "e2e_ms": t_last / 1e6, "decode_ms": (t_last - ttft_ns) / 1e6,
         "itl_ms": itl_ms, "total_duration": t_last}
    m["decode_tps"] = nl / (m["decode_ms"] / 1e3)
    m["e2e_tps"] = n_gen / (m["e2e_ms"] / 1e3)
    pe = np.round(m["ttft_ms"] - rng.uniform(1.0, 2.5, (n, REPS)), 3)  # llama.cpp's own prefill time
    m["prompt_eval_ms"] = pe
    m["prefill_tps"] = N_PROMPT / (pe / 1e3)
    m["prompt_eval_duration"] = np.rint(pe * 1e6).astype(np.int64)
    m["eval_duration"] = np.rint((m["e2e_ms"] - pe) * 1e6).astype(np.int64)
    for q in (50, 90, 99):
        m[f"itl_p{q}_ms"] = np.percentile(itl_ms, q, axis=2)
    m["itl_max_ms"] = itl_ms.max(axis=2)
    m["t_prefill_end_ms"] = np.round(pe + rng.uniform(0.4, 1.2, (n, REPS)), 6)
    m["engine_eval_ms"] = np.round(m["decode_ms"] * rng.uniform(0.95, 0.99, (n, REPS)), 3)
    # Run-level pooled ITL percentiles (all tokens of the run together).
    pooled = itl_ms.reshape(n, REPS * nl)
    m["pooled"] = {f"p{q}": np.percentile(pooled, q, axis=1) for q in (50, 90, 99)}
    m["pooled"]["max"] = pooled.max(axis=1)
    # Telemetry readings (used for the GPU host only): offload draws power, context takes VRAM.
    share = ngl_eff / (N_LAYERS + 1)
    m["power_w"] = np.maximum(rng.normal(75 + 230 * share, 6), 20.0)
    m["gpu_util"] = np.clip(rng.normal(8 + 70 * share, 3), 0, 100)
    m["vram_mib"] = np.rint(650 + 260 * share + n_ctx * 0.0625 + rng.normal(0, 2, n))
    return m


def _stats(v: np.ndarray) -> list[dict]:
    """harness.metrics.summarize of each row of v (shape (runs, reps), no missing value)."""
    k = v.shape[1]
    mean = v.mean(axis=1)
    med = np.median(v, axis=1)
    lo_, hi_ = v.min(axis=1), v.max(axis=1)
    if k >= 2:
        std = v.std(axis=1, ddof=1)
        half = _t975(k - 1) * std / math.sqrt(k)
        rows = zip(mean.tolist(), med.tolist(), std.tolist(), lo_.tolist(), hi_.tolist(), (mean - half).tolist(),
                   (mean + half).tolist())
        return [{"n": k, "mean": a, "median": b, "std": s, "cv": s / a if a else None, "min": mn, "max": mx,
                 "ci95_low": cl, "ci95_high": ch} for a, b, s, mn, mx, cl, ch in rows]
    return [{"n": 1, "mean": a, "median": b, "std": None, "cv": None, "min": mn, "max": mx, "ci95_low": None,
             "ci95_high": None} for a, b, mn, mx in zip(mean.tolist(), med.tolist(), lo_.tolist(), hi_.tolist())]


def _aggregates(m: dict, n_gen: int) -> list[dict]:
    """harness.metrics.aggregate of every complete run (all REPS repetitions), vectorised."""
    n = len(m["ttft_ms"])
    per_metric = {name: _stats(m[name]) for name in AGGREGATED}
    dec_s = m["decode_ms"].sum(axis=1) / 1e3
    weighted = (REPS * (n_gen - 1) / dec_s).tolist()
    pooled = {k: v.tolist() for k, v in m["pooled"].items()}
    out = []
    for i in range(n):
        a = {name: per_metric[name][i] for name in AGGREGATED}
        a["decode_tps_weighted"] = weighted[i]
        a["itl_pooled_ms"] = {"n": REPS * (n_gen - 1), "p50": pooled["p50"][i], "p90": pooled["p90"][i],
                              "p99": pooled["p99"][i], "max": pooled["max"][i]}
        a["n_gen_tokens_total"] = REPS * n_gen
        out.append(a)
    return out


def _repetitions(m: dict, i: int, n_gen: int, seed: int) -> list[dict]:
    cols = {k: m[k][i].tolist() for k in ("ttft_ms", "prompt_eval_ms", "prefill_tps", "decode_ms", "decode_tps",
                                           "e2e_ms", "e2e_tps", "itl_p50_ms", "itl_p90_ms", "itl_p99_ms",
                                           "itl_max_ms", "prompt_eval_duration", "eval_duration", "total_duration",
                                           "t_prefill_end_ms", "engine_eval_ms")}
    itl = m["itl_ms"][i].tolist()
    return [{"rep": r, "n_prompt_tokens": N_PROMPT, "n_gen_tokens": n_gen, "ttft_ms": cols["ttft_ms"][r],
             "prompt_eval_ms": cols["prompt_eval_ms"][r], "prefill_tps": cols["prefill_tps"][r],
             "decode_ms": cols["decode_ms"][r], "decode_tps": cols["decode_tps"][r], "e2e_ms": cols["e2e_ms"][r],
             "e2e_tps": cols["e2e_tps"][r], "itl_p50_ms": cols["itl_p50_ms"][r], "itl_p90_ms": cols["itl_p90_ms"][r],
             "itl_p99_ms": cols["itl_p99_ms"][r], "itl_max_ms": cols["itl_max_ms"][r],
             "prompt_eval_count": N_PROMPT, "prompt_eval_duration": cols["prompt_eval_duration"][r],
             "eval_count": n_gen, "eval_duration": cols["eval_duration"][r],
             "total_duration": cols["total_duration"][r], "seed": seed + r,
             "t_prefill_end_ms": cols["t_prefill_end_ms"][r], "engine_eval_ms": cols["engine_eval_ms"][r],
             "engine_n_eval": n_gen - 1, "itl_ms": itl[r]} for r in range(REPS)]


# --- telemetry ----------------------------------------------------------------------------------------

def _phase(duration_ms: float, n_windows: int, interval_ms: int, power_w: float, util: float, vram: float,
           tokens: int | None = None) -> dict:
    energy = power_w * duration_ms / 1e3
    n_samples = max(1, int(duration_ms // interval_ms))
    return {"cpu_freq_mhz_mean": 3800.0, "cpu_temp_c_max": None, "duration_ms": duration_ms,
            "energy_j": energy, "energy_methods": ["counter"],
            "energy_per_token_j": energy / tokens if tokens else None,
            "fan_pct_max": None, "fan_pct_mean": None, "gpu_util_pct_max": min(100.0, util * 1.25 + 2),
            "gpu_util_pct_mean": util, "mem_clock_mhz_mean": 2619.0, "mem_util_pct_mean": util * 0.6,
            "n_samples": n_samples, "n_windows": n_windows, "power_w_max": power_w * 1.08, "power_w_mean": power_w,
            "proc_cpu_pct_mean": 99.0, "proc_rss_mib_max": 1480.0, "proc_vram_mib_max": vram - 520.0,
            "pstate_max": 0, "sm_clock_mhz_mean": 1980.0, "sys_cpu_pct_mean": 6.5, "temp_c_max": 41.0 + power_w / 20,
            "throttle_reasons": [], "tokens": tokens, "tokens_per_j": tokens / energy if tokens and energy else None,
            "vram_used_mib_max": vram}


def _telemetry(reps: list[dict], warmup_ms: float, load_ms: float | None, power: float, util: float, vram: float,
               t0_ns: int) -> dict:
    """The telemetry block of a GPU run: windows (load if this run loaded, warm-up, prefill and
    decode of each measured repetition) and per-phase summaries."""
    interval = 100
    windows, t = [], 0
    if load_ms is not None:
        windows.append({"name": "load", "t0_ns": t, "t1_ns": t + int(load_ms * 1e6), "tokens": None})
        t = windows[-1]["t1_ns"] + 1_000_000
    warm = int(warmup_ms * 1e6)
    windows.append({"name": "warmup", "t0_ns": t, "t1_ns": t + warm, "tokens": None})
    t += warm + 2_000_000
    for r in reps:
        pre, dec = int(r["ttft_ms"] * 1e6), int(r["decode_ms"] * 1e6)
        windows.append({"name": "prefill", "t0_ns": t, "t1_ns": t + pre, "tokens": r["n_prompt_tokens"]})
        windows.append({"name": "decode", "t0_ns": t + pre, "t1_ns": t + pre + dec, "tokens": r["n_gen_tokens"] - 1})
        t += pre + dec + 2_000_000
    phases = {}
    if load_ms is not None:
        phases["load"] = _phase(load_ms, 1, interval, power * 0.55, 2.0, vram * 0.8)
    phases["warmup"] = _phase(warm / 1e6, 1, interval, power, util, vram)
    if not reps:
        return _telemetry_block(windows, phases, t, interval, t0_ns)
    phases["prefill"] = _phase(sum(r["ttft_ms"] for r in reps), len(reps), interval, power * 1.2,
                               min(100.0, util * 1.3), vram, sum(r["n_prompt_tokens"] for r in reps))
    phases["decode"] = _phase(sum(r["decode_ms"] for r in reps), len(reps), interval, power, util, vram,
                              sum(r["n_gen_tokens"] - 1 for r in reps))
    return _telemetry_block(windows, phases, t, interval, t0_ns)


def _telemetry_block(windows: list[dict], phases: dict, t: int, interval: int, t0_ns: int) -> dict:
    return {"nvml": "auto", "interval_ms": interval, "reason": None, "gpu": GPU_STATIC, "status": "ok", "error": None,
            "n_samples": t // (interval * 1_000_000) + 1, "t0_ns": t0_ns, "windows": windows,
            "power_source": "instant", "unsupported": {"fan": "NotSupported"}, "energy_counter_update_ms_min": 1.0,
            "other_processes": [], "phases": phases}


def _roofline(ngl_eff: int, decode_mean: float | None, weights: int) -> dict:
    if ngl_eff == 0:
        return {"bytes_per_token_min": weights, "peak_mem_bandwidth_gbps": None, "decode_tps_ceiling": None,
                "bandwidth_efficiency": None,
                "reason": "CPU run (n_gpu_layers_effective=0): no GPU memory bandwidth applies"}
    peak = GPU_STATIC["peak_mem_bandwidth_gbps"]
    ceiling = peak * 1e9 / weights
    return {"bytes_per_token_min": weights, "peak_mem_bandwidth_gbps": peak, "decode_tps_ceiling": ceiling,
            "bandwidth_efficiency": decode_mean / ceiling if decode_mean else None,
            "reason": None if ngl_eff >= N_LAYERS + 1
            else "partial offload: the ceiling assumes every weight is read from GPU memory"}


# --- records --------------------------------------------------------------------------------------------

def _partial_aggregates(reps: list[dict]) -> dict:
    from harness.metrics import RepMetrics, aggregate

    if not reps:
        return {}
    return aggregate([RepMetrics.from_dict(r) for r in reps], [r["itl_ms"] for r in reps])


def records(n_runs: int, seed: int = 0, max_tokens: int = 32):
    """Yield (job_name, record dict) for n_runs synthetic runs of one sweep."""
    if max_tokens < 2:
        raise ValueError("max_tokens must be at least 2 (decode rates need two tokens)")
    rng = np.random.default_rng(seed)
    golden = json.loads(GOLDEN.read_text())
    hosts = _hosts(golden)
    points = _points(golden, hosts, max_tokens)
    weights = golden["provenance"]["model"]["tensor_data_bytes"]
    sampling_seed = golden["config"]["sampling"]["seed"]

    idx = np.arange(n_runs)
    gi = idx % len(GRID)
    trial = idx // len(GRID)
    host = np.where(trial % 3 == 2, "gpu", "cpu")  # a third of the trials on the GPU host
    n_ctx = np.array([GRID[g][0] for g in gi])
    ngl_eff = np.array([points[h, g]["eff"]["n_gpu_layers_effective"] for h, g in zip(host, gi)])
    m = _metrics(rng, n_ctx, ngl_eff, max_tokens)
    aggs = _aggregates(m, max_tokens)
    run_ids = [rng.bytes(16).hex() for _ in range(n_runs)]
    u = rng.random(n_runs)
    failed = u < FAILED_SHARE
    fail_at_load = u < FAILED_SHARE / 4
    kept = rng.integers(0, REPS, n_runs)  # repetitions measured before a failure during measurement
    load_ms = rng.normal(820, 25, n_runs)
    durations = rng.uniform(2.5, 4.0, n_runs)
    start = datetime(2026, 11, 26, 1, 0, 0, tzinfo=timezone.utc)
    clock = 0.0
    loaded_key, last_load_ms, loads = {}, {}, {}
    earlier_eid: dict[tuple, list[str]] = {}

    for i in range(n_runs):
        h, g, tr = str(host[i]), int(gi[i]), int(trial[i])
        pt = points[h, g]
        n_c, ngl, temp = GRID[g]
        job = (f"bench.repetitions={REPS},runtime.n_ctx={n_c},runtime.n_gpu_layers={ngl},"
               f"sampling.temperature={temp},workload.max_tokens={max_tokens},+trial={tr}")
        started = start + timedelta(seconds=clock)
        clock += float(durations[i])
        ended = start + timedelta(seconds=clock)
        clock += 0.05
        cfg = dict(pt["cfg"], trial=tr)
        eff = pt["eff"]
        # Reload where the load key changes within a trial (one process per trial and machine).
        proc = (h, tr)
        reused = loaded_key.get(proc) == pt["load_key"]
        if not reused:
            loads[proc] = loads.get(proc, 0) + 1
            last_load_ms[proc] = float(load_ms[i])
            loaded_key[proc] = pt["load_key"]
        same = earlier_eid.setdefault((h, tr, eff["effective_id"]), [])
        rec = {
            "schema_version": 1, "run_id": run_ids[i], "sweep_name": SWEEP, "job_name": job, "status": "ok",
            "started_at": started.isoformat(timespec="milliseconds"),
            "ended_at": ended.isoformat(timespec="milliseconds"),
            "overrides": pt["overrides"] + [f"+trial={tr}", "results_dir=results", f"sweep_name={SWEEP}"],
            "config": cfg, "effective": eff, "equivalent_to": list(same),
            "load": {"load_ms": last_load_ms[proc], "reused": reused, "loads_in_process": loads[proc]},
            "prompt": golden["prompt"], "timing_path": "python", "warmup_done": 1,
            "repetitions": _repetitions(m, i, max_tokens, sampling_seed), "aggregates": aggs[i],
            "provenance": hosts[h]["prov"], "warnings": pt["warnings"], "error": None,
        }
        same.append(job)
        if failed[i]:
            rec["status"] = "failed"
            if fail_at_load[i]:
                rec.update(load={}, prompt={}, provenance={}, warmup_done=0, repetitions=[], aggregates={},
                           error={"type": "EngineError", "message": "llama_model_load: failed to allocate buffer",
                                  "phase": "load"})
                loaded_key.pop(proc, None)
            else:
                reps = rec["repetitions"][: int(kept[i])]
                why = (f"llama_decode returned 1: no KV cache slot (n_ctx={n_c})" if h == "cpu"
                       else "CUDA error: out of memory")
                rec.update(repetitions=reps, aggregates=_partial_aggregates(reps),
                           error={"type": "EngineError", "message": why, "phase": "measure"})
        if h == "gpu" and rec["provenance"]:  # the sampler ran from the load on
            reps = rec["repetitions"]
            rec["telemetry"] = _telemetry(reps, float(m["e2e_ms"][i, 0]), None if reused else last_load_ms[proc],
                                          float(m["power_w"][i]), float(m["gpu_util"][i]), float(m["vram_mib"][i]),
                                          1_000_000_000 * (i + 1))
            dec = (rec["aggregates"].get("decode_tps") or {}).get("mean")
            rec["roofline"] = _roofline(eff["n_gpu_layers_effective"], dec, weights)
        yield job, rec


def write_runs(out_dir: Path, n_runs: int, seed: int = 0, max_tokens: int = 32) -> tuple[Path, dict]:
    """Write n_runs job folders out_dir/synthetic/<job>/run.json. Returns the sweep folder and what
    was written: counts (runs, ok_runs, failed_runs, ok_samples, failed_samples, telemetry_runs)
    and `examples`, one record of each kind (ok / failed at load / failed while measuring, with
    and without repetitions, CPU and GPU host)."""
    sweep = Path(out_dir) / SWEEP
    sweep.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
    info = {"runs": 0, "ok_runs": 0, "failed_runs": 0, "ok_samples": 0, "failed_samples": 0, "telemetry_runs": 0,
            "examples": {}}
    for job, rec in records(n_runs, seed, max_tokens):
        d = sweep / job
        os.makedirs(d, exist_ok=True)
        with open(d / "run.json", "w", encoding="utf-8") as f:
            f.write(dumps(rec))
        ok = rec["status"] == "ok"
        info["runs"] += 1
        info["ok_runs" if ok else "failed_runs"] += 1
        info["ok_samples"] += len(rec["repetitions"])  # measured repetitions of failed runs stay data
        info["failed_samples"] += 0 if ok else 1
        info["telemetry_runs"] += "telemetry" in rec
        kind = ("gpu" if "telemetry" in rec else "cpu") + ":" + (
            "ok" if ok else f"failed-{rec['error']['phase']}-{'with' if rec['repetitions'] else 'no'}-reps")
        info["examples"].setdefault(kind, rec)
    return sweep, info


def make_runs(out_dir: Path, n_runs: int, seed: int = 0, max_tokens: int = 32) -> Path:
    """Write n_runs job folders out_dir/synthetic/<job>/run.json; return the sweep folder."""
    return write_runs(out_dir, n_runs, seed, max_tokens)[0]


# --- checks -------------------------------------------------------------------------------------------

def validate(recs: list[dict]) -> None:
    """Raise jsonschema.ValidationError unless every record is valid against run.schema.json."""
    from jsonschema import Draft202012Validator

    v = Draft202012Validator(json.loads(SCHEMA.read_text()))
    for d in recs:
        v.validate(d)


def check_aggregates(recs: list[dict], rel: float = 1e-9) -> None:
    """Raise AssertionError unless each record's aggregates equal RunRecord.recompute_aggregates()."""
    from harness.record import RunRecord

    def close(a, b, path):
        if isinstance(a, dict):
            assert isinstance(b, dict) and a.keys() == b.keys(), path
            for k in a:
                close(a[k], b[k], f"{path}.{k}")
        elif isinstance(a, float) or isinstance(b, float):
            assert a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12), (path, a, b)
        else:
            assert a == b, (path, a, b)

    for d in recs:
        close(d["aggregates"], RunRecord.from_dict(d).recompute_aggregates(), d["job_name"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=32, help="generated tokens per repetition (default 32)")
    p.add_argument("--check", action="store_true", help="validate a few records against the schema and "
                                                        "recompute their aggregates")
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    sweep, info = write_runs(a.out_dir, a.runs, a.seed, a.max_tokens)
    print(f"{a.runs} runs written to {sweep} in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in info.items() if k != "examples"))
    if a.check:
        recs = list(info["examples"].values())
        validate(recs)
        check_aggregates(recs)
        print(f"{len(recs)} sample records valid, aggregates match")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
