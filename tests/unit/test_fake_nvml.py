"""The fake libnvidia-ml.so.1 (tests/fakes/fake_nvml.c) driven through the REAL pynvml code path.

Each test writes a trace, runs `python -c CHILD` with LD_PRELOAD pointing at the fake, and compares
what pynvml returned (printed as JSON) with the trace data.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fakes"))
import fakenvml  # noqa: E402

pytest.importorskip("pynvml")
pytestmark = pytest.mark.skipif(fakenvml.find_compiler() is None,
                                reason="no C compiler (cc/gcc) to build the fake libnvidia-ml.so.1")

MIB = 1048576
S = 1_000_000  # ms per 1000 s

PRELUDE = textwrap.dedent("""
    import json, os, sys, time, threading
    import pynvml as N

    def call(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except N.NVMLError as e:
            return {"error": type(e).__name__, "value": e.value}

    out = {}
""")


@pytest.fixture(scope="session")
def fake_lib(tmp_path_factory) -> Path:
    t = time.perf_counter()
    lib = fakenvml.build(tmp_path_factory.mktemp("fakenvml"))
    print(f"built {lib} in {time.perf_counter() - t:.2f}s")
    return lib


def run_child(body: str, lib: Path, trace: Path | None, t0_ns: int | None = None, timeout: float = 60):
    """Run PRELUDE + body in a fresh interpreter with the fake preloaded; (json from stdout, proc)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML_") and k != "LD_PRELOAD"}
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
                          env={**base, **fakenvml.env(lib, trace, t0_ns)},
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"child printed nothing; stderr:\n{proc.stderr}"
    return json.loads(lines[-1]), proc


def ms_since(t0_ns: int, ns: int) -> float:
    return (ns - t0_ns) / 1e6


H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555",
        "memory_total_mib": 81559, "power_limit_w": 700, "bus_width": 5120, "max_mem_clock_mhz": 2619,
        "max_sm_clock_mhz": 1980, "fans": 2, "energy_offset_mj": 1_000_000}
L4 = {"name": "NVIDIA L4", "uuid": "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "memory_total_mib": 22491,
      "power_limit_w": 72.5, "bus_width": 192, "max_mem_clock_mhz": 6251, "max_sm_clock_mhz": 2040, "fans": 4}
NOFAN = {"name": "Fanless", "uuid": "GPU-fan-less", "memory_total_mib": 1024, "fans": 0}

ROWS = [
    {"t_ms": 0, "gpu": 0, "util_gpu": 3, "util_mem": 1, "mem_used_mib": 512, "power_w": 70.25, "temp_c": 35,
     "sm_clock_mhz": 345, "mem_clock_mhz": 1593, "fan_pct": 30, "pstate": 8, "throttle": 0x1},
    {"t_ms": 1 * S, "gpu": 0, "util_gpu": 95, "util_mem": 40, "mem_used_mib": 2048, "power_w": 350.5,
     "temp_c": 61, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "fan_pct": 55, "pstate": 0, "throttle": 0x4},
    {"t_ms": 10 * S, "gpu": 0, "util_gpu": 0, "power_w": 60},  # other readings carried forward
    {"t_ms": 0, "gpu": 1, "util_gpu": 7, "util_mem": 2, "mem_used_mib": 100, "power_w": 16.5, "temp_c": -3,
     "sm_clock_mhz": 210, "mem_clock_mhz": 405, "fan_pct": 12, "pstate": 12, "throttle": 0},
]
ROWS0 = [r for r in ROWS if r["gpu"] == 0]


# ---------------------------------------------------------------- readings

READ_ALL = """
    N.nvmlInit()
    out["driver"] = N.nvmlSystemGetDriverVersion()
    out["nvml_version"] = N.nvmlSystemGetNVMLVersion()
    out["cuda"] = N.nvmlSystemGetCudaDriverVersion()
    out["cuda_v2"] = N.nvmlSystemGetCudaDriverVersion_v2()
    out["count"] = N.nvmlDeviceGetCount()
    out["tb"] = time.monotonic_ns()
    gpus = []
    for i in range(out["count"]):
        h = N.nvmlDeviceGetHandleByIndex(i)
        g = {}
        g["index"] = N.nvmlDeviceGetIndex(h)
        g["name"] = N.nvmlDeviceGetName(h)
        g["uuid"] = N.nvmlDeviceGetUUID(h)
        g["by_uuid_index"] = N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(g["uuid"]))
        m = N.nvmlDeviceGetMemoryInfo(h)
        g["mem"] = [m.total, m.used, m.free]
        m2 = N.nvmlDeviceGetMemoryInfo(h, version=N.nvmlMemory_v2)
        g["mem_v2"] = [m2.version, m2.total, m2.reserved, m2.used, m2.free]
        u = N.nvmlDeviceGetUtilizationRates(h)
        g["util"] = [u.gpu, u.memory]
        nf = call(N.nvmlDeviceGetNumFans, h)
        g["num_fans"] = nf
        g["fans"] = [N.nvmlDeviceGetFanSpeed_v2(h, f) for f in range(nf)] if isinstance(nf, int) else None
        g["fan_v1"] = call(N.nvmlDeviceGetFanSpeed, h)
        g["fan0_v2"] = call(N.nvmlDeviceGetFanSpeed_v2, h, 0)
        g["fan_out_of_range"] = call(N.nvmlDeviceGetFanSpeed_v2, h, 99)
        g["temp"] = N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU)
        g["temp_v"] = N.nvmlDeviceGetTemperatureV(h, N.NVML_TEMPERATURE_GPU)
        g["power"] = N.nvmlDeviceGetPowerUsage(h)
        fv = N.nvmlDeviceGetFieldValues(h, [N.NVML_FI_DEV_POWER_INSTANT, N.NVML_FI_DEV_POWER_AVERAGE])
        g["fields"] = [[v.fieldId, v.nvmlReturn, v.valueType, v.value.uiVal, v.timestamp] for v in fv]
        g["energy"] = N.nvmlDeviceGetTotalEnergyConsumption(h)
        g["clocks"] = [N.nvmlDeviceGetClockInfo(h, c) for c in (N.NVML_CLOCK_GRAPHICS, N.NVML_CLOCK_SM, N.NVML_CLOCK_MEM)]
        g["max_clocks"] = [N.nvmlDeviceGetMaxClockInfo(h, c) for c in (N.NVML_CLOCK_GRAPHICS, N.NVML_CLOCK_SM, N.NVML_CLOCK_MEM)]
        g["pstate"] = N.nvmlDeviceGetPerformanceState(h)
        g["events"] = N.nvmlDeviceGetCurrentClocksEventReasons(h)
        g["throttle"] = N.nvmlDeviceGetCurrentClocksThrottleReasons(h)
        g["procs"] = [[p.pid, p.usedGpuMemory] for p in N.nvmlDeviceGetComputeRunningProcesses(h)]
        g["bus_width"] = N.nvmlDeviceGetMemoryBusWidth(h)
        g["enforced_limit"] = N.nvmlDeviceGetEnforcedPowerLimit(h)
        g["mgmt_limit"] = N.nvmlDeviceGetPowerManagementLimit(h)
        gpus.append(g)
    out["ta"] = time.monotonic_ns()
    out["gpus"] = gpus
    out["bad_uuid"] = call(N.nvmlDeviceGetHandleByUUID, "GPU-does-not-exist")
    out["bad_index"] = call(N.nvmlDeviceGetHandleByIndex, 3)
    N.nvmlShutdown()
    print(json.dumps(out))
"""


def test_readings_equal_the_trace(fake_lib, tmp_path):
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100, L4, NOFAN], ROWS,
                                 notsupported=[(1, "fan"), (1, "power_instant")])
    t0 = time.monotonic_ns() - 1500 * 10**9  # the child reads at t ~ 1.5e6 ms: ROWS[1] for gpu 0
    out, proc = run_child(READ_ALL, fake_lib, trace, t0)
    assert proc.stderr == ""
    assert out["driver"] == "550.54.15-fake"
    assert out["cuda"] == out["cuda_v2"] == 12040
    assert "550.54.15" in out["nvml_version"]
    assert out["count"] == 3
    assert out["bad_uuid"]["error"] == "NVMLError_NotFound"
    assert out["bad_index"]["error"] == "NVMLError_InvalidArgument"
    tb, ta = ms_since(t0, out["tb"]), ms_since(t0, out["ta"])
    for i, (spec, g) in enumerate(zip([H100, L4, NOFAN], out["gpus"])):
        r = fakenvml.reading_at(ROWS, i, tb)
        assert r == fakenvml.reading_at(ROWS, i, ta), "the child's reads straddled a row change"
        assert g["index"] == g["by_uuid_index"] == i
        assert g["name"] == spec["name"] and g["uuid"] == spec["uuid"]
        total, used = spec["memory_total_mib"] * MIB, r["mem_used_mib"] * MIB
        assert g["mem"] == [total, used, total - used]
        assert g["mem_v2"] == [0x02000028, total, 0, used, total - used]
        assert g["util"] == [r["util_gpu"], r["util_mem"]]
        assert g["temp"] % 2**32 == r["temp_c"] % 2**32  # GetTemperature is unsigned in the ABI
        assert g["temp_v"] == r["temp_c"]
        mw = round(r["power_w"] * 1000)
        assert g["power"] == mw
        assert g["clocks"] == [r["sm_clock_mhz"], r["sm_clock_mhz"], r["mem_clock_mhz"]]
        assert g["max_clocks"] == [spec.get("max_sm_clock_mhz", 0)] * 2 + [spec.get("max_mem_clock_mhz", 0)]
        assert g["pstate"] == r["pstate"]
        assert g["events"] == g["throttle"] == r["throttle"]
        assert g["procs"] == []
        assert g["bus_width"] == spec.get("bus_width", 0)
        assert g["enforced_limit"] == g["mgmt_limit"] == round(spec.get("power_limit_w", 0) * 1000)
        (inst, avg) = g["fields"]
        assert inst[0] == 186 and avg[0] == 185
        assert avg[1] == 3  # unknown field id: NOT_SUPPORTED in the per-field result
        assert abs(inst[4] / 1e6 - time.time()) < 120  # wall-clock microseconds
        if i == 1:  # notsupported power_instant: only the field
            assert inst[1] == 3
        else:
            assert inst[1:4] == [0, 1, mw]
        if i == 0:
            assert g["num_fans"] == 2 and g["fans"] == [r["fan_pct"]] * 2 and g["fan_v1"] == r["fan_pct"]
            assert g["fan_out_of_range"]["error"] == "NVMLError_InvalidArgument"
        else:  # gpu 1: `notsupported fan` despite fans=4; gpu 2: fans=0
            assert g["num_fans"]["error"] == g["fan_v1"]["error"] == "NVMLError_NotSupported"
            assert g["fan0_v2"]["error"] == "NVMLError_NotSupported"
    # the readings the test itself expected: gpu 0 is in its second row
    assert out["gpus"][0]["util"] == [95, 40] and out["gpus"][0]["power"] == 350500
    assert out["gpus"][1]["temp_v"] == -3 and out["gpus"][1]["enforced_limit"] == 72500


@pytest.mark.parametrize("t_s, row", [(-1000, 0), (500, 0), (1500, 1), (20000, 2)])
def test_rows_are_piecewise_constant(fake_lib, tmp_path, t_s, row):
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100], ROWS0)
    t0 = time.monotonic_ns() - t_s * 10**9
    out, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        u = N.nvmlDeviceGetUtilizationRates(h)
        out = {"util": u.gpu, "power": N.nvmlDeviceGetPowerUsage(h), "temp": N.nvmlDeviceGetTemperature(h, 0),
               "pstate": N.nvmlDeviceGetPerformanceState(h), "fan": N.nvmlDeviceGetFanSpeed_v2(h, 1)}
        print(json.dumps(out))
    """, fake_lib, trace, t0)
    src = ROWS[row]
    assert out["util"] == src["util_gpu"]
    assert out["power"] == round(src["power_w"] * 1000)
    # the third row gives only util_gpu and power_w; the rest carries forward from the second
    carried = ROWS[1] if row == 2 else src
    assert out["temp"] == carried["temp_c"]
    assert out["pstate"] == carried["pstate"]
    assert out["fan"] == carried["fan_pct"]


def test_t0_defaults_to_first_init(fake_lib, tmp_path):
    rows = [{"t_ms": 0, "util_gpu": 10, "power_w": 100}, {"t_ms": 60_000, "util_gpu": 90, "power_w": 100}]
    trace = fakenvml.write_trace(tmp_path / "t.trace", [{"energy_offset_mj": 5000}], rows)
    out, _ = run_child("""
        time.sleep(0.3)  # time before init does not count
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        t = time.monotonic_ns()
        e = N.nvmlDeviceGetTotalEnergyConsumption(h)
        out = {"util": N.nvmlDeviceGetUtilizationRates(h).gpu, "energy": e}
        print(json.dumps(out))
    """, fake_lib, trace, None)
    assert out["util"] == 10
    # 100 W for well under 0.3 s since init: 5000 <= e < 5000 + 30000 mJ
    assert 5000 <= out["energy"] < 5000 + 30_000


# ---------------------------------------------------------------- energy

ENERGY_ROWS = [{"t_ms": 200_000, "power_w": 100}, {"t_ms": 1 * S, "power_w": 300.25},
               {"t_ms": 10 * S, "power_w": 50}]


def test_energy_is_the_integral_of_power(fake_lib, tmp_path):
    offset = 1_000_000
    trace = fakenvml.write_trace(tmp_path / "t.trace", [{"energy_offset_mj": offset}], ENERGY_ROWS)
    t0 = time.monotonic_ns() - 1500 * 10**9
    out, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        s = []
        for _ in range(30):
            tb = time.monotonic_ns(); e = N.nvmlDeviceGetTotalEnergyConsumption(h); ta = time.monotonic_ns()
            s.append([tb, e, ta])
            time.sleep(0.005)
        print(json.dumps(s))
    """, fake_lib, trace, t0)
    energies = [e for _, e, _ in out]
    assert all(b >= a for a, b in zip(energies, energies[1:])), "energy counter went backwards"
    assert energies[-1] > energies[0]
    for tb, e, ta in out:
        lo = fakenvml.energy_counter_mj(ENERGY_ROWS, 0, ms_since(t0, tb), offset)
        hi = fakenvml.energy_counter_mj(ENERGY_ROWS, 0, ms_since(t0, ta), offset)
        assert lo - 1 <= e <= hi + 1
    # the power before the first row is the first row's; 300.25 W after t = 1e6 ms
    assert energies[0] > offset + 100 * 1 * S + 300.25 * 499_000
    (tb0, e0, _), (_, e1, ta1) = out[0], out[-1]
    dj = fakenvml.expected_energy_j(ENERGY_ROWS, 0, ms_since(t0, tb0), ms_since(t0, ta1))
    assert (e1 - e0) / 1000 <= dj + 0.002


@pytest.mark.parametrize("update_ms, t_q", [(1 * S, 1 * S), (700_000, 1_400_000), (400_000, 1_200_000)])
def test_energy_update_ms_quantises_the_counter(fake_lib, tmp_path, update_ms, t_q):
    offset = 7
    trace = fakenvml.write_trace(tmp_path / "t.trace", [{"energy_offset_mj": offset}, {}],
                                 ENERGY_ROWS, energy_update_ms={0: update_ms})
    t0 = time.monotonic_ns() - 1500 * 10**9  # t ~ 1.5e6 ms: quantised down to t_q
    out, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        a = N.nvmlDeviceGetTotalEnergyConsumption(h)
        time.sleep(0.05)
        b = N.nvmlDeviceGetTotalEnergyConsumption(h)
        print(json.dumps([a, b, N.nvmlDeviceGetTotalEnergyConsumption(N.nvmlDeviceGetHandleByIndex(1))]))
    """, fake_lib, trace, t0)
    a, b, other = out
    expected = math.floor(fakenvml.energy_counter_mj(ENERGY_ROWS, 0, t_q, offset))
    assert a == b == expected
    assert expected == math.floor(fakenvml.energy_counter_mj(ENERGY_ROWS, 0, 1_500_000, offset, update_ms))
    assert other == 0  # gpu 1 has no rows: the counter stays at its offset


def test_energy_update_steps(fake_lib, tmp_path):
    rows = [{"t_ms": 0, "power_w": 250}]
    trace = fakenvml.write_trace(tmp_path / "t.trace", [{}], rows, energy_update_ms=50)
    t0 = time.monotonic_ns()
    out, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        s = []
        end = time.monotonic() + 0.4
        while time.monotonic() < end:
            tb = time.monotonic_ns(); e = N.nvmlDeviceGetTotalEnergyConsumption(h); ta = time.monotonic_ns()
            s.append([tb, e, ta])
            time.sleep(0.002)
        print(json.dumps(s))
    """, fake_lib, trace, t0)
    values = [e for _, e, _ in out]
    assert len(set(values)) >= 3, "the counter should step every 50 ms"
    for tb, e, ta in out:
        allowed = {math.floor(fakenvml.energy_counter_mj(rows, 0, ms_since(t0, t), 0, 50)) for t in (tb, ta)}
        assert e in allowed
        assert e % (250 * 50) == 0  # 250 W * k * 50 ms


# ---------------------------------------------------------------- not supported / lost / errors

NS_CALLS = {
    "fan": "N.nvmlDeviceGetFanSpeed_v2(h, 0)",
    "power": "N.nvmlDeviceGetPowerUsage(h)",
    "energy": "N.nvmlDeviceGetTotalEnergyConsumption(h)",
    "temperature": "N.nvmlDeviceGetTemperature(h, 0)",
    "utilization": "N.nvmlDeviceGetUtilizationRates(h).gpu",
    "clocks": "N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM)",
    "pstate": "N.nvmlDeviceGetPerformanceState(h)",
    "throttle": "N.nvmlDeviceGetCurrentClocksEventReasons(h)",
    "processes": "len(N.nvmlDeviceGetComputeRunningProcesses(h))",
    "memory": "N.nvmlDeviceGetMemoryInfo(h).total",
    "bus_width": "N.nvmlDeviceGetMemoryBusWidth(h)",
    "max_clocks": "N.nvmlDeviceGetMaxClockInfo(h, N.NVML_CLOCK_MEM)",
    "power_limit": "N.nvmlDeviceGetEnforcedPowerLimit(h)",
    "power_instant": "N.nvmlDeviceGetFieldValues(h, [N.NVML_FI_DEV_POWER_INSTANT])[0].nvmlReturn",
}


def test_every_metric_has_a_probe():
    assert set(NS_CALLS) == set(fakenvml.METRICS)


@pytest.mark.parametrize("metric", sorted(NS_CALLS))
def test_notsupported(fake_lib, tmp_path, metric):
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100, H100 | {"uuid": "GPU-2"}],
                                 ROWS0 + [dict(r, gpu=1) for r in ROWS0],
                                 notsupported=[(0, metric)])
    out, _ = run_child(f"""
        N.nvmlInit()
        for i in range(2):
            h = N.nvmlDeviceGetHandleByIndex(i)
            out[i] = call(lambda: {NS_CALLS[metric]})
            out[f"power{{i}}"] = call(N.nvmlDeviceGetPowerUsage, h)
        print(json.dumps(out))
    """, fake_lib, trace, time.monotonic_ns())
    if metric == "power_instant":  # a per-field result, and GetPowerUsage still works
        assert out["0"] == 3 and out["1"] == 0
        assert out["power0"] == out["power1"] == 70250
    else:
        assert out["0"] == {"error": "NVMLError_NotSupported", "value": 3}
        assert not isinstance(out["1"], dict), out["1"]
        assert out["power1"] == 70250
        if metric != "power":
            assert out["power0"] == 70250


def test_fail_after_loses_the_gpu(fake_lib, tmp_path):
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100, L4], ROWS, fail_after={0: 5})
    out, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        h1 = N.nvmlDeviceGetHandleByIndex(1)
        r = [call(N.nvmlDeviceGetName, h) for _ in range(3)]
        r += [call(N.nvmlDeviceGetPowerUsage, h) for _ in range(2)]
        r += [call(N.nvmlDeviceGetMemoryInfo, h), call(N.nvmlDeviceGetName, h), call(N.nvmlDeviceGetPowerUsage, h)]
        out["r"] = [x if isinstance(x, dict) else "ok" for x in r]
        out["handle_after"] = call(N.nvmlDeviceGetHandleByIndex, 0)
        out["handle_after"] = out["handle_after"] if isinstance(out["handle_after"], dict) else "ok"
        out["other_gpu"] = [call(N.nvmlDeviceGetName, h1) for _ in range(10)]
        print(json.dumps(out))
    """, fake_lib, trace, time.monotonic_ns())
    lost = {"error": "NVMLError_GpuIsLost", "value": 15}
    assert out["r"] == ["ok"] * 5 + [lost] * 3
    assert out["handle_after"] == lost
    assert out["other_gpu"] == [L4["name"]] * 10


def test_call_counting_is_thread_safe(fake_lib, tmp_path):
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100], ROWS0, fail_after={0: 4000})
    out, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        errors, energies = [], [[] for _ in range(8)]
        def work(k):
            for j in range(500):
                try:
                    if j % 2:
                        energies[k].append(N.nvmlDeviceGetTotalEnergyConsumption(h))
                    else:
                        N.nvmlDeviceGetPowerUsage(h)
                except N.NVMLError as e:
                    errors.append(e.value)
        ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        [t.start() for t in ts]; [t.join() for t in ts]
        out["errors"] = errors
        out["monotonic"] = all(b >= a for e in energies for a, b in zip(e, e[1:]))
        out["next"] = call(N.nvmlDeviceGetPowerUsage, h)
        print(json.dumps(out))
    """, fake_lib, trace, time.monotonic_ns())
    assert out["errors"] == []  # exactly 4000 calls succeed...
    assert out["monotonic"]
    assert out["next"] == {"error": "NVMLError_GpuIsLost", "value": 15}  # ...and the 4001st does not


def test_no_trace_is_library_not_found(fake_lib, tmp_path):
    good = fakenvml.write_trace(tmp_path / "t.trace", [H100], ROWS0)
    body = """
        out["first"] = call(N.nvmlInit)
        out["device_call"] = call(N.nvmlDeviceGetCount)
        os.environ["FAKE_NVML_TRACE"] = %r
        out["retry"] = call(N.nvmlInit)
        out["name"] = N.nvmlDeviceGetName(N.nvmlDeviceGetHandleByIndex(0))
        print(json.dumps(out))
    """ % str(good)
    for trace in (None, tmp_path / "missing.trace"):
        out, proc = run_child(body, fake_lib, trace)
        assert out["first"] == {"error": "NVMLError_LibraryNotFound", "value": 12}
        assert out["device_call"]["error"] == "NVMLError_Uninitialized"
        # the fake (not a missing library) answered: with a trace the same process initialises
        assert out["retry"] is None and out["name"] == H100["name"]
        assert proc.stderr == ""


@pytest.mark.parametrize("bad", [
    "bogus 0",
    "at 10 0 util_gpu=abc",
    "at 10 0 volts=3",
    "at -5 0 util_gpu=1",
    "at 10 3 util_gpu=1",
    "notsupported 0 smell",
    'gpu 1 name="unterminated',
    "gpu 0 name=again",
    "gpu 2 name=gap",
    "gpu 9 name=too-many",
    "fail_after 0",
    "process 0 someone 10",
    "at 10 0 power_w=-1",
])
def test_malformed_trace_fails_init_naming_the_line(fake_lib, tmp_path, bad):
    trace = fakenvml.write_trace(tmp_path / "bad.trace", [H100], ROWS[:2], extra_lines=["", "# ok", bad])
    lineno = len(trace.read_text().splitlines())
    out, proc = run_child("""
        out["init"] = call(N.nvmlInit)
        print(json.dumps(out))
    """, fake_lib, trace)
    assert out["init"] == {"error": "NVMLError_Unknown", "value": 999}
    err = proc.stderr.splitlines()
    assert len(err) == 1, proc.stderr
    assert f"{trace}:{lineno}:" in err[0]


def test_quoting_and_comments(fake_lib, tmp_path):
    trace = tmp_path / "q.trace"
    trace.write_text('# header\n'
                     'gpu 0 name="Big \\"Quoted\\" GPU # not a comment" uuid=GPU-q  # a comment\n'
                     '   \n'
                     'at 0 0 throttle=0x44 util_gpu=12\n')
    out, proc = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps([N.nvmlDeviceGetName(h), N.nvmlDeviceGetUUID(h),
                          N.nvmlDeviceGetCurrentClocksEventReasons(h), N.nvmlDeviceGetUtilizationRates(h).gpu]))
    """, fake_lib, trace)
    assert out == ['Big "Quoted" GPU # not a comment', "GPU-q", 0x44, 12]
    # write_trace quotes the same way
    t2 = fakenvml.write_trace(tmp_path / "w.trace", [{"name": 'Big "Quoted" GPU # not a comment', "uuid": "GPU-q"}],
                              [{"t_ms": 0, "throttle": 0x44, "util_gpu": 12}])
    out2, _ = run_child("""
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        print(json.dumps([N.nvmlDeviceGetName(h), N.nvmlDeviceGetUUID(h),
                          N.nvmlDeviceGetCurrentClocksEventReasons(h), N.nvmlDeviceGetUtilizationRates(h).gpu]))
    """, fake_lib, t2)
    assert out2 == out


def test_shutdown_and_reinit(fake_lib, tmp_path):
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100], ROWS0)
    out, _ = run_child("""
        N.nvmlInit(); N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        N.nvmlShutdown()
        out["after_one_shutdown"] = N.nvmlDeviceGetName(h)
        N.nvmlShutdown()
        out["after_two"] = call(N.nvmlDeviceGetName, h)
        out["extra_shutdown"] = call(N.nvmlShutdown)
        N.nvmlInit()
        out["reinit"] = N.nvmlDeviceGetName(h)
        print(json.dumps(out))
    """, fake_lib, trace)
    assert out["after_one_shutdown"] == H100["name"] == out["reinit"]
    assert out["after_two"]["error"] == out["extra_shutdown"]["error"] == "NVMLError_Uninitialized"


# ---------------------------------------------------------------- processes

def test_processes(fake_lib, tmp_path):
    procs = [(0, "self", 1024), (0, 4242, 512)] + [(0, 10_000 + k, k) for k in range(20)]
    trace = fakenvml.write_trace(tmp_path / "t.trace", [H100, L4], ROWS, processes=procs)
    out, _ = run_child("""
        import ctypes
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        out["pid"] = os.getpid()
        out["v3"] = [[p.pid, p.usedGpuMemory, p.gpuInstanceId, p.computeInstanceId]
                     for p in N.nvmlDeviceGetComputeRunningProcesses(h)]
        out["v2"] = [[p.pid, p.usedGpuMemory] for p in N.nvmlDeviceGetComputeRunningProcesses_v2(h)]
        out["graphics"] = N.nvmlDeviceGetGraphicsRunningProcesses(h)
        out["gpu1"] = N.nvmlDeviceGetComputeRunningProcesses(N.nvmlDeviceGetHandleByIndex(1))
        # the size protocol, called directly: too small a buffer -> INSUFFICIENT_SIZE and the needed count
        fn = N._nvmlGetFunctionPointer("nvmlDeviceGetComputeRunningProcesses_v3")
        count = ctypes.c_uint(1)
        buf = (N.c_nvmlProcessInfo_v3_t * 1)()
        out["small"] = [fn(h, ctypes.byref(count), buf), count.value]
        print(json.dumps(out))
    """, fake_lib, trace)
    expected = [[out["pid"] if pid == "self" else pid, mib * MIB] for _, pid, mib in procs]
    assert [p[:2] for p in out["v3"]] == expected == out["v2"]
    assert out["v3"][0][0] == out["pid"] != os.getpid()
    assert all(p[2] == p[3] == 0xFFFFFFFF for p in out["v3"])
    assert out["graphics"] == [] and out["gpu1"] == []
    assert out["small"] == [7, len(procs)]


# ---------------------------------------------------------------- the library itself

def test_exports_what_pynvml_looks_up(fake_lib):
    import ctypes

    lib = ctypes.CDLL(str(fake_lib))
    needed = """nvmlInit nvmlInit_v2 nvmlInitWithFlags nvmlShutdown nvmlErrorString nvmlSystemGetDriverVersion
        nvmlSystemGetNVMLVersion nvmlSystemGetCudaDriverVersion nvmlSystemGetCudaDriverVersion_v2
        nvmlDeviceGetCount_v2 nvmlDeviceGetHandleByIndex_v2 nvmlDeviceGetHandleByUUID nvmlDeviceGetIndex
        nvmlDeviceGetName nvmlDeviceGetUUID nvmlDeviceGetMemoryInfo nvmlDeviceGetMemoryInfo_v2
        nvmlDeviceGetUtilizationRates nvmlDeviceGetNumFans nvmlDeviceGetFanSpeed nvmlDeviceGetFanSpeed_v2
        nvmlDeviceGetTemperature nvmlDeviceGetTemperatureV nvmlDeviceGetPowerUsage nvmlDeviceGetFieldValues
        nvmlDeviceGetTotalEnergyConsumption nvmlDeviceGetClockInfo nvmlDeviceGetMaxClockInfo
        nvmlDeviceGetPerformanceState nvmlDeviceGetCurrentClocksEventReasons
        nvmlDeviceGetCurrentClocksThrottleReasons nvmlDeviceGetComputeRunningProcesses_v3
        nvmlDeviceGetComputeRunningProcesses_v2 nvmlDeviceGetGraphicsRunningProcesses_v3
        nvmlDeviceGetGraphicsRunningProcesses_v2 nvmlDeviceGetMemoryBusWidth nvmlDeviceGetEnforcedPowerLimit
        nvmlDeviceGetPowerManagementLimit""".split()
    missing = [n for n in needed if not hasattr(lib, n)]
    assert missing == []
    lib.nvmlErrorString.restype = ctypes.c_char_p
    assert lib.nvmlErrorString(15) == b"GPU is lost"


def test_build_is_cached(fake_lib):
    stamp = fake_lib.with_name(fake_lib.name + ".sha256")
    assert stamp.is_file() and len(stamp.read_text().strip()) == 64
    before = fake_lib.stat().st_mtime_ns
    assert fakenvml.build(fake_lib.parent) == fake_lib
    assert fake_lib.stat().st_mtime_ns == before


def test_build_reports_compiler_errors(tmp_path, monkeypatch):
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undeclared; }\n")
    monkeypatch.setattr(fakenvml, "SOURCE", broken)
    with pytest.raises(RuntimeError, match="undeclared"):
        fakenvml.build(tmp_path / "out")
    assert not (tmp_path / "out" / fakenvml.LIB_NAME).exists()


def test_expected_energy_j():
    rows = [{"t_ms": 1000, "power_w": 10}, {"t_ms": 3000, "power_w": 20}]
    # before the first row the first row's power applies
    assert fakenvml.expected_energy_j(rows, 0, 0, 1000) == pytest.approx(10.0)
    assert fakenvml.expected_energy_j(rows, 0, 500, 4000) == pytest.approx(10 * 2.5 + 20 * 1)
    assert fakenvml.expected_energy_j(rows, 0, 500, 4000, energy_update_ms=1000) == pytest.approx(10 * 3 + 20 * 1)
    assert fakenvml.expected_energy_j(rows, 1, 0, 4000) == 0.0
