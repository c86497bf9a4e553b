"""`harness experiment`: both experiments end to end with the real engine and model (2
repetitions, tiny budgets), their tables and raw data, and bad input stopping before any load."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import TINY

from harness.experiments.command import available, prepare

ROOT = Path(__file__).resolve().parents[2]
TINY_CONCURRENT = ["experiment.k=[1,2]", "experiment.repetitions=2", "experiment.warmup=0", "workload.max_tokens=8"]


def _folder(results: Path, name: str) -> Path:
    found = sorted(results.glob(f"{name}-*"))
    assert len(found) == 1, found
    return found[0]


def test_experiment_presets_compose_and_validate(tmp_path):
    assert set(available()) >= {"agent_ab", "concurrent_agents"}
    cfg, spec, (rc, plan) = prepare("concurrent_agents", [])
    assert spec.k == (1, 2, 4) and spec.threads_per_agent == "split"
    assert rc.workload.name == "insight_agent"
    cfg, spec, prepared = prepare("agent_ab", [f"experiment.source={_source_dir(tmp_path)}"])
    a, b = (prepared["setups"][v] for v in ("A", "B"))
    # A is llama-cpp-python's defaults, B the tuned configuration
    assert (a.plan.n_gpu_layers_effective, a.rc.runtime.n_ctx, a.rc.runtime.flash_attn) == (0, 512, "off")
    assert (a.rc.sampling.temperature, a.rc.sampling.top_k, a.rc.sampling.repeat_penalty) == (0.8, 40, 1.0)
    assert (b.rc.runtime.n_gpu_layers, b.rc.runtime.flash_attn) == ("all", "auto")
    # one generation budget for both, small enough for A's 512-token context to hold the facts too
    assert a.agent.max_tokens == b.agent.max_tokens == cfg["agent"]["max_tokens"] == 160
    cfg, spec, prepared = prepare("agent_ab", [f"experiment.source={_source_dir(tmp_path / 'x')}",
                                               "agent.max_tokens=99"])
    assert {prepared["setups"][v].agent.max_tokens for v in ("A", "B")} == {99}


def _source_dir(tmp_path: Path) -> Path:
    """A results folder to analyse: one recorded run (the run.json golden file)."""
    src = tmp_path / "source" / "job"
    src.mkdir(parents=True)
    (src / "run.json").write_text((ROOT / "tests" / "data" / "run_v1.json").read_text())
    return src.parent


@pytest.mark.slow
def test_concurrent_agents_table_and_speedup_from_raw(harness_cli, tmp_path):
    r = harness_cli("experiment", "concurrent_agents", *TINY_CONCURRENT, f"results_dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = _folder(tmp_path, "concurrent_agents")
    raw = json.loads((out / "experiment.json").read_text())
    assert raw["schema_version"] == 1 and raw["setup"]["gil_released"] is True
    rounds = raw["rounds"]
    assert sorted((x["rep"], x["k"]) for x in rounds) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for x in rounds:
        assert x["status"] == "ok" and len(x["agents"]) == x["k"]
        assert all(a["n_gen_tokens"] == 8 and len(a["token_ns"]) == 8 for a in x["agents"])
        # aggregate = every agent's tokens over the time from the common start to the last token
        last = max(a["token_ns"][-1] for a in x["agents"])
        assert x["aggregate_tps"] == pytest.approx(8 * x["k"] / (last / 1e9))
    assert len({a["seed"] for x in rounds if x["k"] == 2 for a in x["agents"]}) == 4
    assert raw["setup"]["device_lock"]["held"] == ["cpu"] and raw["setup"]["device_lock"]["shared_with"] == {}

    def mean_agg(k):
        v = [x["aggregate_tps"] for x in rounds if x["k"] == k]
        return sum(v) / len(v)

    rows = {row["k"]: row for row in raw["summary"]}
    speedup = mean_agg(2) / mean_agg(1)
    assert rows[2]["speedup"] == pytest.approx(speedup)
    assert rows[2]["efficiency"] == pytest.approx(speedup / 2)
    assert rows[1]["speedup"] == 1.0 and rows[1]["threads_per_agent"] >= rows[2]["threads_per_agent"]

    with open(out / "concurrent_agents.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["k"] for t in table] == ["1", "2"]
    assert float(table[1]["speedup"]) == pytest.approx(speedup)

    md = (out / "report.md").read_text()
    assert "| K | threads/agent |" in md and "speedup [95% CI]" in md and "efficiency [95% CI]" in md
    k2 = next(line for line in md.splitlines() if line.startswith("| 2 |"))
    assert f"{speedup:.3g}" in k2 and f"{speedup / 2:.3g}" in k2
    assert "<table>" in (out / "report.html").read_text()


@pytest.mark.slow
def test_concurrent_round_failing_at_run_time_is_recorded_and_the_rest_goes_on(harness_cli, tmp_path):
    # the prompt does not fit the contexts: every round fails with its error, the folder is written
    r = harness_cli("experiment", "concurrent_agents", *TINY_CONCURRENT, "runtime.n_ctx=64",
                    f"results_dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    raw = json.loads((_folder(tmp_path, "concurrent_agents") / "experiment.json").read_text())
    assert raw["status"] == "failed" and len(raw["rounds"]) == 4
    assert all(x["status"] == "failed" and "does not fit" in x["error"] for x in raw["rounds"])
    assert [row["rounds_failed"] for row in raw["summary"]] == [2, 2]
    assert raw["summary"][1]["speedup"] is None


@pytest.mark.slow
def test_agent_ab_compares_b_with_a(harness_cli, tmp_path):
    src = _source_dir(tmp_path)
    r = harness_cli("experiment", "agent_ab", f"experiment.source={src}", "experiment.repetitions=2",
                    "experiment.warmup=0", "agent.max_tokens=8", f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = _folder(tmp_path / "results", "agent_ab")
    raw = json.loads((out / "experiment.json").read_text())
    samples = raw["samples"]
    # alternating order, every repetition with its own load and its own recorded agent run
    assert [(s["rep"], s["variant"]) for s in samples] == [(0, "A"), (0, "B"), (1, "B"), (1, "A")]
    for s in samples:
        assert s["status"] == "ok" and s["load_reused"] is False and s["n_gen_tokens"] >= 1
        assert json.loads((out / s["run_dir"] / "run.json").read_text())["status"] == "ok"
    va, vb = raw["variants"]["A"], raw["variants"]["B"]
    assert (va["runtime"]["n_ctx"], va["runtime"]["flash_attn"], va["effective"]["n_gpu_layers_effective"]) == (512, "off", 0)
    assert vb["effective"]["n_gpu_layers_requested"] == "all"
    if not vb["effective"]["gpu_offload_supported"]:
        assert vb["effective"]["n_gpu_layers_effective"] == 0 and any("no GPU backend" in w for w in vb["warnings"])

    rows = {row["metric"]: row for row in raw["comparison"]}
    assert {"decode_tps", "ttft_ms", "load_ms", "total_duration_ms"} <= set(rows)
    for m in ("decode_tps", "ttft_ms", "load_ms"):
        a = [s[m] for s in samples if s["variant"] == "A"]
        b = [s[m] for s in samples if s["variant"] == "B"]
        assert rows[m]["ratio"] == pytest.approx((sum(b) / 2) / (sum(a) / 2))
        assert rows[m]["note"].endswith("significant") and isinstance(rows[m]["significant"], bool)

    md = (out / "report.md").read_text()
    assert "| metric | n A | n B | A mean | B mean | B/A | 95% CI | p | significant | direction |" in md
    assert next(line for line in md.splitlines() if line.startswith("| decode tok/s |"))
    with open(out / "agent_ab.csv") as f:
        table = list(csv.DictReader(f))
    assert {"ratio", "ratio_ci95_low", "ratio_ci95_high", "p_value", "significant"} <= set(table[0])
    assert [t["metric"] for t in table][:2] == ["decode_tps", "ttft_ms"]


@pytest.fixture(scope="module")
def quick_sweep(tiny_sweep):
    """A real sweep of 4 configurations (two contexts, two temperatures), tiny budgets: the
    session's (conftest.tiny_sweep), read only."""
    return tiny_sweep.dir


@pytest.mark.slow
def test_agent_ab_on_a_sweep_gives_both_variants_the_same_prompt_and_budget(harness_cli, quick_sweep, tmp_path):
    # the default budget: A's 512-token context holds the (cut) facts and the answer
    r = harness_cli("experiment", "agent_ab", f"experiment.source={quick_sweep}", "experiment.repetitions=2",
                    "experiment.warmup=0", f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = _folder(tmp_path / "results", "agent_ab")
    raw = json.loads((out / "experiment.json").read_text())
    assert raw["status"] == "ok" and raw["error"] is None
    samples = raw["samples"]
    assert len(samples) == 4 and all(s["status"] == "ok" for s in samples)
    p = raw["prompt"]
    assert p["fitted_with_variant"] == "A" and p["n_ctx"] == 512 and p["max_tokens"] == 160
    assert p["budget"] == 512 - 160 and p["n_tokens"] <= p["budget"]
    assert 1 <= p["rows"] <= p["rows_total"] == 4 and 2 <= p["summary_lines"] <= p["summary_lines_total"]
    assert {s["n_prompt_tokens"] for s in samples} == {p["n_tokens"]}  # the same prompt for A and B
    prompts = set()
    for s in samples:
        rec = json.loads((out / s["run_dir"] / "run.json").read_text())
        assert rec["status"] == "ok" and rec["repetitions"][0]["n_prompt_tokens"] == p["n_tokens"]
        assert rec["config"]["workload"]["max_tokens"] == 160 and rec["repetitions"][0]["n_gen_tokens"] <= 160
        assert rec["provenance"]["device_lock"]["held"] == ["cpu"]
        prompts.add(rec["config"]["workload"]["prompt"])
    assert len(prompts) == 1
    (text,) = prompts
    assert "Best decode throughput: " in text and "Best TTFT: " in text  # the headline facts
    assert len(re.findall(r"^\| \d+ \| ", text, re.M)) == p["rows"] >= 1  # and at least one row of the table
    assert raw["setup"]["device_lock"] == {"devices": ["cpu"], "held": ["cpu"], "shared_with": {}, "supported": True,
                                           "allow_shared_device": False}
    rows = {row["metric"]: row for row in raw["comparison"]}
    for m in ("decode_tps", "ttft_ms", "load_ms", "total_duration_ms"):
        assert rows[m]["n_a"] == rows[m]["n_b"] == 2 and rows[m]["ratio"] > 0
    assert rows["n_prompt_tokens"]["ratio"] == 1.0
    md = (out / "report.md").read_text()
    assert f"Both variants read the same prompt of {p['n_tokens']} tokens" in md
    assert "agent.max_tokens=160" in md and "n_ctx=512 of variant A" in md
    assert next(line for line in md.splitlines() if line.startswith("| decode tok/s | 2 | 2 |"))


@pytest.mark.slow
def test_agent_ab_prompt_fitting_no_variant_stops_the_experiment_with_its_error(harness_cli, tmp_path):
    # not even the minimal fact sheet fits a 128-token context: no repetition runs, the folder says why
    src = _source_dir(tmp_path)
    r = harness_cli("experiment", "agent_ab", f"experiment.source={src}", "experiment.repetitions=2",
                    "experiment.warmup=0", "agent.max_tokens=8", "runtime.n_ctx=128",
                    f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "agent_ab: failed: PromptTooLong: the minimal fact sheet" in r.stderr
    out = _folder(tmp_path / "results", "agent_ab")
    raw = json.loads((out / "experiment.json").read_text())
    assert raw["status"] == "failed" and raw["samples"] == [] and raw["comparison"] == []
    assert raw["error"].startswith("PromptTooLong: the minimal fact sheet") and raw["prompt"] is None
    md = (out / "report.md").read_text()
    assert "The experiment stopped: PromptTooLong" in md and "nothing to compare" in md


def test_agent_ab_on_a_busy_device_stops_before_loading(harness_cli, tmp_path, monkeypatch):
    import os

    from harness import devicelock

    monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", f"pytest-{os.getpid()}")
    devicelock.hold(["cpu"])
    try:
        r = harness_cli("experiment", "agent_ab", f"experiment.source={_source_dir(tmp_path)}",
                        "experiment.repetitions=1", "experiment.warmup=0", f"results_dir={tmp_path / 'results'}",
                        cwd=tmp_path)
    finally:
        devicelock.release_all()
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    raw = json.loads((_folder(tmp_path / "results", "agent_ab") / "experiment.json").read_text())
    assert raw["error"].startswith("DeviceBusy: device cpu is in use by another harness job")
    assert raw["samples"] == [] and raw["setup"]["device_lock"] is None


@pytest.mark.parametrize("args,key,allowed", [
    (["concurrent_agents", "experiment.bogus=1"], "experiment.bogus", "not a key of experiment concurrent_agents"),
    (["concurrent_agents", "experiment.k=[2,4]"], "experiment.k", "must include 1"),
    (["concurrent_agents", "experiment.k=[1,0]"], "experiment.k", "between 1 and 64"),
    (["concurrent_agents", "experiment.threads_per_agent=half"], "experiment.threads_per_agent", "split"),
    (["concurrent_agents", "experiment.repetitions=0"], "experiment.repetitions", "integer >= 1"),
    (["concurrent_agents", "bench.ignore_eos=false"], "bench.ignore_eos", "same number of tokens"),
    (["concurrent_agents", "runtime.n_ctx=-5"], "runtime.n_ctx", "positive integer"),
    (["nosuch"], "experiment", "known: agent_ab, concurrent_agents"),
    (["agent_ab"], "experiment.source", "no sweep"),
    (["agent_ab", "experiment.source=/nonexistent"], "experiment.source", "existing results folder"),
    (["agent_ab", "experiment.variants.A=['runtime.n_ctx=-5']"], "experiment.variants.A: runtime.n_ctx",
     "positive integer"),
    (["agent_ab", "experiment.k=[1]"], "experiment.k", "not a key of experiment agent_ab"),
    (["agent_ab", "experiment.variants.B=['agent.max_tokens=9']"], "experiment.variants.B", "agent.*"),
    (["agent_ab", "agent.nokey=3"], "agent.nokey", "cannot be composed"),
])
def test_bad_experiment_input_exits_2_with_one_line_before_loading(harness_cli, tmp_path, args, key, allowed):
    r = harness_cli("experiment", *args, f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}:") and allowed in lines[0], r.stderr
    assert not (tmp_path / "results").exists()  # nothing ran: no results folder
