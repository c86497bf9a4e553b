"""The native timing path against the Python one, side by side on one engine worker, interleaved.

    .venv/bin/pytest benchmarks/test_native_vs_python.py -s     # prints the ratios

Both paths measure through harness.measure.Point on the same supervised engine worker (one loaded
model, the same context, threads and sampler chain), with the same prompt (pp512) and seeds and
64 generated tokens; telemetry is off so that only the timing path differs. Their repetitions are
interleaved ABBA (python, native, native, python, ...) so a drift of a shared machine falls on both.
extra_info holds, for native / python (ratio of means, Fieller 95% interval, as `harness compare`):

  decode           decode_tps: (n_gen - 1) / (last token - first token), what a user sees
  decode_engine    decode_engine_tps: each path's own engine-only rate (native: its clock around
                   llama_decode + llama_synchronize; python: llama.cpp's t_eval counter)
  decode_llama     n_eval / t_eval from llama.cpp's own perf counter on both paths: the same timer
  prefill          prefill_tps (512 prompt tokens / llama.cpp's prompt-eval time)
  sampling_ms      mean time per token inside llama_sampler_sample

The target is native / python >= 1.00 within the interval for decode and prefill; it is reported,
not asserted (a shared machine is too noisy for a timed assertion). What is asserted: both paths
generated the same tokens. HARNESS_BENCH_ROUNDS (default 10) sets the number of rounds; the load
average of the machine is recorded with the numbers.
"""

from __future__ import annotations

import os

from harness.config import validate
from harness.hydra_conf import compose
from harness.measure import Point, backend_for, new_record
from harness.plan import make_plan

ROUNDS = int(os.environ.get("HARNESS_BENCH_ROUNDS", "10"))
METRICS = (("decode", "decode_tps"), ("decode_engine", "decode_engine_tps"), ("decode_llama", "decode_llama_tps"),
           ("prefill", "prefill_tps"), ("sampling_ms", "sampling_ms"))


def _point(timing: str, backend, model_path) -> Point:
    from harness import engine

    rc = validate(compose(["workload=pp512_tg128", "runtime.n_ctx=1024", "workload.max_tokens=64",
                           "sampling.temperature=0", "telemetry.nvml=off", "telemetry.host=false",
                           f"bench.timing={timing}", "bench.allow_shared_device=true"]))
    plan = make_plan(rc, gpu_offload_supported=engine.gpu_offload_supported(), model_path=model_path)
    p = Point(rc, plan, backend, new_record(rc, plan, job_name=f"bench-{timing}", config={}))
    p.start()
    p.warmup(0)
    return p


def test_native_vs_python(benchmark, model_path):
    import pytest

    from harness import devicelock
    from harness.engine import native
    from sidebyside import ratios_into

    st = native.status()
    if not st.usable:
        pytest.skip(f"native timing path unusable: {st.reason}")
    backend = backend_for(validate(compose(["bench.allow_shared_device=true"])), isolated=True)
    points = {t: _point(t, backend, model_path) for t in ("python", "native")}
    assert points["native"].timing == "native" and points["python"].timing == "python"
    order = iter([("python", "native") if r % 2 == 0 else ("native", "python") for r in range(ROUNDS)])
    rounds = iter(range(ROUNDS))
    load = [os.getloadavg()]

    def one_round() -> None:
        r = next(rounds)
        for name in next(order):
            points[name].repetition(r)

    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    finally:
        load.append(os.getloadavg())
        for p in points.values():
            p.close()
        backend.close()
        devicelock.release_all()

    side = {}
    for k, p in points.items():
        m = [x.metrics for x in p.repetitions]
        side[k] = {"decode_tps": [x.decode_tps for x in m], "decode_engine_tps": [x.decode_engine_tps for x in m],
                   "decode_llama_tps": [r.engine_n_eval / (r.engine_eval_ms / 1e3) if r.engine_eval_ms else None
                                        for r in p.raws],
                   "prefill_tps": [x.prefill_tps for x in m], "sampling_ms": [x.sampling_ms for x in m]}
    info = benchmark.extra_info
    info.update(rounds=ROUNDS, loadavg_start=list(load[0]), loadavg_end=list(load[-1]), timing_path_native=st.reason)
    lines = [f"\nnative / python, {ROUNDS} interleaved rounds (ABBA), one engine worker; "
             f"load average {load[0][0]:.2f} -> {load[-1][0]:.2f} (1 min), {load[-1][1]:.2f} (5 min)"]
    for name, row, ci, ci_txt in ratios_into(info, side, "python", "native", METRICS):
        lines.append(f"  {name:<14} python {row['mean_a']:9.3f}  native {row['mean_b']:9.3f}  "
                     f"ratio {row['ratio']:.3f} {ci_txt}")
    print("\n".join(lines))
    assert len(points["native"].repetitions) == len(points["python"].repetitions) == ROUNDS
    for a, b in zip(points["native"].raws, points["python"].raws):
        assert a.token_ids == b.token_ids  # same seeds, same work
