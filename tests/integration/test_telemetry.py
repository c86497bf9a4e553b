"""Telemetry end to end: `harness run` in a subprocess with the fake libnvidia-ml.so.1 preloaded,
so the real pynvml code path runs against a scripted trace. Expected values are computed from
the trace itself (tests/fakes/fakenvml.py), not from what the harness wrote."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, load_schema, run_records

sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

pytestmark = pytest.mark.slow

H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555",
        "memory_total_mib": 81559, "power_limit_w": 700, "bus_width": 5120, "max_mem_clock_mhz": 2619,
        "max_sm_clock_mhz": 1980, "fans": 0, "energy_offset_mj": 5_000_000}
L40 = {"name": "NVIDIA L40S", "uuid": "GPU-99999999-8888-7777-6666-555555555555", "memory_total_mib": 46068,
       "power_limit_w": 350, "bus_width": 384, "max_mem_clock_mhz": 9001, "max_sm_clock_mhz": 2520, "fans": 2}


def _rows(gpu: int, n: int = 120, step_ms: int = 200, base_power: float = 300.0) -> list[dict]:
    """Readings that change every step: power alternates by 60 W, utilisation by 10 points."""
    return [{"t_ms": i * step_ms, "gpu": gpu, "util_gpu": 80 + 10 * (i % 2), "util_mem": 30 + i % 3,
             "mem_used_mib": 2000 + i, "power_w": base_power + 60 * (i % 2), "temp_c": 55 + i % 5,
             "sm_clock_mhz": 1900 + i % 2 * 50, "mem_clock_mhz": 2619, "pstate": 0, "fan_pct": 40 + i % 2 * 10,
             "throttle": 0x4 if i % 4 == 0 else 0} for i in range(n)]


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory) -> Path:
    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler to build the fake NVML library")
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


def _run(tmp_path, harness_cli, lib, trace, *overrides, t0_ns=None, extra_env=None, sweep="t"):
    env = fakenvml.env(lib, trace, t0_ns=t0_ns)
    env.update(extra_env or {})
    return harness_cli("run", *TINY, *overrides, f"results_dir={tmp_path}", f"sweep_name={sweep}",
                       cwd=tmp_path, env=env)


def _one(tmp_path: Path, sweep: str = "t") -> tuple[dict, list[dict]]:
    (rec,) = run_records(tmp_path / sweep).values()
    job = tmp_path / sweep / rec["job_name"]
    with open(job / "telemetry.csv") as f:
        samples = list(csv.DictReader(f))
    return rec, samples


def test_telemetry_follows_the_trace(tmp_path, harness_cli, fake_lib, model_path):
    rows = _rows(0)
    trace = fakenvml.write_trace(tmp_path / "trace", [H100], rows, notsupported=[(0, "fan")],
                                 processes=[(0, "self", 1500), (0, 4242, 512)])
    t0 = time.monotonic_ns()
    r = _run(tmp_path, harness_cli, fake_lib, trace, "telemetry.interval_ms=10", "bench.repetitions=3",
             "bench.warmup=1", t0_ns=t0)
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    import jsonschema

    jsonschema.validate(rec, load_schema())
    tel = rec["telemetry"]
    assert tel["status"] == "ok" and tel["error"] is None and tel["power_source"] == "instant"
    assert tel["gpu"]["name"] == H100["name"] and tel["gpu"]["uuid"] == H100["uuid"]
    assert tel["gpu"]["peak_mem_bandwidth_gbps"] == pytest.approx(5120 / 8 * 2619e6 * 2 / 1e9)
    assert len(samples) == tel["n_samples"] > 20

    # Every sample carries the trace's readings at its time. A reading takes a moment after its
    # timestamp (longer on a busy machine), so allow what the trace says up to LAG ms later.
    lag = 50

    def t_ms(s):  # sample time on the fake's clock (ms since T0)
        return (tel["t0_ns"] + int(s["t_ns"]) - t0) / 1e6

    for s in samples:
        window = [fakenvml.reading_at(rows, 0, t_ms(s) + d) for d in range(0, lag + 1)]
        assert int(s["gpu_util_pct"]) in {w["util_gpu"] for w in window}
        assert float(s["power_w"]) in {w["power_w"] for w in window}
        assert float(s["vram_used_mib"]) in {w["mem_used_mib"] for w in window}
        assert float(s["proc_vram_mib"]) == 1500.0
        assert s["fan_pct"] == ""  # NotSupported: empty, never 0
        lo, hi = (fakenvml.energy_counter_mj(rows, 0, t_ms(s) + d, energy_offset_mj=H100["energy_offset_mj"])
                  for d in (0, lag))
        assert lo - 1 <= int(s["energy_mj"]) <= hi + 1  # the counter at a moment within the lag
        assert s["proc_rss_mib"] and float(s["proc_rss_mib"]) > 0  # host readings alongside

    # Energy per phase equals the integral of the trace's power over the recorded windows.
    for phase in ("load", "warmup", "prefill", "decode", "idle"):
        wins = [w for w in tel["windows"] if w["name"] == phase]
        assert wins, phase
        expected = sum(fakenvml.expected_energy_j(rows, 0, (tel["t0_ns"] + w["t0_ns"] - t0) / 1e6,
                                                   (tel["t0_ns"] + w["t1_ns"] - t0) / 1e6) for w in wins)
        got = tel["phases"][phase]
        # Each window end is read a moment after its timestamp: allow 1 J per window for that.
        assert got["energy_j"] == pytest.approx(expected, rel=0.03, abs=1.0 * len(wins)), phase
        assert got["n_windows"] == len(wins)
    decode = tel["phases"]["decode"]
    tokens = sum(rep["n_gen_tokens"] - 1 for rep in rec["repetitions"])
    assert decode["tokens"] == tokens == 3 * 7
    assert decode["energy_per_token_j"] == pytest.approx(decode["energy_j"] / tokens)
    assert decode["tokens_per_j"] == pytest.approx(tokens / decode["energy_j"])
    # Per-phase means are the means of the trace's values at the sampled instants.
    dec = [s for s in samples if s["phase"] == "decode"]
    assert decode["n_samples"] >= len(dec) > 0
    assert 80 <= decode["gpu_util_pct_mean"] <= 90 and decode["gpu_util_pct_max"] in (80, 90)
    assert decode["fan_pct_mean"] is None and "fan" in tel["unsupported"]
    assert "sw_power_cap" in tel["phases"]["load"]["throttle_reasons"]
    # Another process on the GPU is a warning with its PID and VRAM.
    assert tel["other_processes"] == [{"pid": 4242, "vram_mib": 512.0}]
    assert any("pid 4242 (512 MiB)" in w for w in rec["warnings"])


def test_fans_are_averaged_over_every_fan(tmp_path, harness_cli, fake_lib, model_path):
    rows = _rows(0)
    trace = fakenvml.write_trace(tmp_path / "trace", [L40], rows)
    r = _run(tmp_path, harness_cli, fake_lib, trace, "bench.repetitions=1")
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    assert rec["telemetry"]["gpu"]["n_fans"] == 2
    assert {float(s["fan_pct"]) for s in samples} <= {40.0, 50.0}
    assert "fan" not in rec["telemetry"]["unsupported"]


def test_gpu_lost_mid_run_completes_with_partial_telemetry(tmp_path, harness_cli, fake_lib, model_path):
    trace = fakenvml.write_trace(tmp_path / "trace", [H100], _rows(0), fail_after={0: 120})
    r = _run(tmp_path, harness_cli, fake_lib, trace, "telemetry.interval_ms=10", "bench.repetitions=3")
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    assert rec["status"] == "ok" and len(rec["repetitions"]) == 3
    tel = rec["telemetry"]
    assert tel["status"] == "partial" and "GPU lost" in tel["error"]
    with_gpu = [s for s in samples if s["power_w"]]
    without = [s for s in samples if not s["power_w"]]
    assert with_gpu and without  # sampled, then lost
    assert max(int(s["t_ns"]) for s in with_gpu) < min(int(s["t_ns"]) for s in without)
    assert all(s["proc_rss_mib"] for s in without)  # host sampling went on


def test_nvml_on_without_nvml_exits_2_before_loading(tmp_path, harness_cli, fake_lib):
    r = harness_cli("run", *TINY, "telemetry.nvml=on", f"results_dir={tmp_path}", cwd=tmp_path,
                    env=fakenvml.env(fake_lib, None))  # the library is there, but no driver answers
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: telemetry.nvml: requires NVML")
    assert not list(tmp_path.rglob("run.json"))


def test_nvml_auto_without_nvml_records_host_only_and_why(tmp_path, harness_cli, fake_lib, model_path):
    r = harness_cli("run", *TINY, "bench.repetitions=1", f"results_dir={tmp_path}", "sweep_name=t",
                    cwd=tmp_path, env=fakenvml.env(fake_lib, None))
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    assert rec["telemetry"]["status"] == "host_only" and "NVML" in rec["telemetry"]["reason"]
    assert rec["telemetry"]["gpu"] is None
    assert all(s["power_w"] == "" for s in samples) and all(s["proc_rss_mib"] for s in samples)
    assert rec["telemetry"]["phases"]["decode"]["energy_j"] is None


@pytest.mark.parametrize("how", ["index", "uuid", "gpu_index"])
def test_the_sampled_gpu_follows_cuda_visible_devices(how, tmp_path, harness_cli, fake_lib, model_path):
    rows = _rows(0) + _rows(1, base_power=120.0)
    trace = fakenvml.write_trace(tmp_path / "trace", [H100, L40], rows)
    env, extra = {}, []
    if how == "index":
        env["CUDA_VISIBLE_DEVICES"] = "1,0"
    elif how == "uuid":
        env["CUDA_VISIBLE_DEVICES"] = L40["uuid"]
    else:
        env["CUDA_VISIBLE_DEVICES"] = "0"
        extra = ["telemetry.gpu_index=1"]  # an explicit index wins
    r = _run(tmp_path, harness_cli, fake_lib, trace, "bench.repetitions=1", *extra, extra_env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    assert rec["telemetry"]["gpu"]["name"] == "NVIDIA L40S" and rec["telemetry"]["gpu"]["index"] == 1
    assert {float(s["power_w"]) for s in samples} <= {120.0, 180.0}


def test_telemetry_off(tmp_path, harness_cli, fake_lib, model_path):
    trace = fakenvml.write_trace(tmp_path / "trace", [H100], _rows(0))
    r = _run(tmp_path, harness_cli, fake_lib, trace, "telemetry.nvml=off", "bench.repetitions=1")
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    assert rec["telemetry"]["status"] == "host_only" and rec["telemetry"]["reason"] == "telemetry.nvml=off"
    assert all(s["gpu_util_pct"] == "" for s in samples)


def test_doctor_shows_what_telemetry_will_record(tmp_path, harness_cli, fake_lib):
    trace = fakenvml.write_trace(tmp_path / "trace", [H100], _rows(0), notsupported=[(0, "fan")])
    r = harness_cli("doctor", cwd=tmp_path, env={**fakenvml.env(fake_lib, trace), "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "NVIDIA H100 80GB HBM3" in r.stdout and "3352 GB/s" in r.stdout
    assert "power reading: instant" in r.stdout
    assert "fan: null in records" in r.stdout


@pytest.mark.gpu
def test_real_gpu_telemetry(tmp_path, harness_cli, model_path):
    """The same checks against the real NVML of a GPU machine (skipped without one)."""
    from harness.telemetry import nvml

    ok, reason = nvml.availability()
    if not ok:
        pytest.skip(f"no real NVML here: {reason}")
    r = harness_cli("run", *TINY, "telemetry.nvml=on", "telemetry.interval_ms=10", "bench.warmup=1",
                    f"results_dir={tmp_path}", "sweep_name=t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rec, samples = _one(tmp_path)
    tel = rec["telemetry"]
    assert tel["status"] == "ok" and tel["gpu"]["name"] and tel["gpu"]["uuid"].startswith(("GPU-", "MIG-"))
    assert all(s["power_w"] for s in samples) and all(s["energy_mj"] for s in samples)
    counter = [int(s["energy_mj"]) for s in samples]
    assert counter == sorted(counter)  # the energy counter never goes back
    decode = tel["phases"]["decode"]
    assert decode["power_w_mean"] > 0 and decode["energy_j"] > 0 and decode["energy_per_token_j"] > 0
    for metric, why in tel["unsupported"].items():  # NotSupported is recorded with a reason, never 0
        assert why
    if "fan" in tel["unsupported"]:
        assert decode["fan_pct_mean"] is None
