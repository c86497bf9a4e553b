"""What telemetry sampling costs the decode rate: telemetry off vs NVML + host sampling every 100 ms
and every 10 ms, on the default model, measured where it runs in a sweep.

    .venv/bin/pytest benchmarks/test_telemetry_overhead.py -s      # prints the ratios

The engine runs in its supervised worker process and the sampler in the measuring process, reading
the worker's pid, as in `harness run`: one measuring process (a child, `python THIS_FILE --drive`)
builds three harness.measure.Points on one engine worker (one loaded model): telemetry off, 100 ms
and 10 ms. Only the visited point samples (Point.resume / pause, as a scheduled sweep does), so a
point's sampler never runs during another point's repetitions. Rounds are interleaved with the
order rotated every round (off, 100ms, 10ms; 100ms, 10ms, off; ...), one repetition (pp512 prompt,
64 generated tokens) per point per round, after one warm-up each.

The GPU is the FAKE libnvidia-ml.so.1 (tests/fakes/fake_nvml.c, built here with the C compiler;
skipped when there is none): one H100-like GPU with constant readings, so the real pynvml code path
runs on every tick, on machines with or without a GPU. LD_PRELOAD must be set when a process starts,
hence the child. extra_info records per variant the decode tok/s per round, and

    ratio_100ms = mean decode tok/s at 100 ms / mean decode tok/s with telemetry off
    ratio_10ms  = mean decode tok/s at 10 ms  / mean decode tok/s with telemetry off

with their Fieller 95% intervals (harness.experiments.ratios.ratio_rows, as `harness compare`), and
the machine's load average. The target is ratio_100ms >= 0.99 (within its interval). It is
reported, not asserted (timed assertions are not allowed in this project): the test asserts only
that every repetition completed and that telemetry sampled. TELEMETRY_BENCH_ROUNDS (default 12)
sets the number of rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

ROUNDS = int(os.environ.get("TELEMETRY_BENCH_ROUNDS", "12"))
COMMON = ["workload=pp512_tg128", "runtime.n_ctx=1024", "workload.max_tokens=64", "sampling.temperature=0",
          "bench.allow_shared_device=true"]
VARIANTS = {
    "off": ["telemetry.nvml=off", "telemetry.host=false"],
    "100ms": ["telemetry.nvml=on", "telemetry.interval_ms=100", "telemetry.gpu_index=0"],
    "10ms": ["telemetry.nvml=on", "telemetry.interval_ms=10", "telemetry.gpu_index=0"],
}
GPU = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555",
       "memory_total_mib": 81559, "power_limit_w": 700, "bus_width": 5120, "max_mem_clock_mhz": 2619,
       "max_sm_clock_mhz": 1980, "fans": 0}
CONSTANT = {"t_ms": 0, "gpu": 0, "util_gpu": 97, "util_mem": 60, "mem_used_mib": 1024, "power_w": 300.0,
            "temp_c": 55, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "pstate": 0, "throttle": 0}


def drive(rounds: int, out: Path) -> None:
    """The measuring process: three Points on one engine worker, interleaved; results as JSON."""
    from harness import devicelock, engine
    from harness.config import validate
    from harness.hydra_conf import compose
    from harness.measure import Point, backend_for, new_record
    from harness.modelfile import default_model_path
    from harness.plan import make_plan

    model_path = default_model_path()
    backend = backend_for(validate(compose(COMMON)), isolated=True)
    points: dict[str, Point] = {}
    for name, overrides in VARIANTS.items():
        rc = validate(compose(COMMON + overrides))
        plan = make_plan(rc, gpu_offload_supported=engine.gpu_offload_supported(), model_path=model_path)
        p = Point(rc, plan, backend, new_record(rc, plan, job_name=f"telemetry-{name}", config={}))
        p.start()
        p.warmup(0)
        p.pause()
        points[name] = p
    names = list(VARIANTS)
    load = [os.getloadavg()]
    try:
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                p = points[name]
                p.resume()
                p.repetition(r)
                p.pause()
        load.append(os.getloadavg())
    finally:
        for p in points.values():
            p.close()
        backend.close()
        devicelock.release_all()
    res = {"loadavg_start": load[0], "loadavg_end": load[-1], "timing_path": points["off"].timing, "variants": {}}
    for name, p in points.items():
        t = p.record.telemetry or {}
        res["variants"][name] = {
            "decode_tps": [x.metrics.decode_tps for x in p.repetitions],
            "decode_engine_tps": [x.metrics.decode_engine_tps for x in p.repetitions],
            "n_samples": t.get("n_samples"), "status": t.get("status"), "interval_ms": t.get("interval_ms"),
            "gpu_name": (t.get("gpu") or {}).get("name"), "reason": t.get("reason"),
            "worker_pid_sampled": backend.pid,
        }
    out.write_text(json.dumps(res))


def test_decode_tps_telemetry_overhead(benchmark, tmp_path, model_path):
    import pytest

    from harness.experiments.ratios import ratio_rows

    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler (cc/gcc) to build the fake libnvidia-ml.so.1")
    assert model_path.is_file()  # the default model is assembled once, outside the timed runs
    lib = fakenvml.build(tmp_path)
    trace = fakenvml.write_trace(tmp_path / "constant.trace", gpus=[GPU], rows=[CONSTANT])
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML_") and k != "LD_PRELOAD"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(fakenvml.env(lib, trace))
    out = tmp_path / "telemetry_overhead.json"

    def run() -> None:
        proc = subprocess.run([sys.executable, __file__, "--drive", str(ROUNDS), str(out)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=7200)
        assert proc.returncode == 0, f"measuring process exited {proc.returncode}\n{proc.stderr[-4000:]}"

    benchmark.pedantic(run, rounds=1, iterations=1)
    res = json.loads(out.read_text())
    v = res["variants"]
    for name, x in v.items():
        assert len(x["decode_tps"]) == ROUNDS, name
        if name == "off":
            assert x["reason"] == "telemetry.nvml=off"
        else:
            assert x["status"] == "ok", (name, x)
            assert x["n_samples"] and x["n_samples"] > 0
            assert x["gpu_name"] == GPU["name"]  # the fake was sampled, not a real board
            assert x["interval_ms"] == int(name.removesuffix("ms"))

    info = benchmark.extra_info
    info.update(rounds=ROUNDS, timing_path=res["timing_path"], loadavg_start=res["loadavg_start"],
                loadavg_end=res["loadavg_end"])
    print(f"\ntelemetry overhead, {ROUNDS} rounds (order rotated per round), engine worker, timing path "
          f"{res['timing_path']}; load average {res['loadavg_start'][0]:.2f} -> {res['loadavg_end'][0]:.2f} "
          f"(1 min), {res['loadavg_end'][1]:.2f} (5 min)")
    for name, x in v.items():
        info[f"decode_tps_{name}"] = x["decode_tps"]
        info[f"n_samples_{name}"] = x["n_samples"]
        print(f"  {name:>5}: decode tok/s {', '.join(f'{t:.2f}' for t in x['decode_tps'])}; samples {x['n_samples']}")
    for name in ("100ms", "10ms"):
        for metric in ("decode_tps", "decode_engine_tps"):
            rows = ratio_rows({metric: v["off"][metric]}, {metric: v[name][metric]}, [metric])
            row = rows.get(metric)
            if row is None:
                continue
            key = f"ratio_{name}" + ("" if metric == "decode_tps" else "_engine")
            ci = [row["ratio_ci95_low"], row["ratio_ci95_high"]]
            info[key], info[key + "_ci95"] = row["ratio"], ci
            ci_txt = "[?]" if None in ci else f"[{ci[0]:.4f}, {ci[1]:.4f}]"
            target = " (target >= 0.99)" if key == "ratio_100ms" else ""
            print(f"  {key:<18} = {row['ratio']:.4f} {ci_txt}{target}")


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "--drive":
    drive(int(sys.argv[2]), Path(sys.argv[3]))
