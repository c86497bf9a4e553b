"""How numbers reach people: integer parameters, unambiguous intervals, missing CIs, plurals,
confidence intervals that respect a quantity's support, and no numeric warning on extreme data."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from harness.analysis import table
from harness.analysis.compare import compare, parse_check
from harness.analysis.stats import configurations, non_negative
from harness.report import figures
from harness.report.format import ci, estimate, interval, num, param, plural

GROUP = {"hardware": "h", "model": "m", "engine": "e", "status": "ok"}


def sample(**kw) -> dict:
    return table.empty_row() | GROUP | kw


def test_parameters_print_as_integers_and_numbers_as_the_report_does():
    assert param(256.0) == "256" and param(np.float64(4096.0)) == "4096" and param(0.2) == "0.2"
    assert param(1.15) == "1.15" and param("all") == "all" and param(float("nan")) == "-"
    assert num(256.0) == "256" and num(1234.5) == "1,234" and num(None) == "-" and num(0.00123) == "0.00123"


def test_intervals_are_unambiguous_and_missing_ones_say_so():
    assert interval(-2.705, 4.177, ".3f") == "[-2.705, 4.177]"
    assert interval(float("nan"), float("nan")) == "n/a" and interval(None, 1.0) == "n/a"
    assert interval(1.0, float("inf")) == "n/a"
    assert estimate(1.0, float("nan"), float("nan"), ".3f") == "1.000 [n/a]"
    assert ci({"ttft_ms_mean": 102.5, "ttft_ms_ci95_low": 0.0, "ttft_ms_ci95_high": 269.3}, "ttft_ms") == "102.5 [0, 269.3]"
    assert "nan" not in ci({"ttft_ms_mean": 100.0, "ttft_ms_ci95_low": float("nan")}, "ttft_ms")


def test_plurals():
    assert plural(1, "configuration") == "1 configuration"
    assert plural(2, "configuration") == "2 configurations" and plural(0, "sample") == "0 samples"


def test_compare_labels_and_messages_print_integers_and_intervals():
    rows = [sample(run_id=f"{s}{n}", rep=i, n_ctx=float(n), decode_tps=(100.0 if s == "a" else 80.0) + i)
            for s in "ab" for n in (256, 512) for i in range(5)]
    df = table.frame(rows)
    res = compare(df[df["run_id"].str.startswith("a")], df[df["run_id"].str.startswith("b")])
    assert {r["label"] for r in res} == {"n_ctx=256", "n_ctx=512"}
    msg = parse_check("decode_tps:-5%").fails(next(r for r in res if r["metric"] == "decode_tps"))
    assert msg is not None and "95% CI [0." in msg and "n_ctx=256" in msg


def test_non_negative_is_decided_by_the_registry():
    assert non_negative("ttft_ms") and non_negative("decode_tps_mean") and non_negative("gpu_util_pct")
    assert non_negative("vram_used_mib") and non_negative("some_new_ms")
    assert not non_negative("temperature")


def test_ci_of_a_positive_quantity_never_goes_below_zero():
    # Three very spread TTFTs: the t-interval is about (-129, 334); a time cannot be negative.
    rows = [sample(run_id="r", rep=i, ttft_ms=t, decode_tps=d) for i, (t, d) in enumerate([(40.0, 1.0), (60.0, 2.0), (210.0, 90.0)])]
    c = configurations(table.frame(rows)).iloc[0]
    assert c["ttft_ms_ci95_low"] == 0.0 and c["ttft_ms_ci95_high"] > 300
    assert c["decode_tps_ci95_low"] == 0.0
    # A tight one keeps its t-interval.
    rows = [sample(run_id="r", rep=i, ttft_ms=100.0 + i) for i in range(5)]
    c = configurations(table.frame(rows)).iloc[0]
    assert 95 < c["ttft_ms_ci95_low"] < 102 < c["ttft_ms_ci95_high"] < 105


def test_compare_ratio_ci_of_a_positive_quantity_is_not_negative():
    a = [sample(run_id="a", rep=i, ttft_ms=t) for i, t in enumerate([1.0, 100.0])]
    b = [sample(run_id="b", rep=i, ttft_ms=t) for i, t in enumerate([1.0, 300.0])]
    r = next(x for x in compare(table.frame(a), table.frame(b)) if x["metric"] == "ttft_ms")
    assert not (r["ratio_ci95_low"] < 0)


def _extreme():
    rows = [sample(run_id="a", rep=i, n_ctx=512.0, decode_tps=v, ttft_ms=t, energy_per_token_j=0.0)
            for i, (v, t) in enumerate([(1e308, 1e-300), (1.7e308, 1e300), (1e307, 0.0)])]
    rows += [sample(run_id="b", rep=i, n_ctx=1024.0, decode_tps=0.0, ttft_ms=0.0) for i in range(3)]
    rows += [sample(run_id="c", rep=0, n_ctx=2048.0, decode_tps=5.0, ttft_ms=float("nan"))]
    rows += [sample(run_id="d", rep=i, n_ctx=4096.0, decode_tps=float("nan"), ttft_ms=float("nan")) for i in range(2)]
    return table.frame(rows)


def test_extreme_values_give_no_numeric_warning(tmp_path):
    df = _extreme()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = configurations(df)
        for method in ("fieller", "bootstrap"):
            assert len(compare(df, df, ci=method).rows) > 0
        figures.param_effect(df, "n_ctx", ("decode_tps", "ttft_ms"), tmp_path / "by.png")
        figures.distribution(df, "decode_tps", ["n_ctx"], tmp_path / "dist.png")
    big = c[c["n_ctx"] == 512.0].iloc[0]
    assert big["decode_tps_mean"] == pytest.approx(1e308 / 3 + 1.7e308 / 3 + 1e307 / 3)  # not inf: no overflow
    assert big["decode_tps_std"] > 0 and math.isfinite(big["decode_tps_std"])
    zero = c[c["n_ctx"] == 1024.0].iloc[0]
    assert zero["decode_tps_mean"] == 0.0 and math.isnan(zero["decode_tps_cv"])


def test_runs_whose_weights_were_mapped_differently_are_a_named_risk():
    """Two runs of one model whose file sat in memory with different huge-page shares: the report
    names it (it moves CPU decode by tens of percent); like shares, or another model's, do not."""
    from types import SimpleNamespace

    import pandas as pd

    from harness.report.findings import risks

    def an(shares, models=None):
        models = models or ["m"] * len(shares)
        rows = [{"run_id": f"r{i}", "status": "ok", "model": mo, "weights_huge_share": sh, "throttled": None,
                 "fan_reported": None, "gpu_shared": None, "gpu_util_pct": None}
                for i, (sh, mo) in enumerate(zip(shares, models)) for _ in range(3)]
        df = pd.DataFrame(rows)
        return SimpleNamespace(samples=df, ok=df, configs=pd.DataFrame(), ingest=SimpleNamespace(aggregates=None))

    named = [r for r in risks(an([0.25, 0.99])) if r[0] == "Model file mapped differently"]
    assert len(named) == 1 and "m: 25% to 99%" in named[0][1] and "use_mmap=false" in named[0][2]
    assert not [r for r in risks(an([0.9, 0.99])) if r[0] == "Model file mapped differently"]
    assert not [r for r in risks(an([0.1, 0.99], ["a", "b"])) if r[0] == "Model file mapped differently"]
    assert not [r for r in risks(an([None, None])) if r[0] == "Model file mapped differently"]
