"""The arithmetic of concurrent_agents: aggregate rate, speedup over K=1 and efficiency."""

from __future__ import annotations

import math

import pytest

from harness.experiments.concurrent import aggregate_tps, speedups, summary, threads_per_agent


def test_aggregate_is_all_tokens_over_the_wall_time_to_the_last_token():
    # two agents, 3 and 2 tokens, the last token of any agent at 0.5 s after the common start
    agents = [[100_000_000, 200_000_000, 300_000_000], [250_000_000, 500_000_000]]
    assert aggregate_tps(agents) == pytest.approx(5 / 0.5)


def test_aggregate_counts_the_slowest_agent_not_the_sum_of_durations():
    one = [[1_000_000_000]]  # one token after 1 s
    two = [[1_000_000_000], [1_000_000_000]]  # two agents, each one token after 1 s
    assert aggregate_tps(two) == pytest.approx(2 * aggregate_tps(one))


def test_aggregate_without_tokens_is_none():
    assert aggregate_tps([[], []]) is None


def test_speedup_is_the_ratio_of_mean_aggregates_and_efficiency_divides_by_k():
    s = speedups({1: [10.0, 12.0, 11.0], 2: [18.0, 20.0, 19.0], 4: [22.0, 26.0, 24.0]})
    assert s[1]["speedup"] == 1.0 and s[1]["efficiency"] == 1.0
    assert s[2]["speedup"] == pytest.approx(19.0 / 11.0)
    assert s[2]["efficiency"] == pytest.approx(19.0 / 11.0 / 2)
    assert s[4]["speedup"] == pytest.approx(24.0 / 11.0)
    assert s[4]["efficiency"] == pytest.approx(24.0 / 11.0 / 4)
    for k in (2, 4):
        lo, hi = s[k]["speedup_ci95_low"], s[k]["speedup_ci95_high"]
        assert lo < s[k]["speedup"] < hi
        assert s[k]["efficiency_ci95_low"] == pytest.approx(lo / k)
        assert s[k]["efficiency_ci95_high"] == pytest.approx(hi / k)
        assert s[k]["significant"] is True


def test_no_gain_is_not_significant_and_efficiency_halves():
    s = speedups({1: [10.0, 11.0, 9.0], 2: [10.5, 9.5, 10.0]})
    assert s[2]["speedup"] == pytest.approx(1.0)
    assert s[2]["efficiency"] == pytest.approx(0.5)
    assert s[2]["significant"] is False and s[2]["note"].endswith("not significant")


def test_missing_reference_gives_no_speedup():
    s = speedups({1: [], 2: [10.0, 11.0]})
    assert s[2]["speedup"] is None and s[2]["efficiency"] is None


def test_single_repetition_has_a_ratio_but_no_interval():
    s = speedups({1: [10.0], 2: [15.0]})
    assert s[2]["speedup"] == pytest.approx(1.5)
    assert not (isinstance(s[2]["speedup_ci95_low"], float) and math.isfinite(s[2]["speedup_ci95_low"]))


def test_threads_split_the_cores_between_agents():
    assert [threads_per_agent(k, "split", 8) for k in (1, 2, 4, 16)] == [8, 4, 2, 1]
    assert [threads_per_agent(k, 3, 8) for k in (1, 4)] == [3, 3]


def test_summary_leaves_failed_rounds_out_and_counts_them():
    def rnd(rep, k, tps, status="ok"):
        return {"rep": rep, "k": k, "threads_per_agent": 1, "status": status, "aggregate_tps": tps,
                "agents": [{"decode_tps": tps / k, "ttft_ms": 50.0}] * k if status == "ok" else []}

    rows = summary([rnd(0, 1, 10.0), rnd(1, 1, 12.0), rnd(0, 2, 16.0), rnd(1, 2, 18.0), rnd(2, 2, None, "failed")],
                   (1, 2))
    r2 = rows[1]
    assert (r2["rounds_ok"], r2["rounds_failed"]) == (2, 1)
    assert r2["aggregate_tps_mean"] == pytest.approx(17.0)
    assert r2["speedup"] == pytest.approx(17.0 / 11.0)
    assert r2["per_agent_decode_tps_mean"] == pytest.approx(8.5)
