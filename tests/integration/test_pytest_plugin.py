"""The pytest plugin end to end: a benchmark written with `harness_bench` runs in a pytest
subprocess (so the installed `pytest11` entry point loads, as it does for users), on the real
default model, and its pytest-benchmark JSON carries the harness's metrics and machine info."""

from __future__ import annotations

import json
import os
import re

import pytest

pytest_plugins = ["pytester"]

pytestmark = pytest.mark.slow

# pytester points HOME at its temporary directory; the default model file and the harness's sha256
# cache live under the real HOME, so the subprocess gets it back (or it would re-assemble 250 MB).
_HOME = os.environ.get("HOME")

TINY = ("workload.max_tokens=8", "bench.repetitions=3", "bench.warmup=1", "runtime.n_ctx=256")

BENCH_FILE = f"""
def test_tiny(harness_bench):
    info = harness_bench({", ".join(repr(o) for o in TINY)})
    assert info["n_gen_tokens"] == 8
"""


@pytest.fixture
def bench_dir(pytester, monkeypatch, model_path):
    if _HOME:
        monkeypatch.setenv("HOME", _HOME)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    # Device locks of this test session only (as tests/conftest.run_harness does): a harness job of
    # another session on the host must not make these benchmarks fail with DeviceBusy.
    monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", os.environ.get("HARNESS_DEVICE_LOCK_SCOPE") or f"pytest-{os.getpid()}")
    pytester.makepyfile(test_tiny=BENCH_FILE)
    return pytester


def test_json_has_harness_metrics_and_machine_info(bench_dir):
    result = bench_dir.runpytest_subprocess("--benchmark-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    doc = json.loads((bench_dir.path / "out.json").read_text())
    (bench,) = doc["benchmarks"]
    assert bench["stats"]["rounds"] == 3
    assert len(bench["stats"]["data"]) == 3 and min(bench["stats"]["data"]) > 0
    extra = bench["extra_info"]
    assert extra["decode_tps"] > 0 and extra["decode_tps_weighted"] > 0
    assert extra["ttft_ms"] > 0 and extra["e2e_ms"] > extra["ttft_ms"]
    assert extra["n_gen_tokens"] == 8
    assert "energy_per_token_j" in extra and extra["energy_per_token_j"] is None
    assert extra["overrides"] == list(TINY)
    eff = extra["effective"]
    assert isinstance(eff["n_gpu_layers_effective"], int)
    assert eff["n_ctx_effective"] == 256 and "warnings" not in eff
    # One device, one job: the benchmark held the device it computed on (the CPU here).
    assert extra["device_lock"]["devices"] and extra["device_lock"]["shared_with"] == {}
    if eff["n_gpu_layers_effective"] == 0 and extra["device_lock"]["supported"]:
        assert extra["device_lock"]["held"] == ["cpu"]
    # The timed round is one generate call: its wall time covers the harness's own e2e (ms).
    assert bench["stats"]["mean"] * 1e3 >= extra["e2e_ms"]
    h = doc["machine_info"]["harness"]
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", h["engine"]["llama_cpp_python"])
    assert isinstance(h["engine"]["gpu_offload_supported"], bool)
    assert re.fullmatch(r"[0-9a-f]{64}", h["model_sha256"])
    assert h["timing_path"] in ("python", "native")
    assert h["gpu"] is None or h["gpu"]["names"]


def test_bad_override_fails_with_one_line(bench_dir):
    bench_dir.makepyfile(test_tiny="""
def test_bad(harness_bench):
    harness_bench("runtime.n_ctx=-5")
""")
    result = bench_dir.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "runtime.n_ctx: must be a positive integer, got -5" in out
    assert "Traceback" not in out and "llama_cpp" not in out


def test_autosave_then_compare_fail_threshold(bench_dir):
    saved = bench_dir.runpytest_subprocess("--benchmark-autosave", "-p", "no:cacheprovider")
    saved.assert_outcomes(passed=1)
    assert list(bench_dir.path.glob(".benchmarks/*/0001_*.json"))
    # The threshold is the plumbing under test, not this machine's speed: a shared host can slow a
    # tiny generation tenfold between two runs, so only a thousandfold change counts here.
    compared = bench_dir.runpytest_subprocess("--benchmark-compare", "--benchmark-compare-fail=mean:100000%",
                                              "-p", "no:cacheprovider")
    out = compared.stdout.str() + compared.stderr.str()
    assert compared.ret == 0, out
    # pytest-benchmark reports the comparison on stderr and its table (with the saved run) on stdout.
    compared.stderr.fnmatch_lines(["*Comparing against benchmarks from*0001_*"])
    table = compared.stdout.str()  # rows sorted by time: either may come first
    assert "test_tiny (0001_" in table and "test_tiny (NOW)" in table
    assert "Performance has regressed" not in out


def test_skips_without_llama_cpp(bench_dir):
    # `python -m pytest` puts the test directory first on sys.path: this module shadows llama_cpp.
    bench_dir.makepyfile(llama_cpp="raise ImportError('simulated: llama_cpp is not installed')",
                         test_plain="def test_plain(benchmark):\n    benchmark(sum, [1, 2])\n")
    result = bench_dir.runpytest_subprocess("-rs", "--benchmark-json=out.json", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1, passed=1)
    # machine_info is still written (a plain benchmark ran), without the engine block.
    result.stdout.fnmatch_lines(["*harness_bench needs llama-cpp-python*simulated: llama_cpp is not installed*"])
    h = json.loads((bench_dir.path / "out.json").read_text())["machine_info"]["harness"]
    assert h["engine"] is None and re.fullmatch(r"[0-9a-f]{64}", h["model_sha256"])


def test_a_hung_engine_fails_one_benchmark_and_the_session_goes_on(bench_dir, monkeypatch):
    """The first generate request never gets an answer (the worker stops itself): that benchmark
    fails with the timeout, a fresh worker serves the next one."""
    monkeypatch.setenv("HARNESS_WORKER_PAUSE", "generate:1")
    bench_dir.makepyfile(test_tiny=f"""
def test_first(harness_bench):
    harness_bench({", ".join(repr(o) for o in TINY)}, "bench.point_timeout_s=2")


def test_second(harness_bench):
    info = harness_bench({", ".join(repr(o) for o in TINY)})
    assert info["n_gen_tokens"] == 8 and info["record"]["status"] == "ok"
""")
    result = bench_dir.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "WorkerTimeout during warmup: timeout: no progress for 2 s during generate" in out
    assert "Traceback" not in out


# --- --harness-fail-on: the noise-aware gate against the run --benchmark-compare loads -----------

FAKE_FILE = """
import os

def test_fake(benchmark):
    # harness_bench's extra_info layout, with per-round values from the environment: the gate
    # under test reads only saved files, so the numbers need no model.
    vals = [float(x) for x in os.environ["FAKE_DECODE"].split(",")]
    benchmark.pedantic(lambda: None, rounds=len(vals))
    benchmark.extra_info["samples"] = {"decode_tps": vals, "ttft_ms": [50.0] * len(vals),
                                       "prefill_tps": [400.0] * len(vals), "e2e_ms": [1000.0] * len(vals)}
"""
TIGHT = "100,101,99,100.5,99.5"


def _saved(p) -> "Path":
    (f,) = p.path.glob(".benchmarks/*/0001_*.json")
    return f


def test_harness_fail_on_passes_identical_and_fails_a_significant_drop(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makepyfile(test_fake=FAKE_FILE)
    monkeypatch.setenv("FAKE_DECODE", TIGHT)
    pytester.runpytest_subprocess("--benchmark-autosave", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    gate = ("--benchmark-compare=0001", "--harness-fail-on", "decode_tps:-5%", "-p", "no:cacheprovider")
    same = pytester.runpytest_subprocess(*gate)
    assert same.ret == 0, same.stdout.str()
    same.stdout.fnmatch_lines(["*harness regression gate (--harness-fail-on decode_tps:-5%)*",
                               "passed *test_fake: decode_tps x1.000*not significant"])
    # 30% slower, tight rounds: a significant drop beyond -5% fails the session, in one line.
    monkeypatch.setenv("FAKE_DECODE", "70,70.7,69.3,70.35,69.65")
    slow = pytester.runpytest_subprocess(*gate)
    assert slow.ret == 1, slow.stdout.str()
    slow.stdout.fnmatch_lines(["FAILED *test_fake: decode_tps 30.0% lower in B than A*check decode_tps:-5% allows -5%"])
    # Equally 30% slower on the mean, but rounds too noisy for that to be significant: passes.
    monkeypatch.setenv("FAKE_DECODE", "40,100,50,90,70")
    noisy = pytester.runpytest_subprocess(*gate)
    assert noisy.ret == 0, noisy.stdout.str()
    noisy.stdout.fnmatch_lines(["passed *test_fake: decode_tps x0.700*not significant"])


def test_harness_fail_on_needs_benchmark_compare_and_a_valid_check(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makepyfile(test_fake=FAKE_FILE)
    r = pytester.runpytest_subprocess("--harness-fail-on", "decode_tps:-5%", "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*--harness-fail-on needs --benchmark-compare*"])
    r = pytester.runpytest_subprocess("--benchmark-compare", "--harness-fail-on", "decode_tps:+5%",
                                      "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*higher decode_tps is better*use decode_tps:-5%*"])


def test_harness_fail_on_with_a_baseline_without_samples_does_not_pass(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makepyfile(test_fake=FAKE_FILE)
    monkeypatch.setenv("FAKE_DECODE", TIGHT)
    pytester.runpytest_subprocess("--benchmark-autosave", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    f = _saved(pytester)
    doc = json.loads(f.read_text())
    del doc["benchmarks"][0]["extra_info"]["samples"]
    f.write_text(json.dumps(doc))
    r = pytester.runpytest_subprocess("--benchmark-compare", "--harness-fail-on", "decode_tps:-5%",
                                      "-p", "no:cacheprovider")
    assert r.ret == 1
    r.stdout.fnmatch_lines(["NOT CHECKED *test_fake: the compared run*has no per-round samples*",
                            "FAILED: no harness_bench benchmark could be compared*"])


def test_harness_bench_samples_and_a_doctored_faster_baseline(bench_dir):
    saved = bench_dir.runpytest_subprocess("--benchmark-autosave", "-p", "no:cacheprovider")
    saved.assert_outcomes(passed=1)
    f = _saved(bench_dir)
    doc = json.loads(f.read_text())
    extra = doc["benchmarks"][0]["extra_info"]
    samples = extra["samples"]
    assert set(samples) == {"decode_tps", "prefill_tps", "ttft_ms", "e2e_ms"}
    assert len(samples["decode_tps"]) == 3 and all(x > 0 for x in samples["decode_tps"])
    reps = extra["record"]["repetitions"]
    assert samples["decode_tps"] == [r["metrics"]["decode_tps"] if "metrics" in r else r["decode_tps"] for r in reps]
    # A baseline far faster than any run of this machine, with tight rounds: the current run is a
    # significant drop. (Tenfold, because a shared host can slow a tiny generation severalfold
    # between two sessions: the plumbing is under test, not this machine's speed.)
    top = max(samples["decode_tps"]) * 10
    samples["decode_tps"] = [top, top * 1.001, top * 0.999]
    f.write_text(json.dumps(doc))
    r = bench_dir.runpytest_subprocess("--benchmark-compare", "--harness-fail-on", "decode_tps:-5%",
                                       "-p", "no:cacheprovider")
    assert r.ret == 1, r.stdout.str()
    r.stdout.fnmatch_lines(["FAILED *test_tiny: decode_tps *% lower in B than A*"])
