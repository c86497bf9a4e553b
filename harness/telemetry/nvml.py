"""NVML access (the `pynvml` module from nvidia-ml-py). The only module that imports pynvml.

NVML errors map to a small typed hierarchy here; nothing above this module sees a pynvml type.
A metric the board does not support reads as None, and the reason is kept once per device.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field


class NvmlError(RuntimeError):
    """Any NVML failure. `code` is NVML's return code when there is one."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class NvmlUnavailable(NvmlError):
    """No NVML here: library or driver missing, no permission."""


class NvmlNotSupported(NvmlError):
    """The device does not offer this reading (e.g. fan speed on a passively cooled board)."""


class NvmlGpuLost(NvmlError):
    """The GPU fell off the bus or otherwise disappeared."""


class NvmlNotFound(NvmlError):
    """No device with that index or UUID."""


# NVML return codes (nvml.h) that decide the class.
_NOT_SUPPORTED, _NO_PERMISSION, _NOT_FOUND = 3, 4, 6
_DRIVER_NOT_LOADED, _LIBRARY_NOT_FOUND, _FUNCTION_NOT_FOUND, _GPU_IS_LOST = 9, 12, 13, 15
_INVALID_ARGUMENT = 2


def _map(e: Exception) -> NvmlError:
    code = getattr(e, "value", None)
    msg = str(e)
    if code in (_LIBRARY_NOT_FOUND, _DRIVER_NOT_LOADED, _NO_PERMISSION):
        return NvmlUnavailable(msg, code)
    if code in (_NOT_SUPPORTED, _FUNCTION_NOT_FOUND):
        return NvmlNotSupported(msg, code)
    if code == _GPU_IS_LOST:
        return NvmlGpuLost(msg, code)
    if code in (_NOT_FOUND, _INVALID_ARGUMENT):
        return NvmlNotFound(msg, code)
    return NvmlError(msg, code)


def _call(fn, *args):
    import pynvml

    try:
        return fn(*args)
    except pynvml.NVMLError as e:
        raise _map(e) from None


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


_lock = threading.Lock()
_users = 0


def init() -> None:
    """Initialise NVML (reference-counted). Raises NvmlUnavailable when there is no NVML."""
    global _users
    try:
        import pynvml
    except ImportError as e:  # nvidia-ml-py is a dependency: this is a broken install
        raise NvmlUnavailable(f"pynvml not importable: {e}") from None
    with _lock:
        if _users == 0:
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as e:
                err = _map(e)
                raise (err if isinstance(err, NvmlUnavailable) else NvmlUnavailable(str(e), err.code)) from None
        _users += 1


def shutdown() -> None:
    global _users
    import pynvml

    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users == 0:
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass


def availability() -> tuple[bool, str | None]:
    """(True, None) when NVML initialises and sees at least one GPU, else (False, reason)."""
    try:
        init()
    except NvmlUnavailable as e:
        return False, f"NVML unavailable: {e}"
    try:
        import pynvml

        n = _call(pynvml.nvmlDeviceGetCount)
        return (True, None) if n > 0 else (False, "NVML reports no GPU")
    except NvmlError as e:
        return False, f"NVML error: {e}"
    finally:
        shutdown()


def device_count() -> int:
    """GPUs NVML sees (NVML must be initialised)."""
    import pynvml

    return _call(pynvml.nvmlDeviceGetCount)


def select(gpu_index: int | None, cuda_visible_devices: str | None) -> int | str:
    """Which GPU to sample: `telemetry.gpu_index` if set, else the first entry of
    CUDA_VISIBLE_DEVICES (an index or a GPU UUID), so telemetry follows the GPU llama.cpp uses;
    else GPU 0. Returns an NVML index or a UUID string."""
    if gpu_index is not None:
        return gpu_index
    first = (cuda_visible_devices or "").split(",")[0].strip()
    if not first:
        return 0
    if first.isdigit():
        return int(first)
    return first  # GPU-xxxxxxxx (or MIG-...) UUID


@dataclass
class Device:
    """One GPU. `read()` returns the current readings; unsupported metrics are None with the
    reason recorded once in `unsupported`."""

    handle: object
    index: int
    unsupported: dict = field(default_factory=dict)
    power_source: str | None = None  # "instant" | "average"
    n_fans: int = 0
    pid: int | None = None  # the engine process whose VRAM is "own", with this one (None: this process only)

    @classmethod
    def open(cls, which: int | str) -> "Device":
        import pynvml

        if isinstance(which, str):
            handle = _call(pynvml.nvmlDeviceGetHandleByUUID, which)
        else:
            n = _call(pynvml.nvmlDeviceGetCount)
            if not 0 <= which < n:
                raise NvmlNotFound(f"GPU index {which} not found (NVML sees {n} GPU(s))")
            handle = _call(pynvml.nvmlDeviceGetHandleByIndex, which)
        dev = cls(handle=handle, index=_call(pynvml.nvmlDeviceGetIndex, handle))
        dev.n_fans = dev._optional("fan", pynvml.nvmlDeviceGetNumFans, handle) or 0
        return dev

    def uuid(self) -> str:
        import pynvml

        return _s(_call(pynvml.nvmlDeviceGetUUID, self.handle))

    def _optional(self, metric: str, fn, *args):
        """Call fn; a NotSupported answer becomes None with the reason kept once. GpuLost and
        other errors propagate: they are not properties of the board."""
        if metric in self.unsupported:
            return None
        try:
            return _call(fn, *args)
        except NvmlNotSupported as e:
            self.unsupported[metric] = f"NotSupported: {e}"
            return None

    def static_info(self) -> dict:
        """Provenance: name, UUID, driver, VRAM, power limit, bus width, max clocks, peak bandwidth."""
        import pynvml

        h = self.handle
        mem = self._optional("memory", pynvml.nvmlDeviceGetMemoryInfo, h)
        limit = self._optional("power_limit", pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
        bus = self._optional("bus_width", pynvml.nvmlDeviceGetMemoryBusWidth, h)
        max_mem = self._optional("max_clocks", pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_MEM)
        max_sm = self._optional("max_clocks", pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM)
        try:
            cuda = _call(pynvml.nvmlSystemGetCudaDriverVersion)
            cuda_s = f"{cuda // 1000}.{(cuda % 1000) // 10}"
        except NvmlError:
            cuda_s = None
        # Peak DRAM bandwidth: bus width (bytes) x memory clock x 2 (double data rate; NVML reports
        # the clock such that this holds for HBM and GDDR alike).
        peak = (bus / 8 * max_mem * 1e6 * 2 / 1e9) if bus and max_mem else None
        return {
            "index": self.index,
            "name": _s(_call(pynvml.nvmlDeviceGetName, h)),
            "uuid": _s(_call(pynvml.nvmlDeviceGetUUID, h)),
            "driver_version": _s(_call(pynvml.nvmlSystemGetDriverVersion)),
            "cuda_driver_version": cuda_s,
            "memory_total_mib": mem.total / 2**20 if mem else None,
            "power_limit_w": limit / 1000 if limit is not None else None,
            "memory_bus_width_bits": bus,
            "max_mem_clock_mhz": max_mem,
            "max_sm_clock_mhz": max_sm,
            "peak_mem_bandwidth_gbps": peak,
            "n_fans": self.n_fans,
        }

    def _power_w(self) -> float | None:
        """Instantaneous power where the board offers it, else NVML's averaged reading."""
        import pynvml

        if self.power_source in (None, "instant"):
            vals = self._optional("power_instant", pynvml.nvmlDeviceGetFieldValues, self.handle,
                                  [pynvml.NVML_FI_DEV_POWER_INSTANT])
            if vals is not None:
                v = vals[0]
                if v.nvmlReturn == 0:
                    self.power_source = "instant"
                    return float(v.value.uiVal) / 1000.0
                if v.nvmlReturn == _GPU_IS_LOST:
                    raise NvmlGpuLost("GPU is lost", _GPU_IS_LOST)
                self.unsupported.setdefault("power_instant", f"field answered {v.nvmlReturn}")
            self.power_source = "average"
        mw = self._optional("power", pynvml.nvmlDeviceGetPowerUsage, self.handle)
        return mw / 1000.0 if mw is not None else None

    def read(self) -> dict:
        """Current readings. Raises NvmlGpuLost when the device disappeared."""
        import pynvml

        h = self.handle
        # Energy and power first: the sampler timestamps a reading just before it starts.
        energy = self._optional("energy", pynvml.nvmlDeviceGetTotalEnergyConsumption, h)
        power = self._power_w()
        util = self._optional("utilization", pynvml.nvmlDeviceGetUtilizationRates, h)
        mem = self._optional("memory", pynvml.nvmlDeviceGetMemoryInfo, h)
        fans = []
        if self.n_fans:
            for i in range(self.n_fans):
                fans.append(self._optional("fan", pynvml.nvmlDeviceGetFanSpeed_v2, h, i))
        elif "fan" not in self.unsupported:
            self.unsupported["fan"] = "NotSupported: the board reports no fans"
        fans = [f for f in fans if f is not None]
        throttle = self._optional("throttle", pynvml.nvmlDeviceGetCurrentClocksEventReasons, h)
        procs = self._optional("processes", pynvml.nvmlDeviceGetComputeRunningProcesses, h)
        # The harness's own processes: the engine worker (Sampler.watch) and the measuring process.
        mine = {self.pid or os.getpid(), os.getpid()}
        own = [p.usedGpuMemory for p in procs or () if p.pid in mine and p.usedGpuMemory is not None]
        others = [(p.pid, (p.usedGpuMemory or 0) / 2**20) for p in procs or () if p.pid not in mine]
        return {
            "gpu_util_pct": util.gpu if util else None,
            "mem_util_pct": util.memory if util else None,
            "vram_used_mib": mem.used / 2**20 if mem else None,
            "vram_total_mib": mem.total / 2**20 if mem else None,
            "proc_vram_mib": sum(own) / 2**20 if procs is not None else None,
            "fan_pct": sum(fans) / len(fans) if fans else None,
            "fan_pcts": fans or None,
            "temp_c": self._optional("temperature", pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": power,
            "energy_mj": energy,
            "sm_clock_mhz": self._optional("clocks", pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": self._optional("clocks", pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
            "pstate": self._optional("pstate", pynvml.nvmlDeviceGetPerformanceState, h),
            "throttle_reasons": throttle,
            "other_processes": others or None,
        }


# Clock-event (throttle) reason bits (nvml.h, nvmlClocksEventReason*).
THROTTLE_REASONS = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}


def decode_throttle(mask: int | None) -> list[str]:
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"0x{rest:x}"] if rest else [])


def probe() -> dict:
    """What NVML says about this machine's GPUs, or why it cannot say anything. Never raises."""
    try:
        init()
    except NvmlUnavailable as e:
        return {"available": False, "reason": f"NVML unavailable: {e}", "gpus": []}
    try:
        import pynvml

        gpus = [Device.open(i).static_info() for i in range(_call(pynvml.nvmlDeviceGetCount))]
        return {"available": bool(gpus), "reason": None if gpus else "NVML reports no GPU",
                "driver_version": gpus[0]["driver_version"] if gpus else None,
                "cuda_driver_version": gpus[0]["cuda_driver_version"] if gpus else None, "gpus": gpus}
    except NvmlError as e:
        return {"available": False, "reason": f"NVML error: {e}", "gpus": []}
    finally:
        shutdown()
