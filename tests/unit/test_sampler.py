"""Unit tests of harness.telemetry.sampler.Sampler with a scripted device and an injected clock.

No NVML, no psutil: `ScriptedDevice.read()` returns the readings scripted for the fake clock's
current time, `FakeHost.read()` returns fixed host readings. Except for the background-thread test,
no thread is started: the tests call sample(), begin_window/end_window and add_window directly.
All energies below are computed by hand in the comments.
"""

from __future__ import annotations

import threading
import time

import pytest

from harness.telemetry.nvml import THROTTLE_REASONS, NvmlError, NvmlGpuLost, decode_throttle
from harness.telemetry.sampler import CSV_COLUMNS, GPU_COLUMNS, HOST_COLUMNS, Sampler, Window

MS = 1_000_000  # ns per ms
T0 = 7_000_000_000_000  # an arbitrary perf_counter_ns origin: only differences matter


class FakeClock:
    """A clock the test sets; `ms` is relative to T0."""

    def __init__(self, ms: float = 0):
        self.ns = T0 + int(ms * MS)

    def at(self, ms: float) -> "FakeClock":
        self.ns = T0 + int(round(ms * MS))
        return self

    def __call__(self) -> int:
        return self.ns


class ScriptedDevice:
    """Stand-in for harness.telemetry.nvml.Device: read() returns script[ms since T0] (the last
    scripted time <= now when now is not scripted). After `lose_after` reads it raises `error`."""

    def __init__(self, clock: FakeClock, script: dict[float, dict], lose_after: int | None = None,
                 error: Exception | None = None):
        self.clock = clock
        self.script = dict(sorted(script.items()))
        self.unsupported: dict = {}
        self.power_source = "instant"
        self.lose_after = lose_after
        self.error = error if error is not None else NvmlGpuLost("GPU is lost", 15)
        self.reads = 0

    def read(self) -> dict:
        self.reads += 1
        if self.lose_after is not None and self.reads > self.lose_after:
            raise self.error
        now_ms = (self.clock() - T0) / MS
        keys = [t for t in self.script if t <= now_ms] or [next(iter(self.script))]
        return dict(self.script[keys[-1]])


class ConstantDevice:
    """A device with constant readings (for the real-clock thread test)."""

    unsupported: dict = {}
    power_source = "instant"

    def __init__(self):
        self.reads = 0

    def read(self) -> dict:
        self.reads += 1
        return {"gpu_util_pct": 50, "power_w": 100.0, "energy_mj": 1000 + self.reads}


HOST_READING = {"proc_cpu_pct": 150.0, "sys_cpu_pct": 80.0, "proc_rss_mib": 512.0,
                "sys_mem_used_mib": 4096.0, "cpu_freq_mhz": 3000.0, "cpu_temp_c": None}


class FakeHost:
    unsupported = {"cpu_temp": "no CPU temperature sensor exposed"}

    def __init__(self):
        self.reads = 0

    def read(self) -> dict:
        self.reads += 1
        return dict(HOST_READING)


def sampler_for(script: dict[float, dict], host=None, **dev_kw) -> tuple[Sampler, FakeClock, ScriptedDevice]:
    clock = FakeClock()
    dev = ScriptedDevice(clock, script, **dev_kw)
    return Sampler(100, dev, host, clock=clock), clock, dev


def sample_at(s: Sampler, clock: FakeClock, *times_ms: float, kind: str = "tick") -> list[int]:
    return [(clock.at(t), s.sample(kind))[1] for t in times_ms]


def ns(ms: float) -> int:
    return T0 + int(round(ms * MS))


# --- energy: the counter ------------------------------------------------------------------------

# Power and a counter that always moves (so the counter's update period is unknown: None).
COUNTER = {0: {"power_w": 2.0, "energy_mj": 1000}, 1000: {"power_w": 3.0, "energy_mj": 3000},
           2000: {"power_w": 3.0, "energy_mj": 6000}}


def test_energy_counter_exact_when_both_ends_are_samples():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000, 2000)
    assert s.counter_update_ms() is None
    # (6000 - 1000) mJ = 5 J; (3000 - 1000) mJ = 2 J
    assert s.energy_j(ns(0), ns(2000)) == (pytest.approx(5.0), "counter")
    assert s.energy_j(ns(0), ns(1000)) == (pytest.approx(2.0), "counter")


def test_energy_counter_interpolated_between_samples():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000, 2000)
    # counter at 500 ms = 1000 + 2000 * 0.5 = 2000; at 1500 ms = 3000 + 3000 * 0.5 = 4500 -> 2.5 J
    assert s.energy_j(ns(500), ns(1500)) == (pytest.approx(2.5), "counter_interpolated")
    # one end a sample, the other not: 3000 -> 3000 + 3000 * 0.25 = 3750 -> 0.75 J
    assert s.energy_j(ns(1000), ns(1250)) == (pytest.approx(0.75), "counter_interpolated")


def test_energy_counter_preferred_over_power():
    """With both a counter and power, a long window uses the counter, not the power integral."""
    # power integral over [0, 2000] would be (2+3)/2 * 1 + 3 * 1 = 5.5 J, the counter says 5 J
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000, 2000)
    e, method = s.energy_j(ns(0), ns(2000))
    assert method == "counter" and e == pytest.approx(5.0) and e != pytest.approx(5.5)


# --- energy: power integration and unavailable --------------------------------------------------

POWER_ONLY = {0: {"power_w": 100.0, "energy_mj": None}, 1000: {"power_w": 200.0, "energy_mj": None},
              2000: {"power_w": 200.0, "energy_mj": None}}


def test_energy_power_integrated_without_counter():
    s, clock, _ = sampler_for(POWER_ONLY)
    sample_at(s, clock, 0, 1000, 2000)
    # trapezoids: (100 + 200) / 2 * 1 s + (200 + 200) / 2 * 1 s = 150 + 200 = 350 J
    assert s.energy_j(ns(0), ns(2000)) == (pytest.approx(350.0), "power_integrated")
    # [500, 1500]: power at 500 = 150 W; (150 + 200) / 2 * 0.5 + 200 * 0.5 = 87.5 + 100 = 187.5 J
    assert s.energy_j(ns(500), ns(1500)) == (pytest.approx(187.5), "power_integrated")


def test_energy_unavailable_without_counter_or_power():
    s, clock, _ = sampler_for({0: {"gpu_util_pct": 10, "power_w": None, "energy_mj": None}})
    sample_at(s, clock, 0, 1000, 2000)
    assert s.energy_j(ns(0), ns(2000)) == (None, "unavailable")


def test_energy_unavailable_outside_the_sampled_span():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000, 2000)
    assert s.energy_j(ns(1500), ns(2500)) == (None, "unavailable")  # ends after the last sample
    assert s.energy_j(ns(-10), ns(500)) == (None, "unavailable")  # starts before the first


def test_energy_unavailable_with_a_single_sample():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0)
    assert s.energy_j(ns(0), ns(0)) == (None, "unavailable")


# --- energy: a quantised counter --------------------------------------------------------------

# Power is drawn throughout; the counter stays still over [0, 50] (50 ms) and [100, 220] (120 ms).
# Over [500, 800] it stays still too, but no power is drawn there: not a sign of quantisation.
QUANTISED = {0: {"power_w": 100.0, "energy_mj": 0}, 50: {"power_w": 100.0, "energy_mj": 0},
             100: {"power_w": 100.0, "energy_mj": 10_000}, 220: {"power_w": 100.0, "energy_mj": 10_000},
             300: {"power_w": 100.0, "energy_mj": 30_000}, 400: {"power_w": 100.0, "energy_mj": 40_000},
             500: {"power_w": 0.0, "energy_mj": 50_000}, 800: {"power_w": 0.0, "energy_mj": 50_000}}


def test_counter_update_ms_is_the_longest_stale_interval_with_power():
    s, clock, _ = sampler_for(QUANTISED)
    sample_at(s, clock, *QUANTISED)
    assert s.counter_update_ms() == pytest.approx(120.0)  # not 50 (shorter), not 300 (no power)


def test_counter_update_ms_ignores_order_of_sampling():
    """Samples are sorted by time before pairs are compared."""
    s, clock, _ = sampler_for(QUANTISED)
    sample_at(s, clock, *reversed(list(QUANTISED)))
    assert s.counter_update_ms() == pytest.approx(120.0)


def test_short_window_uses_power_when_the_counter_is_quantised():
    s, clock, _ = sampler_for(QUANTISED)
    sample_at(s, clock, *QUANTISED)
    # 100 ms < 2 x 120 ms: power integral, 100 W x 0.1 s = 10 J (the counter also says 10 J here)
    assert s.energy_j(ns(300), ns(400)) == (pytest.approx(10.0), "power_integrated")
    # 200 ms < 240 ms: power 100 W x 0.2 s = 20 J; the counter would have said 30 J
    assert s.energy_j(ns(100), ns(300)) == (pytest.approx(20.0), "power_integrated")
    # 300 ms >= 240 ms: the counter, 30000 mJ - 0 = 30 J
    assert s.energy_j(ns(0), ns(300)) == (pytest.approx(30.0), "counter")


# Sampling faster than the counter updates: the still run spans several samples.
def test_counter_update_ms_spans_consecutive_stale_samples():
    # Sampled every 10 ms at a constant 100 W; the counter shows the energy at floor(t / 100) * 100 ms.
    script = {t: {"power_w": 100.0, "energy_mj": (t // 100) * 100 * 100} for t in range(0, 301, 10)}
    s, clock, _ = sampler_for(script)
    sample_at(s, clock, *script)
    # Across the samples at 100, 110, ..., 190 ms the counter did not move: 90 ms of stale counter.
    assert s.counter_update_ms() == pytest.approx(90.0)
    e, method = s.energy_j(ns(100), ns(150))
    assert method == "power_integrated" and e == pytest.approx(5.0)


# --- summaries --------------------------------------------------------------------------------

# gpu readings at each sample time; fans unsupported (None), one mem_util reading missing.
SUMMARY_SCRIPT = {
    0: dict(gpu_util_pct=10, mem_util_pct=5, power_w=60.0, energy_mj=0, fan_pct=None, throttle_reasons=0x1,
            vram_used_mib=1000, temp_c=40, sm_clock_mhz=1000, mem_clock_mhz=2000, pstate=8),
    50: dict(gpu_util_pct=20, mem_util_pct=5, power_w=80.0, energy_mj=5_000, fan_pct=None, throttle_reasons=0,
             vram_used_mib=1500, temp_c=41, sm_clock_mhz=1000, mem_clock_mhz=2000, pstate=8),
    100: dict(gpu_util_pct=90, mem_util_pct=None, power_w=200.0, energy_mj=10_000, fan_pct=None,
              throttle_reasons=0, vram_used_mib=2000, temp_c=50, sm_clock_mhz=1900, mem_clock_mhz=2600, pstate=0),
    150: dict(gpu_util_pct=95, mem_util_pct=40, power_w=210.0, energy_mj=20_000, fan_pct=None,
              throttle_reasons=0x4, vram_used_mib=2100, temp_c=55, sm_clock_mhz=1900, mem_clock_mhz=2600, pstate=0),
    200: dict(gpu_util_pct=100, mem_util_pct=50, power_w=220.0, energy_mj=31_000, fan_pct=None,
              throttle_reasons=0, vram_used_mib=2100, temp_c=60, sm_clock_mhz=1800, mem_clock_mhz=2600, pstate=0),
    250: dict(gpu_util_pct=0, mem_util_pct=0, power_w=70.0, energy_mj=35_000, fan_pct=None, throttle_reasons=0x1,
              vram_used_mib=2100, temp_c=58, sm_clock_mhz=500, mem_clock_mhz=800, pstate=2),
    300: dict(gpu_util_pct=80, mem_util_pct=60, power_w=180.0, energy_mj=40_000, fan_pct=None,
              throttle_reasons=0, vram_used_mib=2100, temp_c=57, sm_clock_mhz=1700, mem_clock_mhz=2600, pstate=0),
    350: dict(gpu_util_pct=85, mem_util_pct=70, power_w=190.0, energy_mj=49_000, fan_pct=None,
              throttle_reasons=0x40, vram_used_mib=2100, temp_c=63, sm_clock_mhz=1600, mem_clock_mhz=2600, pstate=0),
    400: dict(gpu_util_pct=90, mem_util_pct=80, power_w=200.0, energy_mj=59_000, fan_pct=None,
              throttle_reasons=0, vram_used_mib=2200, temp_c=62, sm_clock_mhz=1600, mem_clock_mhz=2600, pstate=0),
}


@pytest.fixture
def run():
    """A small run: prefill [0, 100], decode [100, 200] (10 tokens) and [300, 400] (70 tokens),
    idle [200, 300]; one sample every 50 ms."""
    s, clock, dev = sampler_for(SUMMARY_SCRIPT, host=FakeHost())
    clock.at(0)
    t_req = s.sample("tick")
    clock.at(50)
    s.sample("tick")
    clock.at(100)
    s.begin_window("decode")
    clock.at(150)
    s.sample("tick")
    clock.at(200)
    s.end_window("decode", tokens=10)
    clock.at(250)
    s.sample("tick")
    clock.at(300)
    s.begin_window("decode")
    clock.at(350)
    s.sample("tick")
    clock.at(400)
    s.end_window("decode", tokens=70)
    s.add_window("prefill", t_req, ns(100))
    s.add_window("idle", ns(200), ns(300))
    return s


def test_summary_counts_and_duration(run):
    d = run.summaries()["decode"]
    assert d["n_windows"] == 2
    assert d["duration_ms"] == pytest.approx(200.0)  # 100 + 100
    assert d["n_samples"] == 6  # 100, 150, 200, 300, 350, 400 (ends inclusive; 250 is idle)
    p = run.summaries()["prefill"]
    assert (p["n_windows"], p["duration_ms"], p["n_samples"]) == (1, pytest.approx(100.0), 3)  # 0, 50, 100


def test_summary_means_and_maxima(run):
    d = run.summaries()["decode"]
    assert d["gpu_util_pct_mean"] == pytest.approx(90.0)  # (90+95+100+80+85+90) / 6
    assert d["gpu_util_pct_max"] == 100
    assert d["power_w_mean"] == pytest.approx(200.0)  # (200+210+220+180+190+200) / 6
    assert d["power_w_max"] == pytest.approx(220.0)
    assert d["mem_util_pct_mean"] == pytest.approx(60.0)  # (40+50+60+70+80) / 5: None skipped, not 0
    assert d["temp_c_max"] == 63
    assert d["vram_used_mib_max"] == 2200
    assert d["sm_clock_mhz_mean"] == pytest.approx((1900 + 1900 + 1800 + 1700 + 1600 + 1600) / 6)
    assert d["pstate_max"] == 0
    assert d["proc_cpu_pct_mean"] == pytest.approx(150.0)
    assert d["proc_rss_mib_max"] == pytest.approx(512.0)
    assert d["cpu_temp_c_max"] is None  # host sensor missing: null, not 0
    i = run.summaries()["idle"]
    assert i["gpu_util_pct_mean"] == pytest.approx((100 + 0 + 80) / 3)
    assert i["pstate_max"] == 2


def test_summary_fan_null_when_unsupported(run):
    for phase in run.summaries().values():
        assert phase["fan_pct_mean"] is None and phase["fan_pct_max"] is None


def test_summary_throttle_union(run):
    s = run.summaries()
    assert s["decode"]["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]  # 0x4 | 0x40
    assert s["prefill"]["throttle_reasons"] == ["gpu_idle"]  # 0x1 at 0 ms


def test_summary_energy_and_tokens(run):
    d = run.summaries()["decode"]
    # (31000 - 10000) + (59000 - 40000) mJ = 21 J + 19 J
    assert d["energy_j"] == pytest.approx(40.0)
    assert d["energy_methods"] == ["counter"]
    assert d["tokens"] == 80
    assert d["energy_per_token_j"] == pytest.approx(0.5)
    assert d["tokens_per_j"] == pytest.approx(2.0)
    p = run.summaries()["prefill"]
    assert p["energy_j"] == pytest.approx(10.0)  # 10000 - 0 mJ
    assert p["tokens"] is None and p["energy_per_token_j"] is None and p["tokens_per_j"] is None
    assert run.summaries()["idle"]["energy_j"] == pytest.approx(9.0)  # 40000 - 31000 mJ


def test_summary_fan_mean_when_supported():
    s, clock, _ = sampler_for({0: {"fan_pct": 30.0}, 10: {"fan_pct": None}, 20: {"fan_pct": 60.0}})
    sample_at(s, clock, 0, 10, 20)
    s.add_window("decode", ns(0), ns(20))
    d = s.summaries()["decode"]
    assert d["fan_pct_mean"] == pytest.approx(45.0) and d["fan_pct_max"] == pytest.approx(60.0)


def test_summary_energy_null_when_a_window_has_none():
    """A phase sums energy only when every window has one: a partial sum would under-report."""
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000, 2000)
    s.add_window("decode", ns(0), ns(1000), tokens=5)
    s.add_window("decode", ns(1500), ns(3000), tokens=5)  # ends after the last sample
    d = s.summaries()["decode"]
    assert d["energy_j"] is None and d["energy_per_token_j"] is None and d["tokens_per_j"] is None
    assert d["energy_methods"] == ["counter", "unavailable"]
    assert d["tokens"] == 10


def test_summaries_empty_without_windows():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000)
    assert s.summaries() == {}


# --- phase_of, rows, t0_ns --------------------------------------------------------------------

def test_phase_of_labels(run):
    assert run.phase_of(ns(50)) == "prefill"
    assert run.phase_of(ns(150)) == "decode"
    assert run.phase_of(ns(250)) == "idle"
    assert run.phase_of(ns(350)) == "decode"
    assert run.phase_of(ns(500)) == "other"
    assert run.phase_of(ns(-1)) == "other"
    # a boundary shared by two windows belongs to the window declared first (decode, before prefill)
    assert run.phase_of(ns(100)) == "decode"


def test_rows_order_and_columns(run):
    rows = run.rows()
    assert len(rows) == len(run.samples) == 9
    assert all(len(r) == len(CSV_COLUMNS) for r in rows)
    assert CSV_COLUMNS[:3] == ("t_ns", "phase", "kind")
    assert CSV_COLUMNS[3:] == GPU_COLUMNS + HOST_COLUMNS
    assert [r[0] for r in rows] == [ns(t) for t in SUMMARY_SCRIPT]
    assert [r[1] for r in rows] == ["prefill", "prefill", "decode", "decode", "decode", "idle", "decode",
                                    "decode", "decode"]
    assert [r[2] for r in rows] == ["tick", "tick", "mark", "tick", "mark", "tick", "mark", "tick", "mark"]
    col = {c: i for i, c in enumerate(CSV_COLUMNS)}
    r150 = rows[3]
    assert r150[col["power_w"]] == pytest.approx(210.0)
    assert r150[col["energy_mj"]] == 20_000
    assert r150[col["throttle_reasons"]] == 0x4
    assert r150[col["proc_cpu_pct"]] == pytest.approx(150.0)
    assert r150[col["vram_total_mib"]] is None  # not scripted: empty cell, not 0


def test_rows_sorted_by_time_and_t0_is_first_sample():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 1000, 0, 2000)  # taken out of order
    assert [r[0] for r in s.rows()] == [ns(0), ns(1000), ns(2000)]
    assert s.t0_ns == ns(0)


def test_t0_ns_none_without_samples():
    s, _, _ = sampler_for(COUNTER)
    assert s.t0_ns is None and s.rows() == []


# --- window() context manager -----------------------------------------------------------------

class Boom(Exception):
    pass


def test_window_closes_when_the_block_raises():
    s, clock, _ = sampler_for(COUNTER)
    clock.at(0)
    with pytest.raises(Boom):
        with s.window("warmup"):
            clock.at(1000)
            raise Boom("engine failed")
    assert s.windows == [Window("warmup", ns(0), ns(1000), None)]
    assert len(s.samples) == 2
    assert s.summaries()["warmup"]["energy_j"] == pytest.approx(2.0)  # 3000 - 1000 mJ
    # the window is no longer open: ending it again fails
    with pytest.raises(KeyError):
        s.end_window("warmup")


def test_window_block_without_error():
    s, clock, _ = sampler_for(COUNTER)
    clock.at(0)
    with s.window("warmup"):
        clock.at(2000)
    assert s.windows == [Window("warmup", ns(0), ns(2000), None)]


def test_end_window_records_tokens_and_returns_window():
    s, clock, _ = sampler_for(COUNTER)
    clock.at(0)
    assert s.begin_window("decode") == ns(0)
    clock.at(1000)
    w = s.end_window("decode", tokens=42)
    assert w == Window("decode", ns(0), ns(1000), 42) and s.windows == [w]


# --- GPU lost, NVML errors, host only ---------------------------------------------------------

def test_gpu_lost_goes_partial_and_sampling_goes_on():
    host = FakeHost()
    s, clock, dev = sampler_for(COUNTER, host=host, lose_after=2)
    assert s.status == "ok" and s.error is None
    sample_at(s, clock, 0, 1000)
    assert s.status == "ok"
    sample_at(s, clock, 1500, 2000, 2500)  # the third read raises NvmlGpuLost: no exception here
    assert s.status == "partial"
    assert "lost" in s.error.lower()
    assert dev.reads == 3  # the lost device is not asked again
    assert host.reads == 5
    assert len(s.samples) == 5
    for row in s.samples[2:]:
        assert set(row) == {"t_ns", "kind", *HOST_READING}  # host readings, no GPU readings
        assert row["proc_cpu_pct"] == pytest.approx(150.0)
    assert s.samples[1]["energy_mj"] == 3000
    assert s.gpu is dev  # kept for its unsupported-metric reasons
    # energy still available where the GPU was sampled, unavailable after the loss
    assert s.energy_j(ns(0), ns(1000)) == (pytest.approx(2.0), "counter")
    assert s.energy_j(ns(0), ns(2000)) == (None, "unavailable")


def test_gpu_lost_during_a_window_still_closes_it():
    s, clock, _ = sampler_for(COUNTER, host=FakeHost(), lose_after=1)
    clock.at(0)
    s.begin_window("decode")
    clock.at(1000)
    s.end_window("decode", tokens=3)
    summary = s.summaries()["decode"]
    assert s.status == "partial"
    assert summary["n_samples"] == 2 and summary["energy_j"] is None and summary["tokens"] == 3


def test_other_nvml_error_also_stops_gpu_sampling():
    s, clock, dev = sampler_for(COUNTER, lose_after=1, error=NvmlError("Unknown Error", 999))
    sample_at(s, clock, 0, 1000, 2000)
    assert s.status == "partial" and "NVML error" in s.error and "Unknown Error" in s.error
    assert dev.reads == 2
    assert [set(r) for r in s.samples[1:]] == [{"t_ns", "kind"}] * 2


def test_host_only_status_without_device():
    clock = FakeClock()
    s = Sampler(100, None, FakeHost(), clock=clock)
    sample_at(s, clock, 0, 10)
    assert s.status == "host_only" and s.error is None
    assert s.samples[0] == {"t_ns": ns(0), "kind": "tick", **HOST_READING}
    assert s.counter_update_ms() is None
    assert s.energy_j(ns(0), ns(10)) == (None, "unavailable")


# --- other processes ------------------------------------------------------------------------------

def test_other_processes_union_with_max():
    script = {0: {"other_processes": [(456, 50.0), (123, 100.0)]},
              10: {"other_processes": [(123, 300.0)]},
              20: {"other_processes": None},
              30: {"other_processes": [(123, 200.0), (789, 1.5)]}}
    s, clock, _ = sampler_for(script)
    sample_at(s, clock, *script)
    assert s.other_processes() == [{"pid": 123, "vram_mib": 300.0}, {"pid": 456, "vram_mib": 50.0},
                                   {"pid": 789, "vram_mib": 1.5}]


def test_other_processes_empty():
    s, clock, _ = sampler_for(COUNTER)
    sample_at(s, clock, 0, 1000)
    assert s.other_processes() == []


# --- the background thread (real clock) -----------------------------------------------------------

def _telemetry_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "harness-telemetry" and t.is_alive()]


def test_background_thread_samples_and_stops():
    dev = ConstantDevice()
    s = Sampler(10, dev, FakeHost())
    before = set(_telemetry_threads())  # normally none; another test's leak is not this test's failure
    s.start()
    thread = s._thread
    try:
        assert thread is not None and thread.name == "harness-telemetry" and thread.is_alive()
        tick = threading.Event()
        deadline = time.monotonic() + 30
        while len([x for x in s.samples if x["kind"] == "tick"]) < 4 and time.monotonic() < deadline:
            tick.wait(0.01)
    finally:
        s.stop()
    assert not thread.is_alive()
    assert set(_telemetry_threads()) == before  # stop() joined the thread: none of ours is left
    assert s._thread is None
    ticks = [x for x in s.samples if x["kind"] == "tick"]
    assert len(ticks) >= 3
    times = [x["t_ns"] for x in s.samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert all(x["power_w"] == 100.0 and x["proc_cpu_pct"] == 150.0 for x in ticks)
    n, reads = len(s.samples), dev.reads
    threading.Event().wait(0.1)  # ten sampling periods: nothing may arrive after stop()
    assert len(s.samples) == n and dev.reads == reads
    # stop() is idempotent
    s.stop()
    assert len(s.samples) == n


def test_stop_without_start_is_harmless():
    s = Sampler(10, None, None)
    s.stop()
    assert s.samples == [] and s._thread is None


# --- decode_throttle --------------------------------------------------------------------------

@pytest.mark.parametrize("mask, names", [
    (0, []),
    (None, []),
    (0x4 | 0x40, ["sw_power_cap", "hw_thermal_slowdown"]),
    (0x40 | 0x4, ["sw_power_cap", "hw_thermal_slowdown"]),
    (0x1, ["gpu_idle"]),
    (0x200, ["0x200"]),
    (0x1 | 0x1000, ["gpu_idle", "0x1000"]),
    (0x1FF, list(THROTTLE_REASONS.values())),
    (0x4 | 0x200 | 0x400, ["sw_power_cap", "0x600"]),
])
def test_decode_throttle(mask, names):
    assert decode_throttle(mask) == names
