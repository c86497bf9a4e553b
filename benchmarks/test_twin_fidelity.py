"""A performance twin against its real model, side by side: does the twin run at the real speed?

    .venv/bin/pytest benchmarks/test_twin_fidelity.py -s     # prints the ratios

The twin is made here from the real default model's header (harness.twin.make_twin: same
architecture, tokenizer, tensor shapes and types, synthetic weights). Every side is measured
through harness.measure.Point, each on its own engine worker, with the same workload (pp512, 64
generated tokens), context, threads, timing path and sampler (greedy; bench.ignore_eos, the
default, keeps end-of-generation tokens out so every side decodes exactly 64 tokens whatever its
text), telemetry off. Repetitions are interleaved, the order of the sides reversed every other
round, so a drift of a shared machine falls on all of them.

The sides separate the weights from where the file sits in memory (harness/engine/mapping.py:
with mmap, the share of the weights the kernel maps with 2 MiB pages depends on how the file was
last written or read, and it moves CPU decode by tens of percent):

  real         the installed real model, mmap (as a sweep uses it)
  copy         the real model's bytes written afresh beside the twin, the way the twin is written
  twin         the twin, mmap
  real_read    the installed real model, runtime.use_mmap=false (weights read into process memory)
  twin_read    the twin, runtime.use_mmap=false

Ratios (of means, Fieller 95% interval, as `harness compare`) for decode_tps, llama.cpp's own
decode rate (decode_llama) and prefill_tps:

  twin / copy            the twin's fidelity with the file placed the same way   (target 1 +- 0.03)
  twin_read / real_read  the twin's fidelity without mmap                        (target 1 +- 0.03)
  real / copy            the placement effect alone: the same bytes, two page-cache layouts
  twin / real            what a user comparing the twin with the installed file would see

The target is reported, not asserted (a shared machine is too noisy for a timed assertion).
What is asserted: every side generated the same number of tokens in every repetition. Each side's
huge-page share (run.json's load.mapping) is printed with it. HARNESS_BENCH_ROUNDS (default 10)
sets the number of rounds; the machine's load average is recorded with the numbers.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.config import validate
from harness.hydra_conf import compose
from harness.measure import Point, backend_for, new_record
from harness.plan import make_plan

ROUNDS = int(os.environ.get("HARNESS_BENCH_ROUNDS", "10"))
METRICS = (("decode", "decode_tps"), ("decode_llama", "decode_llama_tps"), ("prefill", "prefill_tps"))
TARGET = 0.03
SIDES = ("real", "copy", "twin", "real_read", "twin_read")
RATIOS = (("twin", "copy", True), ("twin_read", "real_read", True), ("real", "copy", False), ("twin", "real", False))


def _point(name: str, model_path, *overrides: str) -> Point:
    from harness import engine

    rc = validate(compose(["workload=pp512_tg128", "runtime.n_ctx=1024", "workload.max_tokens=64",
                           "sampling.temperature=0", "telemetry.nvml=off", "telemetry.host=false",
                           "bench.allow_shared_device=true", *overrides]))
    plan = make_plan(rc, gpu_offload_supported=engine.gpu_offload_supported(), model_path=model_path)
    p = Point(rc, plan, backend_for(rc, isolated=True), new_record(rc, plan, job_name=f"fidelity-{name}", config={}))
    p.start()
    p.warmup(0)
    return p


def _fresh_copy(src: Path, dst: Path, chunk: int = 1 << 25) -> None:
    """The bytes of `src` written to `dst` in large pieces, as the twin writer writes."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        while block := f.read(chunk):
            g.write(block)


def test_twin_fidelity(benchmark, model_path, tmp_path_factory):
    from harness import devicelock
    from sidebyside import ratios_into
    from harness.twin import make_twin, twin_marker

    where = tmp_path_factory.mktemp("twin")
    twin_path = where / "gemma3_270m-twin.gguf"
    copy_path = where / "gemma3_270m-copy.gguf"
    made = make_twin(model_path, twin_path, seed=0)
    _fresh_copy(model_path, copy_path)
    assert twin_marker(twin_path) is not None and twin_marker(model_path) is None
    files = {"real": (model_path,), "copy": (copy_path,), "twin": (twin_path,),
             "real_read": (model_path, "runtime.use_mmap=false"), "twin_read": (twin_path, "runtime.use_mmap=false")}
    points = {}
    try:
        for name in SIDES:
            points[name] = _point(name, *files[name])
        rounds = iter(range(ROUNDS))
        load = [os.getloadavg()]

        def one_round() -> None:
            r = next(rounds)
            for name in (SIDES if r % 2 == 0 else reversed(SIDES)):
                points[name].repetition(r)

        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
        load.append(os.getloadavg())
    finally:
        for p in points.values():
            p.close()
            p.backend.close()
        devicelock.release_all()

    side = {}
    for k, p in points.items():
        side[k] = {"decode_tps": [x.metrics.decode_tps for x in p.repetitions],
                   "decode_llama_tps": [r.engine_n_eval / (r.engine_eval_ms / 1e3) if r.engine_eval_ms else None
                                        for r in p.raws],
                   "prefill_tps": [x.metrics.prefill_tps for x in p.repetitions]}
    mapping = {k: p.record.load.get("mapping") for k, p in points.items()}
    info = benchmark.extra_info
    info.update(rounds=ROUNDS, loadavg_start=list(load[0]), loadavg_end=list(load[-1]), target=TARGET,
                twin_seconds=made["seconds"], twin_tensor_types=made["tensor_types"],
                timing_path=points["real"].timing, mapping=mapping)
    lines = [f"\n{ROUNDS} interleaved rounds (order reversed every other round), timing path "
             f"{points['real'].timing}; load average {load[0][0]:.2f} -> {load[-1][0]:.2f} (1 min)"]
    for k in SIDES:
        m = mapping[k] or {}
        lines.append(f"  {k:<10} mapping: " + (f"huge-page share {m['huge_share']:.2f} of {m['mapped_mib']:.0f} MiB"
                                               if m.get("mmap") else "read into process memory" if m else "unknown"))
    for b, a, targeted in RATIOS:
        sub = {}
        lines.append(f" {b} / {a}" + (f" (target 1 +- {TARGET:.0%})" if targeted else ""))
        for name, row, ci, ci_txt in ratios_into(sub, side, a, b, METRICS):
            within = None not in ci and 1 - TARGET <= ci[0] and ci[1] <= 1 + TARGET
            tag = f"{b}_vs_{a}_{name}"
            info[f"{tag}_ratio"], info[f"{tag}_ratio_ci95"] = row["ratio"], ci
            info[f"{tag}_means"] = [row["mean_a"], row["mean_b"]]
            if targeted:
                info[f"{tag}_within_target"] = within
            lines.append(f"  {name:<13} {a} {row['mean_a']:9.2f}  {b} {row['mean_b']:9.2f}  ratio {row['ratio']:.3f} "
                         f"{ci_txt}" + (f"  {'within' if within else 'NOT within'} +-{TARGET:.0%}" if targeted else ""))
    for k in SIDES:
        info[f"decode_tps_{k}"] = side[k]["decode_tps"]
        info[f"prefill_tps_{k}"] = side[k]["prefill_tps"]
    print("\n".join(lines))
    counts = {len(p.repetitions) for p in points.values()}
    assert counts == {ROUNDS}, counts
    for raws in zip(*(p.raws for p in points.values())):
        assert {len(r.token_ids) for r in raws} == {64}  # the same work: no early end of generation
