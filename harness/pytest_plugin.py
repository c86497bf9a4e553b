"""pytest plugin (entry point `harness`): harness config points as pytest-benchmark regression checks.

    def test_short_chat(harness_bench):
        info = harness_bench("workload.max_tokens=64", "bench.repetitions=5")
        assert info["decode_tps"] > 0

What pytest-benchmark times (its stats, in seconds) is one repetition: one generate call of
`workload.max_tokens` tokens (KV-cache clear, tokenisation, prefill, decode, sampling) on the
timing path `harness run` would use (native library when usable, else Python). Model load is
outside the timed rounds. The harness's own metrics go to `benchmark.extra_info`.

This module is imported by every pytest session of the environment: it imports nothing heavy at
module level, and never llama_cpp (only when a benchmark runs or its machine_info is written).
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import pytest

# Aggregated per-repetition metrics whose mean goes to extra_info, with their units in the name.
_MEANS = ("decode_tps", "ttft_ms", "prefill_tps", "e2e_ms")


def _engine_missing() -> str | None:
    """Why llama_cpp cannot be imported, or None when it can."""
    try:
        import llama_cpp  # noqa: F401  (loads the shared libraries: only when a benchmark needs them)
    except Exception as e:  # ImportError, or RuntimeError/OSError from a broken shared library
        return f"{type(e).__name__}: {e}"
    return None


def _run(benchmark: Any, overrides: tuple[str, ...]) -> dict:
    """Compose, validate, plan, load (or reuse), then bench.warmup + bench.repetitions timed
    generate calls under `benchmark.pedantic`; returns the extra_info it set."""
    from .config import ConfigError, validate
    from .hydra_conf import compose
    from .runner import preflight

    try:
        cfg = compose(overrides)
        validate(cfg)  # bad input fails before the engine check, so it never turns into a skip
    except ConfigError as e:
        pytest.fail(str(e), pytrace=False)
    except Exception as e:  # Hydra: unknown key, bad override syntax (multi-line messages)
        pytest.fail(" ".join(f"{type(e).__name__}: {e}".split()), pytrace=False)
    missing = _engine_missing()
    if missing:
        pytest.skip(f"harness_bench needs llama-cpp-python, which is not importable ({missing})")
    try:
        rc, plan = preflight(cfg)
    except ConfigError as e:
        pytest.fail(str(e), pytrace=False)
    from . import devicelock

    try:  # one device, one job, as for `harness run` (bench.allow_shared_device=true to share)
        lock = devicelock.hold_for(plan, rc.bench.allow_shared_device)
    except devicelock.DeviceBusy as e:
        pytest.fail(str(e), pytrace=False)
    try:
        return _measure(benchmark, overrides, rc, plan, lock)
    finally:
        devicelock.release_all()


def _measure(benchmark: Any, overrides: tuple[str, ...], rc, plan, lock: dict) -> dict:
    from . import engine
    from .metrics import aggregate, rep_metrics
    from .workload import build_prompt

    lm, reused = engine.load(plan)  # reused when the LoadKey equals the loaded model's
    s, b, w = rc.sampling, rc.bench, rc.workload
    # Timing path as `harness run` picks it (preflight already refused an unusable timing=native).
    path = "python" if b.timing == "python" else _timing_path()[0]
    generate: Callable[..., Any] = engine.generate
    if path == "native":
        from . import native

        generate = native.generate
    prompt = build_prompt(w, lm, s.seed)
    gen = dict(text=prompt.text, tokens=prompt.tokens, add_bos=prompt.add_bos, sampling=s,
               max_tokens=w.max_tokens, ignore_eos=b.ignore_eos)
    calls = itertools.count()
    raws: list[tuple[int, Any]] = []  # (repetition index, negative for warm-up; RawRep)

    def setup() -> tuple[tuple, dict]:
        # Cheap on purpose (it runs outside the timer): only the next call's index. generate()
        # clears the KV cache itself, so nothing of the previous repetition survives.
        return (), {"i": next(calls)}

    def target(i: int) -> None:
        # Same seeds as `harness run`: warm-up i -> seed + 1e6 + i, repetition r -> seed + r.
        r = i - b.warmup
        raws.append((r, generate(lm, seed=s.seed + (r if r >= 0 else 1_000_000 + i), **gen)))

    benchmark.pedantic(target, setup=setup, rounds=b.repetitions, warmup_rounds=b.warmup, iterations=1)
    # With --benchmark-disable pedantic makes a single call (index 0): keep it rather than nothing.
    timed = [(r, raw) for r, raw in raws if r >= 0] or [(0, raw) for _, raw in raws]
    reps = [rep_metrics(r, x.t_request_ns, x.token_ns, x.n_prompt_tokens, x.engine_prompt_eval_ms)
            for r, x in timed]
    itl = [[(t1 - t0) / 1e6 for t0, t1 in zip(x.token_ns, x.token_ns[1:])] for _, x in timed]
    agg = aggregate(reps, itl)
    effective = plan.effective_dict()
    warnings = effective.pop("warnings")
    effective |= {"n_ctx_allocated": lm.n_ctx, "flash_attn_effective": lm.flash_attn_effective}
    info = {
        **{m: (agg[m] or {}).get("mean") for m in _MEANS},
        "decode_tps_weighted": agg["decode_tps_weighted"],
        "n_gen_tokens": sum(m.n_gen_tokens for m in reps) / len(reps),
        "n_prompt_tokens": prompt.n_tokens,
        "n_repetitions": len(reps),
        "energy_per_token_j": None,  # needs telemetry around the rounds: not sampled here yet
        "load_ms": lm.load_ms,
        "load_reused": reused,
        "timing_path": path,
        "effective": effective,
        "warnings": warnings,
        "overrides": list(overrides),
        "device_lock": lock,
    }
    benchmark.extra_info.update(info)
    return info


@pytest.fixture
def harness_bench(benchmark: Any) -> Callable[..., dict]:
    """`harness_bench(*overrides)` runs one config point under `benchmark` (pedantic: rounds =
    bench.repetitions, warmup_rounds = bench.warmup) and returns what it put in extra_info:
    decode_tps / prefill_tps (tokens/s, means), decode_tps_weighted (tokens/s), ttft_ms / e2e_ms
    (ms, means), n_gen_tokens (mean per repetition), energy_per_token_j (J; None), load_ms,
    effective config, overrides. Once per test (pytest-benchmark's fixture allows one run).
    A bad config fails the test with its one-line message; no llama_cpp skips it."""

    def run(*overrides: str) -> dict:
        return _run(benchmark, tuple(overrides))

    return run


def _timing_path() -> tuple[str, str | None]:
    """("native" | "python", why not native): native when harness.native says it is usable."""
    try:
        from . import native

        usable, reason, _path = native.status()
    except Exception as e:  # absent module, no status(), a library that does not load
        return "python", f"native timing unavailable ({type(e).__name__}: {e})"
    return ("native", None) if usable else ("python", str(reason))


@functools.lru_cache(maxsize=1)
def _harness_machine_info() -> dict:
    """GPU(s) and driver (None without NVML), engine build, timing path, default model sha256."""
    from .provenance import gpu_info

    g = gpu_info()
    gpu = {"names": [d.get("name") for d in g["gpus"]], "driver_version": g.get("driver_version"),
           "cuda_driver_version": g.get("cuda_driver_version")} if g.get("available") else None
    try:
        from .engine import engine_info

        eng: dict | None = engine_info()
    except Exception:  # llama_cpp not importable: the benchmarks themselves were skipped
        eng = None
    try:
        from .modelfile import default_model_path, sha256_file

        sha: str | None = sha256_file(default_model_path())
    except Exception:  # model package missing or not assemblable
        sha = None
    path, why = _timing_path()
    return {"gpu": gpu, "engine": eng, "timing_path": path, "timing_path_note": why, "model_sha256": sha}


@pytest.hookimpl(optionalhook=True)  # a pytest-benchmark hook: harmless when that plugin is absent
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Add machine_info["harness"] (computed once per process, only when results are saved)."""
    machine_info["harness"] = _harness_machine_info()
