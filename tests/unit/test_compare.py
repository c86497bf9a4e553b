"""Tests for harness.analysis.compare: A/B comparison of matched configurations, ratio CIs, and
pytest-benchmark-style regression checks."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis import table
from harness.analysis.compare import CompareResult, Check, compare, parse_check, regressions

GROUP = {"hardware": "EPYC | H100", "model": "gemma3-270m", "engine": "llama-cpp-python 0.3 gpu"}


def sample(**kw) -> dict:
    return table.empty_row() | GROUP | {"status": "ok"} | kw


def side(seed: int, decode_scale: float = 1.0, ttft_scale: float = 1.0, n_ctx=(512, 2048), **extra):
    rng = np.random.default_rng(seed)
    rows = []
    for n in n_ctx:
        base = 100.0 if n == 512 else 80.0
        rows += [sample(run_id=f"{seed}-{n}-{i // 5}", rep=i % 5, n_ctx=n, temperature=0.7,
                        decode_tps=rng.normal(base, 0.02 * base) * decode_scale,
                        ttft_ms=rng.normal(40.0, 0.8) * ttft_scale, **extra) for i in range(10)]
    return table.frame(rows)


def row(result, metric, n_ctx=512.0) -> dict:
    hits = [r for r in result if r["metric"] == metric and r["config"]["n_ctx"] == n_ctx]
    assert len(hits) == 1
    return hits[0]


@pytest.fixture(scope="module")
def slowdown() -> CompareResult:
    return compare(side(1), side(2, decode_scale=0.9))


def test_planted_slowdown_is_found(slowdown):
    r = row(slowdown, "decode_tps")
    assert r["ratio"] == pytest.approx(0.9, abs=0.02)
    assert r["ratio_ci95_high"] < 1.0 and r["ratio_ci95_low"] < r["ratio"] < r["ratio_ci95_high"]
    assert r["ci_method"] == "fieller"
    assert r["p_value"] < 1e-6 and r["significant"] is True
    assert r["direction"] == "worse" and r["n_a"] == 10 and r["n_b"] == 10
    ttft = row(slowdown, "ttft_ms")
    assert ttft["significant"] is False and ttft["direction"] == "same"
    assert ttft["note"].endswith("not significant")
    assert slowdown.params == ("n_ctx",)


def test_checks_on_planted_slowdown(slowdown):
    r = row(slowdown, "decode_tps")
    msg = parse_check("decode_tps:-5%").fails(r)
    assert msg is not None and "decode_tps" in msg and "lower" in msg and "decode_tps:-5%" in msg
    assert "\n" not in msg
    assert parse_check("decode_tps:-15%").fails(r) is None
    assert parse_check("ttft_ms:+10%").fails(r) is None  # other metric
    failures = regressions(slowdown, ["decode_tps:-5%", parse_check("ttft_ms:+10%")])
    assert len(failures) == 2  # both n_ctx configurations slowed down by 10%
    assert regressions(slowdown, ["decode_tps:-15%"]) == []


def test_bootstrap_ci_agrees_with_fieller():
    a, b = side(1), side(2, decode_scale=0.9)
    boot = row(compare(a, b, ci="bootstrap"), "decode_tps")
    fieller = row(compare(a, b), "decode_tps")
    assert boot["ci_method"] == "bootstrap" and boot["ratio_ci95_high"] < 1.0
    assert boot["ratio_ci95_low"] == pytest.approx(fieller["ratio_ci95_low"], abs=0.01)
    assert boot["ratio_ci95_high"] == pytest.approx(fieller["ratio_ci95_high"], abs=0.01)
    assert row(compare(a, b, ci="bootstrap"), "decode_tps")["ratio_ci95_low"] == boot["ratio_ci95_low"]


def test_ttft_regression_check():
    res = compare(side(1), side(2, ttft_scale=1.2))
    r = row(res, "ttft_ms")
    assert r["significant"] is True and r["direction"] == "worse"
    assert parse_check("ttft_ms:+10%").fails(r) is not None
    assert parse_check("ttft_ms:+25%").fails(r) is None


def test_identical_runs_are_not_significant():
    a = side(3)
    res = compare(a, a.copy())
    assert len(res) == 4  # 2 configurations x 2 metrics with data
    assert all(r["ratio"] == pytest.approx(1.0) and r["significant"] is False for r in res)
    assert all(r["direction"] == "same" and "not significant" in r["note"] for r in res)
    assert regressions(res, ["decode_tps:-1%", "ttft_ms:+1%"]) == []
    assert res.unmatched_a == [] and res.unmatched_b == []


def test_holm_correction_removes_chance_findings_of_a_repeat():
    # Two independent repeats of the same thing: with 4 comparisons, two reach raw p < 0.05 by chance
    # (p 0.026 and 0.039, changes of 2.4% and 1.6%). Holm over the 4 removes both.
    raw = compare(side(5), side(6))
    assert sum(r["significant"] for r in raw) == 2
    assert all(r["p_holm"] >= r["p_value"] for r in raw)
    corrected = compare(side(5), side(6), correct=True)
    assert not any(r["significant"] for r in corrected)
    assert any("after Holm" in r["note"] for r in corrected)


def test_small_change_below_minimum_effect_is_not_significant():
    a = side(7)
    b = a.copy()
    b["decode_tps"] = b["decode_tps"] * 0.995 + 0.0  # a consistent 0.5% shift: real but too small
    r = row(compare(a, b), "decode_tps")
    assert r["significant"] is False


def test_unmatched_configurations_are_listed():
    res = compare(side(1, n_ctx=(512, 2048)), side(2, n_ctx=(512, 4096)))
    assert {r["config"]["n_ctx"] for r in res} == {512.0}
    assert [u["config"]["n_ctx"] for u in res.unmatched_a] == [2048.0]
    assert [u["config"]["n_ctx"] for u in res.unmatched_b] == [4096.0]
    assert res.unmatched_b[0]["n_samples"] == 10 and "label" in res.unmatched_b[0]


def test_different_hardware_is_noted():
    res = compare(side(1), side(2, decode_scale=0.9, hardware="EPYC | L4"))
    r = row(res, "decode_tps")
    assert "hardware differs" in r["note"]
    assert r["group_keys_a"]["hardware"] == "EPYC | H100" and r["group_keys_b"]["hardware"] == "EPYC | L4"


def test_failed_samples_are_not_averaged():
    a = side(1)
    b = table.frame(side(2).to_dict("records") + [
        sample(run_id="f", n_ctx=512, temperature=0.7, status="failed", error="oom", decode_tps=0.0)])
    r = row(compare(a, b), "decode_tps")
    assert r["n_b"] == 10 and r["n_failed_b"] == 1 and r["significant"] is False
    assert "failed samples" in r["note"]


@pytest.mark.parametrize("spec", ["decode_tps", "decode_tps:-5", "decode_tps:5%", "decode_tps:-x%",
                                  "nope:-5%", "decode_tps:+5%", "ttft_ms:-10%", "decode_tps:-100%", ""])
def test_bad_check_specs_raise_one_line_errors(spec):
    with pytest.raises(ValueError) as e:
        parse_check(spec)
    msg = str(e.value)
    assert "\n" not in msg and repr(spec) in msg
    assert "METRIC:" in msg or "use " in msg


def test_parse_check_accepts_both_signs():
    assert parse_check("decode_tps:-5%") == Check("decode_tps", "-", 0.05, "decode_tps:-5%")
    c = parse_check(" ttft_ms : +12.5% ")
    assert (c.metric, c.sign, c.limit) == ("ttft_ms", "+", pytest.approx(0.125))
