"""Build and drive the fake libnvidia-ml.so.1 (fake_nvml.c) from tests. Standard library only.

Typical use::

    lib = fakenvml.build(tmp_dir)                      # compiles once per source hash
    gpus = [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1111", "memory_total_mib": 81559,
             "power_limit_w": 700}]
    rows = [{"t_ms": 0, "gpu": 0, "power_w": 100, "util_gpu": 5},
            {"t_ms": 1000, "gpu": 0, "power_w": 350.5, "util_gpu": 95}]
    fakenvml.write_trace(trace, gpus, rows, notsupported=[(0, "fan")])
    t0 = time.monotonic_ns()
    subprocess.run([...], env={**os.environ, **fakenvml.env(lib, trace, t0_ns=t0)})
    fakenvml.expected_energy_j(rows, 0, 0, 1500)       # == 100*1 + 350.5*0.5 J

The trace format is described in tests/fakes/README.md.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Sequence

SOURCE = Path(__file__).resolve().with_name("fake_nvml.c")
LIB_NAME = "libnvidia-ml.so.1"
CFLAGS = ["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-pthread", "-Wl,-soname," + LIB_NAME]

GPU_KEYS = ("name", "uuid", "memory_total_mib", "power_limit_w", "bus_width", "max_mem_clock_mhz",
            "max_sm_clock_mhz", "fans", "energy_offset_mj")
READING_KEYS = ("util_gpu", "util_mem", "mem_used_mib", "power_w", "temp_c", "sm_clock_mhz",
                "mem_clock_mhz", "fan_pct", "pstate", "throttle")
METRICS = ("fan", "power_instant", "power", "energy", "temperature", "utilization", "clocks", "pstate",
           "throttle", "processes", "memory", "bus_width", "max_clocks", "power_limit")
MAX_GPUS = 8


# ---------------------------------------------------------------- building

def find_compiler() -> str | None:
    """$CC if set and found, else `cc`, else `gcc`; None when there is no C compiler."""
    for cand in (os.environ.get("CC"), "cc", "gcc"):
        if cand:
            path = shutil.which(cand)
            if path:
                return path
    return None


def build(out_dir: Path) -> Path:
    """Compile fake_nvml.c into OUT_DIR/libnvidia-ml.so.1 and return its path.

    Skips the compile when OUT_DIR/libnvidia-ml.so.1.sha256 records the same hash of
    (source, compiler, flags). Raises RuntimeError (with the compiler's stderr) on failure.
    """
    compiler = find_compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (tried $CC, cc, gcc)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / LIB_NAME
    stamp = out_dir / (LIB_NAME + ".sha256")
    h = hashlib.sha256(SOURCE.read_bytes())
    h.update("\0".join([compiler, *CFLAGS]).encode())
    digest = h.hexdigest()
    if lib.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
        return lib
    # compile next to the target, then rename: concurrent builders never see a half-written file
    fd, tmp = tempfile.mkstemp(prefix=".libnvidia-ml.", suffix=".so", dir=out_dir)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *CFLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"building {LIB_NAME} failed ({compiler}, exit {proc.returncode}):\n{proc.stderr}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    stamp.write_text(digest + "\n")
    return lib


def env(lib_path, trace_path, t0_ns: int | None = None) -> dict:
    """Environment variables for a child process that should see the fake.

    trace_path None leaves FAKE_NVML_TRACE out (the fake then behaves like "no driver").
    t0_ns None leaves FAKE_NVML_T0_NS out (T0 = the child's first successful nvmlInit).
    Merge into a copy of os.environ and drop FAKE_NVML_* keys you did not mean to inherit.
    """
    out = {"LD_PRELOAD": str(lib_path)}
    if trace_path is not None:
        out["FAKE_NVML_TRACE"] = str(trace_path)
    if t0_ns is not None:
        out["FAKE_NVML_T0_NS"] = str(int(t0_ns))
    return out


# ---------------------------------------------------------------- writing traces

def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not a finite number: {v}")
        return repr(v)
    s = str(v)
    if s == "" or any(c in s for c in ' \t"#\\'):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def _kv(d: Mapping, allowed: Sequence[str], what: str) -> str:
    parts = []
    for k, v in d.items():
        if k not in allowed:
            raise ValueError(f"unknown {what} key {k!r} (allowed: {', '.join(allowed)})")
        if k == "throttle" and isinstance(v, int):
            parts.append(f"throttle={v:#x}")
        else:
            parts.append(f"{k}={_fmt(v)}")
    return " ".join(parts)


def _per_gpu(value, n_gpus: int) -> dict[int, int]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {int(k): int(v) for k, v in value.items()}
    return {i: int(value) for i in range(n_gpus)}


def write_trace(path, gpus: Sequence[Mapping], rows: Iterable[Mapping] = (), *,
                notsupported: Iterable[tuple[int, str]] = (),
                fail_after: Mapping[int, int] | int | None = None,
                energy_update_ms: Mapping[int, int] | int | None = None,
                processes: Iterable[tuple[int, int | str, int]] = (),
                extra_lines: Iterable[str] = ()) -> Path:
    """Write a trace file and return its path.

    gpus:  one dict per gpu, gpu i = gpus[i]; keys from GPU_KEYS (all optional).
    rows:  `at` rows: dicts with "t_ms", "gpu" (default 0) and any of READING_KEYS.
           A row that omits a reading keeps the previous row's value (first row: 0).
    notsupported: (gpu, metric) pairs, metric from METRICS.
    fail_after / energy_update_ms: {gpu: n}, or one int for every gpu.
    processes: (gpu, pid or "self", used_mib) triples.
    extra_lines: raw lines appended verbatim (e.g. to write a malformed trace).
    """
    if len(gpus) > MAX_GPUS:
        raise ValueError(f"at most {MAX_GPUS} gpus")
    lines = ["# written by tests/fakes/fakenvml.py"]
    for i, g in enumerate(gpus):
        kv = _kv(g, GPU_KEYS, "gpu")
        lines.append(f"gpu {i} {kv}".rstrip())
    for gpu, metric in notsupported:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r} (allowed: {', '.join(METRICS)})")
        lines.append(f"notsupported {int(gpu)} {metric}")
    for gpu, n in _per_gpu(fail_after, len(gpus)).items():
        lines.append(f"fail_after {gpu} {n}")
    for gpu, ms in _per_gpu(energy_update_ms, len(gpus)).items():
        lines.append(f"energy_update_ms {gpu} {ms}")
    for gpu, pid, used_mib in processes:
        lines.append(f"process {int(gpu)} {pid if pid == 'self' else int(pid)} {int(used_mib)}")
    for r in rows:
        r = dict(r)
        t = r.pop("t_ms")
        gpu = int(r.pop("gpu", 0))
        lines.append(f"at {_fmt(t)} {gpu} {_kv(r, READING_KEYS, 'reading')}".rstrip())
    lines.extend(extra_lines)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- expectations

def _gpu_rows(trace_rows: Iterable[Mapping], gpu: int) -> list[dict]:
    """The gpu's rows sorted by time (stable), omitted readings carried forward (first row: 0)."""
    mine = sorted((r for r in trace_rows if int(r.get("gpu", 0)) == gpu), key=lambda r: r["t_ms"])
    out, prev = [], {k: 0 for k in READING_KEYS}
    for r in mine:
        cur = {**prev, **{k: v for k, v in r.items() if k in READING_KEYS}}
        cur["t_ms"] = r["t_ms"]
        out.append(cur)
        prev = cur
    return out


def reading_at(trace_rows: Iterable[Mapping], gpu: int, t_ms: float) -> dict:
    """The readings the fake reports at time t_ms: the last row with t_ms <= t, else the first."""
    rows = _gpu_rows(trace_rows, gpu)
    if not rows:
        return {k: 0 for k in READING_KEYS}
    cur = rows[0]
    for r in rows:
        if r["t_ms"] <= t_ms:
            cur = r
        else:
            break
    return cur


def _integral_mj(rows: list[dict], t: float) -> float:
    """Integral of power_w over [0, t] in mJ (W * ms); same arithmetic order as the C code."""
    if not rows or t <= 0:
        return 0.0
    if t < rows[0]["t_ms"]:
        return float(rows[0]["power_w"]) * t
    cum = float(rows[0]["power_w"]) * rows[0]["t_ms"]
    i = 0
    while i + 1 < len(rows) and rows[i + 1]["t_ms"] <= t:
        cum = cum + float(rows[i]["power_w"]) * (rows[i + 1]["t_ms"] - rows[i]["t_ms"])
        i += 1
    return cum + float(rows[i]["power_w"]) * (t - rows[i]["t_ms"])


def _quantise(t_ms: float, energy_update_ms: float) -> float:
    t = max(t_ms, 0.0)
    if energy_update_ms and energy_update_ms > 0:
        t = math.floor(t / energy_update_ms) * energy_update_ms
    return t


def energy_counter_mj(trace_rows: Iterable[Mapping], gpu: int, t_ms: float, energy_offset_mj: int = 0,
                      energy_update_ms: float = 0) -> float:
    """The exact counter value at time t_ms (ms since T0); the fake reports floor() of it."""
    return energy_offset_mj + _integral_mj(_gpu_rows(trace_rows, gpu), _quantise(t_ms, energy_update_ms))


def expected_energy_j(trace_rows: Iterable[Mapping], gpu: int, t0_ms: float, t1_ms: float,
                      energy_update_ms: float = 0) -> float:
    """Exact energy in joules the counter advances between times t0_ms and t1_ms (ms since T0)."""
    rows = list(trace_rows)
    return (energy_counter_mj(rows, gpu, t1_ms, 0, energy_update_ms)
            - energy_counter_mj(rows, gpu, t0_ms, 0, energy_update_ms)) / 1000.0
