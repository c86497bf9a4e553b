"""NVML access (the `pynvml` module from nvidia-ml-py). The only module that imports pynvml."""

from __future__ import annotations


def probe() -> dict:
    """What NVML says about this machine's GPUs, or why it cannot say anything.

    Returns {"available": bool, "reason": str | None, "driver_version", "cuda_driver_version",
    "gpus": [{"index", "name", "uuid", "memory_total_mib", "power_limit_w"}]}. Never raises.
    """
    try:
        import pynvml
    except ImportError as e:  # nvidia-ml-py is a dependency; this means a broken install
        return {"available": False, "reason": f"pynvml not importable: {e}", "gpus": []}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return {"available": False, "reason": f"NVML unavailable: {e}", "gpus": []}
    try:
        out: dict = {"available": True, "reason": None, "gpus": []}
        out["driver_version"] = _s(pynvml.nvmlSystemGetDriverVersion())
        try:
            v = pynvml.nvmlSystemGetCudaDriverVersion()
            out["cuda_driver_version"] = f"{v // 1000}.{(v % 1000) // 10}"
        except pynvml.NVMLError:
            out["cuda_driver_version"] = None
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpu = {"index": i, "name": _s(pynvml.nvmlDeviceGetName(h)), "uuid": _s(pynvml.nvmlDeviceGetUUID(h))}
            try:
                gpu["memory_total_mib"] = pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**20
            except pynvml.NVMLError:
                gpu["memory_total_mib"] = None
            try:
                gpu["power_limit_w"] = pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0
            except pynvml.NVMLError:
                gpu["power_limit_w"] = None
            out["gpus"].append(gpu)
        return out
    except pynvml.NVMLError as e:
        return {"available": False, "reason": f"NVML error: {e}", "gpus": []}
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
