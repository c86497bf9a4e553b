"""Background sampling of GPU (NVML) and host readings, and named phase windows.

One clock for everything: time.perf_counter_ns, the clock of the token timestamps. The sampler
thread wakes with Event.wait (no busy-waiting). Windows are Zeus-style: `begin_window(name)` and
`end_window(name)` take a reading at that instant; `add_window(name, t0, t1)` declares a window
after the fact from timestamps the engine recorded (prefill ends at the first token, which is not
a moment to stop and query NVML).

Energy of a window is the difference of the GPU's cumulative energy counter at its ends,
interpolated between readings when an end falls between them. Where there is no counter, or the
window is shorter than the counter's update period, power readings are integrated instead; each
phase says which method it used.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

from .nvml import Device, NvmlError, NvmlGpuLost, decode_throttle

GPU_COLUMNS = ("gpu_util_pct", "mem_util_pct", "vram_used_mib", "vram_total_mib", "proc_vram_mib", "fan_pct",
               "temp_c", "power_w", "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "pstate", "throttle_reasons")
HOST_COLUMNS = ("proc_cpu_pct", "sys_cpu_pct", "proc_rss_mib", "sys_mem_used_mib", "cpu_freq_mhz", "cpu_temp_c")
CSV_COLUMNS = ("t_ns", "phase", "kind", *GPU_COLUMNS, *HOST_COLUMNS)
PHASES = ("load", "warmup", "prefill", "decode", "idle")


@dataclass(frozen=True)
class Window:
    name: str
    t0_ns: int
    t1_ns: int
    tokens: int | None = None  # tokens produced inside the window (decode)


class Sampler:
    """Samples `device` (may be None: host only) and `host` every `interval_ms`."""

    def __init__(self, interval_ms: int, device: Device | None, host, clock=time.perf_counter_ns):
        self.interval_s = interval_ms / 1000.0
        self.device = device  # None once the GPU is lost: sampling stops, the run goes on
        self.gpu = device  # the device as opened, for its unsupported-metric reasons
        self.host = host
        self.clock = clock
        self.samples: list[dict] = []
        self.windows: list[Window] = []
        self.status = "ok" if device is not None else "host_only"
        self.error: str | None = None
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    @property
    def pid(self) -> int | None:
        """The process whose own readings (CPU, RSS, VRAM) are sampled; None: this process."""
        return self._pid

    def watch(self, pid: int) -> None:
        """Sample the per-process readings of `pid` (the engine worker) instead of this process."""
        self._pid = pid
        if self.gpu is not None:
            self.gpu.pid = pid
        if self.host is not None:
            self.host.watch(pid)

    # --- sampling -------------------------------------------------------------------------------
    def sample(self, kind: str = "mark") -> int:
        """Take one reading now; returns its timestamp. A lost GPU stops GPU sampling for good.
        With nothing to read (NVML off and host readings off) only the time is taken."""
        with self._lock:
            t = self.clock()
            if self.gpu is None and self.host is None:
                return t
            row: dict = {"t_ns": t, "kind": kind}
            if self.device is not None:
                try:
                    row.update(self.device.read())
                except NvmlGpuLost as e:
                    self._lose(f"GPU lost: {e}")
                except NvmlError as e:
                    self._lose(f"NVML error: {e}")
            if self.host is not None:
                row.update(self.host.read())
            self.samples.append(row)
            return t

    def _lose(self, why: str) -> None:
        self.device = None
        self.status = "partial"
        self.error = why

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample("tick")

    def start(self) -> "Sampler":
        if self.gpu is None and self.host is None:
            return self  # nothing to sample: no thread
        if self._thread is not None:
            return self  # running
        self._stop.clear()  # a sampler paused with stop() starts again
        self.sample("tick")
        self._thread = threading.Thread(target=self._loop, name="harness-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- windows --------------------------------------------------------------------------------
    def begin_window(self, name: str) -> int:
        t = self.sample()
        self._open[name] = t
        return t

    def end_window(self, name: str, tokens: int | None = None) -> Window:
        t0 = self._open.pop(name)
        w = Window(name, t0, self.sample(), tokens)
        self.windows.append(w)
        return w

    @contextmanager
    def window(self, name: str):
        """begin_window/end_window as a block; the window closes on exceptions too."""
        self.begin_window(name)
        try:
            yield
        finally:
            self.end_window(name)

    def add_window(self, name: str, t0_ns: int, t1_ns: int, tokens: int | None = None) -> Window:
        w = Window(name, int(t0_ns), int(t1_ns), tokens)
        self.windows.append(w)
        return w

    # --- results --------------------------------------------------------------------------------
    def phase_of(self, t: int) -> str:
        for w in self.windows:
            if w.t0_ns <= t <= w.t1_ns:
                return w.name
        return "other"

    @property
    def t0_ns(self) -> int | None:
        """Clock value of the first sample: telemetry.csv and the recorded windows count from it."""
        return min((s["t_ns"] for s in self.samples), default=None)

    def rows(self) -> list[tuple]:
        """telemetry.csv rows (absolute clock values; the writer makes them relative to t0_ns)."""
        out = []
        for s in sorted(self.samples, key=lambda r: r["t_ns"]):
            vals = [s.get(c) for c in GPU_COLUMNS + HOST_COLUMNS]
            out.append((s["t_ns"], self.phase_of(s["t_ns"]), s["kind"], *vals))
        return out

    def counter_update_ms(self) -> float | None:
        """Lower bound of the energy counter's update period: the longest interval between two
        readings (power drawn) in which the counter did not move. None when it always moved."""
        pts = [(s["t_ns"], s.get("energy_mj"), s.get("power_w")) for s in sorted(self.samples, key=lambda r: r["t_ns"])]
        pts = [p for p in pts if p[1] is not None]
        longest, start = None, 0
        for i in range(1, len(pts) + 1):
            # A run of readings showing one counter value: it stood still at least this long.
            if i == len(pts) or pts[i][1] != pts[start][1]:
                if i - start > 1 and any((p[2] or 0) > 0 for p in pts[start:i - 1]):
                    span = (pts[i - 1][0] - pts[start][0]) / 1e6
                    longest = span if longest is None else max(longest, span)
                start = i
        return longest

    def energy_j(self, t0: int, t1: int) -> tuple[float | None, str]:
        """Energy between two instants and how it was obtained: counter, counter_interpolated,
        power_integrated, or unavailable."""
        ordered = sorted(self.samples, key=lambda r: r["t_ns"])
        counter = [(s["t_ns"], s["energy_mj"]) for s in ordered if s.get("energy_mj") is not None]
        update = self.counter_update_ms()
        short = update is not None and (t1 - t0) / 1e6 < 2 * update
        if not short and _covers(counter, t0, t1):
            times = {t for t, _ in counter}
            e = (_interp(counter, t1) - _interp(counter, t0)) / 1000.0
            return e, ("counter" if t0 in times and t1 in times else "counter_interpolated")
        power = [(s["t_ns"], s["power_w"]) for s in ordered if s.get("power_w") is not None]
        if _covers(power, t0, t1):
            return _integrate(power, t0, t1), "power_integrated"
        return None, "unavailable"

    def summaries(self) -> dict:
        """Per-phase summaries (DESIGN section 3: telemetry per phase)."""
        by_phase: dict[str, list[Window]] = defaultdict(list)
        for w in self.windows:
            by_phase[w.name].append(w)
        out = {}
        for phase, wins in by_phase.items():
            inside = [s for s in self.samples if any(w.t0_ns <= s["t_ns"] <= w.t1_ns for w in wins)]
            energies = [self.energy_j(w.t0_ns, w.t1_ns) for w in wins]
            known = [e for e, _ in energies if e is not None]
            tokens = sum(w.tokens or 0 for w in wins) if any(w.tokens is not None for w in wins) else None
            energy = sum(known) if known and len(known) == len(wins) else None
            mask = 0
            for s in inside:
                mask |= s.get("throttle_reasons") or 0
            out[phase] = {
                "n_windows": len(wins),
                "duration_ms": sum(w.t1_ns - w.t0_ns for w in wins) / 1e6,
                "n_samples": len(inside),
                "gpu_util_pct_mean": _mean(inside, "gpu_util_pct"), "gpu_util_pct_max": _max(inside, "gpu_util_pct"),
                "mem_util_pct_mean": _mean(inside, "mem_util_pct"),
                "vram_used_mib_max": _max(inside, "vram_used_mib"), "proc_vram_mib_max": _max(inside, "proc_vram_mib"),
                "fan_pct_mean": _mean(inside, "fan_pct"), "fan_pct_max": _max(inside, "fan_pct"),
                "temp_c_max": _max(inside, "temp_c"),
                "power_w_mean": _mean(inside, "power_w"), "power_w_max": _max(inside, "power_w"),
                "sm_clock_mhz_mean": _mean(inside, "sm_clock_mhz"), "mem_clock_mhz_mean": _mean(inside, "mem_clock_mhz"),
                "pstate_max": _max(inside, "pstate"),
                "throttle_reasons": decode_throttle(mask),
                "proc_cpu_pct_mean": _mean(inside, "proc_cpu_pct"), "sys_cpu_pct_mean": _mean(inside, "sys_cpu_pct"),
                "proc_rss_mib_max": _max(inside, "proc_rss_mib"), "cpu_freq_mhz_mean": _mean(inside, "cpu_freq_mhz"),
                "cpu_temp_c_max": _max(inside, "cpu_temp_c"),
                "energy_j": energy,
                "energy_methods": sorted({m for _, m in energies}),
                "tokens": tokens,
                "energy_per_token_j": energy / tokens if energy is not None and tokens else None,
                "tokens_per_j": tokens / energy if energy and tokens else None,
            }
        return out

    def other_processes(self) -> list[dict]:
        """Other processes seen on the sampled GPU: pid and the most VRAM it held."""
        seen: dict[int, float] = {}
        for s in self.samples:
            for pid, mib in s.get("other_processes") or ():
                seen[pid] = max(mib, seen.get(pid, 0.0))
        return [{"pid": pid, "vram_mib": mib} for pid, mib in sorted(seen.items())]


def _values(samples: list[dict], key: str) -> list[float]:
    return [s[key] for s in samples if s.get(key) is not None]


def _mean(samples, key):
    v = _values(samples, key)
    return sum(v) / len(v) if v else None


def _max(samples, key):
    v = _values(samples, key)
    return max(v) if v else None


def _covers(pts: list[tuple[int, float]], t0: int, t1: int) -> bool:
    return len(pts) >= 2 and pts[0][0] <= t0 and pts[-1][0] >= t1


def _interp(pts: list[tuple[int, float]], t: int) -> float:
    """Linear interpolation of (time, value) points at t (pts sorted, t within their range)."""
    for (ta, va), (tb, vb) in zip(pts, pts[1:]):
        if ta <= t <= tb:
            return va if tb == ta else va + (vb - va) * (t - ta) / (tb - ta)
    return pts[-1][1]


def _integrate(pts: list[tuple[int, float]], t0: int, t1: int) -> float:
    """Integral (W x s = J) of linearly interpolated power over [t0, t1]."""
    knots = [t0] + [t for t, _ in pts if t0 < t < t1] + [t1]
    vals = [_interp(pts, t) for t in knots]
    return sum((b - a) / 1e9 * (va + vb) / 2 for a, b, va, vb in zip(knots, knots[1:], vals, vals[1:]))
