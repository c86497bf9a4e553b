"""pytest plugin (entry point `harness`): harness config points as pytest-benchmark regression checks.

    def test_short_chat(harness_bench):
        info = harness_bench("workload.max_tokens=64", "bench.repetitions=5")
        assert info["decode_tps"] > 0

What pytest-benchmark times (its stats, in seconds) is one repetition: one generate call of
`workload.max_tokens` tokens (KV-cache clear, tokenisation, prefill, decode, sampling) on the
timing path `harness run` would use (native library when usable, else Python). Model load is
outside the timed rounds. The harness's own metrics go to `benchmark.extra_info`.

Each round's values are kept too, in extra_info["samples"] (lists, one value per timed round:
decode_tps, prefill_tps, ttft_ms, e2e_ms), so a saved run can be compared with noise in mind:

    pytest benchmarks --benchmark-autosave
    pytest benchmarks --benchmark-compare --harness-fail-on decode_tps:-5%

`--harness-fail-on METRIC:+-N%` (repeatable) compares every harness_bench benchmark with the same
benchmark in the run `--benchmark-compare` loads, as `harness compare --fail-on` does (ratio of
means, Fieller 95% CI, Welch's p), and fails the session only on a change that is significant AND
at least N% in the bad direction. pytest-benchmark's `--benchmark-compare-fail=mean:N%` compares
means without regard to noise.

This module is imported by every pytest session of the environment: it imports nothing heavy at
module level, and never llama_cpp (only when a benchmark runs or its machine_info is written);
the comparison's pandas/scipy only when --harness-fail-on is given.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Callable

import pytest

# Aggregated per-repetition metrics whose mean goes to extra_info, with their units in the name.
_MEANS = ("decode_tps", "ttft_ms", "prefill_tps", "e2e_ms", "decode_engine_ms", "sampling_ms")
# Per-round values kept in extra_info["samples"] (harness.analysis.foreign.SAMPLE_METRICS reads them).
SAMPLES = ("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms")


def _engine_missing() -> str | None:
    """Why llama_cpp cannot be imported, or None when it can."""
    try:
        import llama_cpp  # noqa: F401  (loads the shared libraries: only when a benchmark needs them)
    except Exception as e:  # ImportError, or RuntimeError/OSError from a broken shared library
        return f"{type(e).__name__}: {e}"
    return None


def _run(benchmark: Any, backend: Any, overrides: tuple[str, ...]) -> dict:
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
        return _measure(benchmark, backend, overrides, cfg, rc, plan, lock)
    finally:
        devicelock.release_all()


def _measure(benchmark: Any, backend: Any, overrides: tuple[str, ...], cfg: dict, rc, plan, lock: dict) -> dict:
    """The measurement path of `harness run` (harness.measure.Point) with pytest-benchmark timing
    the repetitions: same record, same fields."""
    from .measure import Point, new_record

    if hasattr(backend, "timeout_s"):
        backend.timeout_s = rc.bench.point_timeout_s
    # With --benchmark-disable pedantic makes a single call (index 0): no warm-up then, so that
    # call is a timed repetition rather than nothing. bench.warmup=auto warms up before the
    # timed rounds (until two warm-ups agree), outside pytest-benchmark's warm-up rounds.
    auto = rc.bench.warmup == "auto"
    warm = 0 if getattr(benchmark, "disabled", False) or auto else rc.bench.warmup
    point = Point(rc, plan, backend, new_record(rc, plan, job_name="harness_bench", overrides=overrides,
                                                config=cfg))
    calls = itertools.count()

    def setup() -> tuple[tuple, dict]:
        # Cheap on purpose (it runs outside the timer): only the next call's index. generate()
        # clears the KV cache itself, so nothing of the previous repetition survives.
        return (), {"i": next(calls)}

    def target(i: int) -> None:
        # Same seeds as `harness run`: warm-up i -> seed + 1e6 + i, repetition r -> seed + r.
        if i < warm:
            point.warmup(i)
        else:
            point.repetition(i - warm)

    try:
        try:
            point.start(lock)
            if auto and not getattr(benchmark, "disabled", False):
                point.warm_up("auto")
            benchmark.pedantic(target, setup=setup, rounds=rc.bench.repetitions, warmup_rounds=warm,
                               iterations=1)
            point.finish()
        except Exception as e:  # the engine worker died or hung, or the engine refused: this benchmark fails
            point.fail(e)
    finally:
        rec = point.close()
    if rec.status != "ok":
        err = rec.error
        pytest.fail(f"{err.type} during {err.phase}: {err.message}", pytrace=False)
    agg = rec.aggregates
    effective = dict(rec.effective)
    warnings = list(rec.warnings)
    effective.pop("warnings", None)
    reps = [x.metrics for x in rec.repetitions]
    info = {
        **{m: (agg.get(m) or {}).get("mean") for m in _MEANS},
        "decode_tps_weighted": agg["decode_tps_weighted"],
        "n_gen_tokens": sum(m.n_gen_tokens for m in reps) / len(reps),
        "n_prompt_tokens": rec.prompt.get("n_tokens") if rec.prompt else None,
        "n_repetitions": len(reps),
        "samples": {m: [getattr(x, m) for x in reps] for m in SAMPLES},
        "energy_per_token_j": ((rec.telemetry.get("phases") or {}).get("decode") or {}).get("energy_per_token_j"),
        "load_ms": rec.load.get("load_ms"),
        "load_reused": rec.load.get("reused"),
        "timing_path": rec.timing_path,
        "effective": effective,
        "warnings": warnings,
        "overrides": list(overrides),
        "device_lock": lock,
        "record": rec.to_dict(),  # run.json's content: the same fields `harness run` records
    }
    benchmark.extra_info.update(info)
    return info


@pytest.fixture(scope="session")
def harness_engine() -> Any:
    """The engine the session's harness_bench calls share: a supervised worker (a crash fails one
    benchmark, not the session; the loaded model is kept between benchmarks), stopped at the end.
    HARNESS_ISOLATION=inprocess runs it in the pytest process instead."""
    from .measure import backend_for, env_isolated

    backend = backend_for(None, isolated=env_isolated())
    yield backend
    backend.close()


@pytest.fixture
def harness_bench(benchmark: Any, harness_engine: Any) -> Callable[..., dict]:
    """`harness_bench(*overrides)` runs one config point under `benchmark` (pedantic: rounds =
    bench.repetitions, warmup_rounds = bench.warmup) and returns what it put in extra_info:
    decode_tps / prefill_tps (tokens/s, means), decode_tps_weighted (tokens/s), ttft_ms / e2e_ms
    (ms, means), decode_engine_ms / sampling_ms (ms, means), n_gen_tokens (mean per repetition),
    energy_per_token_j (J, when telemetry measured energy), load_ms, effective config, overrides,
    and `record`: the run record `harness run` would write for the point. Once per test
    (pytest-benchmark's fixture allows one run). A bad config fails the test with its one-line
    message; no llama_cpp skips it; an engine crash or timeout fails it."""

    def run(*overrides: str) -> dict:
        return _run(benchmark, harness_engine, tuple(overrides))

    return run


def _timing_path() -> tuple[str, str | None]:
    """("native" | "python", why not native): harness.measure's choice for bench.timing=auto."""
    try:
        from .engine import native

        st = native.status()
    except Exception as e:  # a library that does not load
        return "python", f"native timing unavailable ({type(e).__name__}: {e})"
    return ("native", None) if st.usable else ("python", str(st.reason))


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


# --- regression gate: --harness-fail-on ---------------------------------------------------------

_GATE = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "harness regression gate")
    group.addoption(
        "--harness-fail-on", action="append", default=[], metavar="METRIC:+-N%", dest="harness_fail_on",
        help="with --benchmark-compare[=NUM]: fail the session when a harness_bench benchmark's METRIC "
             "changed significantly (Fieller 95%% CI of B/A excludes 1, Welch p < 0.05) AND by at least "
             "N%% in the bad direction against the compared run, e.g. decode_tps:-5%% or ttft_ms:+10%%. "
             "Repeatable.")


def pytest_configure(config: pytest.Config) -> None:
    specs = config.getoption("harness_fail_on", None) or []
    if not specs:
        return
    from .analysis.compare import parse_check

    try:
        checks = [parse_check(s) for s in specs]
    except ValueError as e:
        raise pytest.UsageError(f"--harness-fail-on: {e}") from None
    if not config.pluginmanager.hasplugin("benchmark"):
        raise pytest.UsageError("--harness-fail-on needs pytest-benchmark (not installed or disabled)")
    if not config.getoption("benchmark_compare", None):
        raise pytest.UsageError("--harness-fail-on needs --benchmark-compare[=NUM]: the saved run to compare with")
    config.stash[_GATE] = {"checks": checks, "lines": [], "failed": False}


def _bench_frame(bench: dict, source: str):
    """The tidy table of one saved (or just measured) pytest-benchmark benchmark, read as
    `harness compare` reads a pytest-benchmark JSON file."""
    from .analysis import foreign, table
    from .analysis.normalise import normalise

    rows, _ = foreign.pytest_benchmark_rows({"machine_info": {}, "benchmarks": [bench]}, source)
    rows, _ = normalise(rows, source)
    return table.frame(rows)


def gate(checks: list, current: list[dict], baselines: dict[str, dict[str, dict]]) -> tuple[list[str], bool]:
    """(one line per benchmark, failed) of the regression checks over the harness_bench benchmarks
    of this session (`current`: as pytest-benchmark saves them) against `baselines` (pytest-benchmark's
    compared_mapping: saved file -> fullname -> saved benchmark; the last file holding a benchmark
    is its baseline). Fails on a regression, and when benchmarks ran but none could be compared."""
    from .analysis.compare import compare, regressions

    metrics = tuple(dict.fromkeys(c.metric for c in checks))
    lines: list[str] = []
    failed, compared = False, 0
    for bench in current:
        name = bench.get("fullname") or bench.get("name")
        found = [(path, m[name]) for path, m in baselines.items() if name in m]
        if not found:
            lines.append(f"NOT CHECKED {name}: not in the compared run")
            continue
        path, saved = found[-1]
        if not isinstance((saved.get("extra_info") or {}).get("samples"), dict):
            lines.append(f"NOT CHECKED {name}: the compared run ({path}) has no per-round samples "
                         "(saved before harness_bench kept them)")
            continue
        res = compare(_bench_frame(saved, str(path)), _bench_frame(bench, "current run"), metrics=metrics)
        rows = {r["metric"]: r for r in res.rows}
        missing = [m for m in metrics if m not in rows]
        fails = regressions(res.rows, checks)
        if missing and not rows:
            lines.append(f"NOT CHECKED {name}: no {', '.join(missing)} on both sides")
            continue
        compared += 1
        if fails:
            failed = True
            lines.append(f"FAILED {name}: " + "; ".join(fails))
            continue
        parts = [f"{m} x{r['ratio']:.3f} [{r['ratio_ci95_low']:.3f}, {r['ratio_ci95_high']:.3f}] "
                 f"p={r['p_value']:.2g} {'significant' if r['significant'] else 'not significant'}"
                 for m, r in rows.items()]
        parts += [f"{m}: no data on both sides" for m in missing]
        lines.append(f"passed {name}: " + "; ".join(parts))
    if current and not compared:
        failed = True
        lines.append("FAILED: no harness_bench benchmark could be compared with the saved run; "
                     "a gate does not pass on no data")
    return lines, failed


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Run the --harness-fail-on checks (pytest-benchmark has finished its session by now) and
    turn a regression into a failed session."""
    state = session.config.stash.get(_GATE, None)
    bs = getattr(session.config, "_benchmarksession", None)
    if state is None or bs is None:
        return
    current = [b.as_dict(include_data=False) for b in bs.benchmarks
               if b and isinstance(b.extra_info.get("samples"), dict)]
    if not current:
        state["lines"] = ["no harness_bench benchmark ran: nothing checked"]
        return
    state["lines"], state["failed"] = gate(state["checks"], current, bs.compared_mapping or {})
    if state["failed"] and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's summary, which raises on its own regressions
def pytest_terminal_summary(terminalreporter: Any) -> None:
    state = terminalreporter.config.stash.get(_GATE, None)
    if state is None:
        return
    checks = " ".join(f"--harness-fail-on {c}" for c in state["checks"])
    terminalreporter.write_sep("-", f"harness regression gate ({checks})")
    for line in state["lines"]:
        terminalreporter.write_line(line, red=line.startswith("FAILED"), green=line.startswith("passed"))
