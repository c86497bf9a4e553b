"""Tests for harness.metrics: per-repetition metrics from synthetic ns timestamps, summaries, aggregates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from harness.metrics import AGGREGATED, RepMetrics, Stat, aggregate, rep_metrics, summarize

MS = 1_000_000  # ns per ms
T0 = 5_000_000_000_000  # an arbitrary perf_counter_ns origin: only differences matter


def reps_from_ms(rep: int, token_ms, *, n_prompt=10, prompt_eval_ms=None, t0=T0) -> RepMetrics:
    return rep_metrics(rep, t0, [t0 + int(round(x * MS)) for x in token_ms], n_prompt, prompt_eval_ms)


# --- rep_metrics: the worked example ---------------------------------------------------------------

@pytest.fixture
def example() -> RepMetrics:
    # t_request = 0; tokens at 100, 120, 140, 180 ms; prompt of 50 tokens prefilled in 25 ms.
    return rep_metrics(3, 0, [100 * MS, 120 * MS, 140 * MS, 180 * MS], 50, 25.0)


def test_example_counts(example):
    assert example.rep == 3
    assert example.n_prompt_tokens == 50
    assert example.n_gen_tokens == 4


@pytest.mark.parametrize("name,expected", [
    ("ttft_ms", 100.0),
    ("decode_ms", 80.0),
    ("decode_tps", 3 / 0.08),  # 37.5
    ("e2e_ms", 180.0),
    ("e2e_tps", 4 / 0.18),
    ("itl_p50_ms", 20.0),  # ITLs 20, 20, 40
    ("itl_max_ms", 40.0),
    ("prompt_eval_ms", 25.0),
    ("prefill_tps", 50 / 0.025),  # n_prompt / prompt_eval_s = 2000
])
def test_example_values(example, name, expected):
    assert getattr(example, name) == pytest.approx(expected, rel=1e-12)


def test_example_decode_tps_is_37_5(example):
    assert example.decode_tps == pytest.approx(37.5)


def test_example_itl_high_percentiles(example):
    # numpy linear interpolation over [20, 20, 40]: p90 = 20 + 0.8 * 20, p99 = 20 + 0.98 * 20
    assert example.itl_p90_ms == pytest.approx(36.0)
    assert example.itl_p99_ms == pytest.approx(39.6)
    assert example.itl_p50_ms <= example.itl_p90_ms <= example.itl_p99_ms <= example.itl_max_ms


@pytest.mark.parametrize("name,expected_ns", [
    ("prompt_eval_count", 50),
    ("prompt_eval_duration", 25 * MS),
    ("eval_count", 4),
    ("eval_duration", 180 * MS - 25 * MS),  # total - prompt_eval
    ("total_duration", 180 * MS),
])
def test_example_ollama_aliases_in_ns(example, name, expected_ns):
    value = getattr(example, name)
    assert value == expected_ns
    assert isinstance(value, int)


@pytest.mark.parametrize("token_ms,prompt_eval_ms", [
    ([100, 120, 140, 180], 25.0),
    ([33.333, 41.7, 50.001], 7.25),
    ([1000, 1001], 999.0),
    ([12.345678], 3.5),
    ([250.5, 260.25, 270.125, 300.0625], 0.001),
])
def test_ollama_durations_add_up(token_ms, prompt_eval_ms):
    m = reps_from_ms(0, token_ms, prompt_eval_ms=prompt_eval_ms)
    assert m.total_duration == int(round(token_ms[-1] * MS))
    assert m.prompt_eval_duration == int(round(prompt_eval_ms * MS))
    assert m.eval_duration == m.total_duration - m.prompt_eval_duration
    assert m.eval_count == len(token_ms)
    assert m.prompt_eval_count == m.n_prompt_tokens


def test_absolute_origin_does_not_matter():
    a = rep_metrics(0, 0, [100 * MS, 120 * MS, 140 * MS, 180 * MS], 50, 25.0)
    b = rep_metrics(0, T0, [T0 + 100 * MS, T0 + 120 * MS, T0 + 140 * MS, T0 + 180 * MS], 50, 25.0)
    assert a == b


@pytest.mark.parametrize("n_prompt,prompt_eval_ms,expected", [
    (50, 25.0, 2000.0),
    (512, 128.0, 4000.0),
    (1, 1000.0, 1.0),
    (7, 3.5, 2000.0),
])
def test_prefill_tps(n_prompt, prompt_eval_ms, expected):
    m = reps_from_ms(0, [10, 20], n_prompt=n_prompt, prompt_eval_ms=prompt_eval_ms)
    assert m.prefill_tps == pytest.approx(n_prompt / (prompt_eval_ms / 1000))
    assert m.prefill_tps == pytest.approx(expected)


# --- edge cases --------------------------------------------------------------------------------------

def test_one_token():
    m = rep_metrics(0, 0, [70 * MS], 12, 30.0)
    assert m.n_gen_tokens == 1
    assert m.ttft_ms == pytest.approx(70.0)
    assert m.e2e_ms == pytest.approx(70.0)
    assert m.e2e_tps == pytest.approx(1 / 0.07)
    assert m.decode_ms is None
    assert m.decode_tps is None
    for name in ("itl_p50_ms", "itl_p90_ms", "itl_p99_ms", "itl_max_ms"):
        assert getattr(m, name) is None
    assert m.eval_count == 1
    assert m.total_duration == 70 * MS
    assert m.eval_duration == 40 * MS


def test_zero_tokens():
    m = rep_metrics(0, 0, [], 12, 30.0)
    assert m.n_gen_tokens == 0
    assert m.eval_count == 0
    for name in ("ttft_ms", "decode_ms", "decode_tps", "e2e_ms", "e2e_tps", "itl_p50_ms", "itl_p90_ms",
                 "itl_p99_ms", "itl_max_ms", "eval_duration", "total_duration"):
        assert getattr(m, name) is None, name
    # The prefill happened even though nothing was generated.
    assert m.prefill_tps == pytest.approx(12 / 0.03)


@pytest.mark.parametrize("tokens", [
    [100, 90],
    [100, 120, 110, 130],
    [100, 200, 300, 299],
])
def test_non_monotonic_timestamps_raise(tokens):
    with pytest.raises(ValueError):
        rep_metrics(0, 0, [t * MS for t in tokens], 10, 5.0)


@pytest.mark.parametrize("t_request,tokens", [
    (100 * MS, [99 * MS, 120 * MS]),
    (1, [0]),
    (T0, [T0 - 1, T0 + MS]),
])
def test_token_before_request_raises(t_request, tokens):
    with pytest.raises(ValueError):
        rep_metrics(0, t_request, tokens, 10, 5.0)


def test_equal_timestamps_are_allowed():
    m = rep_metrics(0, 0, [10 * MS, 10 * MS, 20 * MS], 10, None)
    assert m.itl_p50_ms == pytest.approx(5.0)  # ITLs 0, 10
    assert m.decode_tps == pytest.approx(2 / 0.01)


@pytest.mark.parametrize("prompt_eval_ms", [None, 0, 0.0, -1.0])
def test_missing_prompt_eval_gives_no_prefill_rate(prompt_eval_ms):
    m = rep_metrics(0, 0, [100 * MS, 120 * MS], 50, prompt_eval_ms)
    assert m.prefill_tps is None
    assert m.prompt_eval_ms is None
    assert m.prompt_eval_duration is None
    assert m.eval_duration is None
    assert m.ttft_ms == pytest.approx(100.0)  # the rest is still measured


def test_rep_metrics_round_trip():
    m = reps_from_ms(2, [10, 25, 40], prompt_eval_ms=4.0)
    assert RepMetrics.from_dict(m.to_dict()) == m


# --- summarize -----------------------------------------------------------------------------------------

def test_summarize_known_values():
    s = summarize([10, 12, 14])
    assert isinstance(s, Stat)
    assert s.n == 3
    assert s.mean == pytest.approx(12.0)
    assert s.median == pytest.approx(12.0)
    assert s.std == pytest.approx(2.0)  # sample std (ddof=1)
    assert s.cv == pytest.approx(1 / 6)
    assert s.min == 10 and s.max == 14
    half = stats.t.ppf(0.975, 2) * 2 / math.sqrt(3)
    assert half == pytest.approx(4.968, abs=1e-3)  # t(0.975, 2) = 4.303
    assert s.ci95_low == pytest.approx(12 - half)
    assert s.ci95_high == pytest.approx(12 + half)


@pytest.mark.parametrize("values", [
    [1.0, 2.0],
    [5.5, 6.0, 7.25, 100.0],
    list(np.linspace(1, 50, 30)),
    [3.0, 3.0, 3.0],
])
def test_summarize_matches_reference(values):
    s = summarize(values)
    v = np.asarray(values)
    n = len(v)
    sd = float(np.std(v, ddof=1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert s.n == n
    assert s.mean == pytest.approx(v.mean())
    assert s.median == pytest.approx(np.median(v))
    assert s.std == pytest.approx(sd)
    assert s.cv == pytest.approx(sd / v.mean())
    assert s.ci95_low == pytest.approx(v.mean() - half)
    assert s.ci95_high == pytest.approx(v.mean() + half)
    assert s.ci95_low <= s.mean <= s.ci95_high


def test_summarize_single_value():
    s = summarize([7.5])
    assert s.n == 1
    assert s.mean == s.median == s.min == s.max == 7.5
    assert s.std is None and s.cv is None
    assert s.ci95_low is None and s.ci95_high is None


def test_summarize_skips_none_not_zero():
    s = summarize([10, None, 12, None, 14])
    assert s.n == 3
    assert s.mean == pytest.approx(12.0)
    assert s.min == 10


def test_summarize_skips_non_finite():
    s = summarize([10, float("nan"), 14, float("inf")])
    assert s.n == 2 and s.mean == pytest.approx(12.0)


@pytest.mark.parametrize("values", [[], [None], [None, None], (x for x in [])])
def test_summarize_empty_is_none(values):
    assert summarize(values) is None


def test_summarize_accepts_a_generator():
    assert summarize(x for x in [1, 2, 3]).mean == pytest.approx(2.0)


def test_summarize_cv_of_zero_mean_is_none():
    s = summarize([-1, 1])
    assert s.mean == 0 and s.cv is None and s.std == pytest.approx(math.sqrt(2))


def test_stat_to_dict_keys():
    assert set(summarize([1, 2]).to_dict()) == {"n", "mean", "median", "std", "cv", "min", "max",
                                                 "ci95_low", "ci95_high"}


# --- aggregate ---------------------------------------------------------------------------------------

def _two_reps():
    # rep 0: 5 tokens, 10 ms apart -> decode 40 ms, 4 / 0.04 = 100 tok/s, ITLs [10, 10, 10, 10]
    # rep 1: 3 tokens, 50 ms apart -> decode 100 ms, 2 / 0.10 = 20 tok/s, ITLs [50, 50]
    tok0 = [100, 110, 120, 130, 140]
    tok1 = [100, 150, 200]
    reps = [reps_from_ms(0, tok0, prompt_eval_ms=20.0), reps_from_ms(1, tok1, prompt_eval_ms=20.0)]
    itls = [list(np.diff(tok0).astype(float)), list(np.diff(tok1).astype(float))]
    return reps, itls


def test_decode_tps_weighted_is_tokens_over_time():
    reps, itls = _two_reps()
    agg = aggregate(reps, itls)
    weighted = (4 + 2) / (0.040 + 0.100)  # 42.857...
    mean_of_rates = (100 + 20) / 2  # 60
    assert agg["decode_tps_weighted"] == pytest.approx(weighted)
    assert agg["decode_tps"]["mean"] == pytest.approx(mean_of_rates)
    assert abs(agg["decode_tps_weighted"] - agg["decode_tps"]["mean"]) > 10


def test_pooled_itl_percentiles_come_from_all_itls():
    reps, itls = _two_reps()
    agg = aggregate(reps, itls)
    pooled = np.array([10, 10, 10, 10, 50, 50], dtype=float)
    assert agg["itl_pooled_ms"]["n"] == 6
    assert agg["itl_pooled_ms"]["p50"] == pytest.approx(10.0)
    assert agg["itl_pooled_ms"]["p90"] == pytest.approx(np.percentile(pooled, 90))
    assert agg["itl_pooled_ms"]["p99"] == pytest.approx(np.percentile(pooled, 99))
    assert agg["itl_pooled_ms"]["max"] == pytest.approx(50.0)
    # Averaging per-repetition p50s would say 30 ms.
    assert agg["itl_p50_ms"]["mean"] == pytest.approx(30.0)
    assert agg["itl_pooled_ms"]["p50"] != pytest.approx(agg["itl_p50_ms"]["mean"])


def test_aggregate_has_a_stat_per_metric():
    reps, itls = _two_reps()
    agg = aggregate(reps, itls)
    for name in AGGREGATED:
        assert agg[name] is not None, name
        assert agg[name]["n"] == 2
    assert agg["n_gen_tokens_total"] == 8
    assert agg["ttft_ms"]["mean"] == pytest.approx(100.0)
    assert agg["e2e_ms"]["mean"] == pytest.approx((140 + 200) / 2)


def test_aggregate_without_itls_and_with_missing_metrics():
    reps = [reps_from_ms(0, [50]), reps_from_ms(1, [60])]  # one token each: no decode, no ITL
    agg = aggregate(reps)
    assert agg["decode_tps"] is None
    assert agg["decode_tps_weighted"] is None
    assert agg["prefill_tps"] is None  # no prompt_eval_ms
    assert agg["itl_pooled_ms"] == {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    assert agg["ttft_ms"]["mean"] == pytest.approx(55.0)
    assert agg["n_gen_tokens_total"] == 2


def test_aggregate_weighted_skips_reps_without_decode():
    reps = [reps_from_ms(0, [10, 20, 30]), reps_from_ms(1, [10])]
    agg = aggregate(reps, [[10.0, 10.0], []])
    assert agg["decode_tps_weighted"] == pytest.approx(2 / 0.02)
    assert agg["decode_tps"]["n"] == 1
    assert agg["itl_pooled_ms"]["n"] == 2


def test_aggregate_of_nothing():
    agg = aggregate([])
    assert all(agg[name] is None for name in AGGREGATED)
    assert agg["decode_tps_weighted"] is None
    assert agg["n_gen_tokens_total"] == 0
