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


# --- the gate: significance needs the CI to exclude 1; the threshold is inclusive ---------------

def _two(a: list[float], b: list[float]):
    mk = lambda vals, s: table.frame([sample(run_id=s, rep=i, decode_tps=v) for i, v in enumerate(vals)])
    return mk(a, "a"), mk(b, "b")


def test_welch_p_below_alpha_is_not_enough_when_the_95pct_ci_includes_1():
    # t = 1.5 on 8 df: p ~ 0.17, under alpha = 0.2, but the 95% Fieller CI of B/A contains 1.
    a, b = _two([100, 104, 96, 102, 98], [97, 101, 93, 99, 95])
    (r,) = compare(a, b, metrics=("decode_tps",), alpha=0.2).rows
    assert r["p_value"] < 0.2 and r["ratio_ci95_low"] < 1 < r["ratio_ci95_high"]
    assert not r["significant"] and r["direction"] == "same"
    assert "does not exclude 1" in r["note"]
    assert regressions([r], ["decode_tps:-1%"]) == []


def test_significant_row_has_a_ci_that_excludes_1():
    a, b = _two([100, 101, 99, 100, 100], [90, 91, 89, 90, 90])
    (r,) = compare(a, b, metrics=("decode_tps",)).rows
    assert r["significant"] and r["ratio_ci95_high"] < 1


def test_threshold_is_inclusive():
    # 0.9 - 1 and 1.2 - 1 fall just short of -0.1 and 0.2 in floating point: still "at least".
    row = {"metric": "decode_tps", "significant": True, "ratio": 0.9, "mean_a": 100.0, "mean_b": 90.0,
           "ratio_ci95_low": 0.89, "ratio_ci95_high": 0.91, "p_value": 1e-6, "label": "x", "group_b": "g"}
    assert parse_check("decode_tps:-10%").fails(row)  # exactly 10% lower: at least the threshold
    assert parse_check("decode_tps:-10.1%").fails(row) is None
    assert parse_check("ttft_ms:+20%").fails({**row, "metric": "ttft_ms", "ratio": 1.2, "mean_b": 120.0})
    assert parse_check("decode_tps:-10%").fails({**row, "significant": False}) is None


# --- saved pytest-benchmark runs of harness_bench: per-round samples, matched by name -----------

def _pb_doc(decode: list[float], name: str = "test_short_chat_decode64", **extra) -> dict:
    n = len(decode)
    return {"machine_info": {"node": "h", "cpu": {"brand_raw": "EPYC"}}, "datetime": "2026-01-01T00:00:00",
            "benchmarks": [{"name": name, "fullname": f"benchmarks/t.py::{name}", "params": None,
                            "stats": {"mean": 1.5, "rounds": n},
                            "extra_info": {"decode_tps": sum(decode) / n, "ttft_ms": 50.0,
                                           "samples": {"decode_tps": decode, "ttft_ms": [50.0] * n,
                                                       "prefill_tps": [400.0] * n, "e2e_ms": [1500.0] * n},
                                           **extra}}]}


def test_pytest_benchmark_samples_are_one_row_per_round(tmp_path):
    from harness.analysis.ingest import ingest

    p = tmp_path / "0001_run.json"
    p.write_text(__import__("json").dumps(_pb_doc([40.0, 42.0, 44.0])))
    df = ingest([p]).frame
    assert list(df["decode_tps"]) == [40.0, 42.0, 44.0]  # the rounds, not the mean three times
    assert list(df["rep"]) == [0, 1, 2] and set(df["job"]) == {"test_short_chat_decode64"}


def _cli_compare(tmp_path, a_doc: dict, b_doc: dict, *args: str) -> int:
    import json

    from harness.analysis_cli import cmd_compare

    (tmp_path / "a.json").write_text(json.dumps(a_doc))
    (tmp_path / "b.json").write_text(json.dumps(b_doc))
    return cmd_compare([str(tmp_path / "a.json"), str(tmp_path / "b.json"), *args])


def test_compare_cli_on_two_saved_pytest_benchmark_runs(tmp_path, capsys):
    tight = [100.0, 101.0, 99.0, 100.5, 99.5]
    assert _cli_compare(tmp_path, _pb_doc(tight), _pb_doc(tight), "--fail-on", "decode_tps:-5%") == 0
    assert "no regression beyond the thresholds" in capsys.readouterr().out
    # B 30% slower, tight rounds: significant and beyond -5%.
    assert _cli_compare(tmp_path, _pb_doc(tight), _pb_doc([x * 0.7 for x in tight]),
                        "--fail-on", "decode_tps:-5%") == 1
    out = capsys.readouterr().out
    assert "REGRESSION: decode_tps 30.0% lower in B than A" in out and "test_short_chat_decode64" in out
    # 30% slower on the mean, but rounds so noisy that it is not significant: no alarm.
    noisy_a, noisy_b = [60.0, 140.0, 70.0, 130.0, 100.0], [30.0, 110.0, 40.0, 100.0, 70.0]
    assert _cli_compare(tmp_path, _pb_doc(noisy_a), _pb_doc(noisy_b), "--fail-on", "decode_tps:-5%") == 0


def test_saved_benchmarks_are_matched_by_name_not_parameters(tmp_path, capsys):
    import json

    a = _pb_doc([100.0, 101.0, 99.0])
    a["benchmarks"].append(_pb_doc([10.0, 10.1, 9.9], name="test_other")["benchmarks"][0])
    b = _pb_doc([100.0, 101.0, 99.0])
    b["benchmarks"].append(_pb_doc([7.0, 7.1, 6.9], name="test_other")["benchmarks"][0])
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    from harness.analysis.ingest import ingest

    res = compare(ingest([tmp_path / "a.json"]).frame, ingest([tmp_path / "b.json"]).frame, metrics=("decode_tps",))
    by = {r["label"]: r for r in res.rows}
    assert set(by) == {"test_short_chat_decode64", "test_other"}  # never pooled into one configuration
    assert by["test_other"]["ratio"] == pytest.approx(0.7) and by["test_other"]["significant"]
    assert by["test_short_chat_decode64"]["ratio"] == pytest.approx(1.0)


def test_sides_whose_weights_were_mapped_differently_are_noted():
    """A's model file was mostly huge-page mapped, B's mostly not: the row says so (it moves CPU
    decode); like shares, or shares not known, add no note."""
    r = row(compare(side(1, weights_huge_share=0.99), side(2, decode_scale=0.9, weights_huge_share=0.25)), "decode_tps")
    assert "weights mapped differently (huge-page share A 99%, B 25%)" in r["note"]
    assert r["note"].endswith("significant")
    alike = row(compare(side(1, weights_huge_share=0.99), side(2, weights_huge_share=0.9)), "decode_tps")
    assert "mapped differently" not in alike["note"]
    unknown = row(compare(side(1), side(2, weights_huge_share=0.25)), "decode_tps")
    assert "mapped differently" not in unknown["note"]
