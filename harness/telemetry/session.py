"""Opening telemetry for a run: which GPU, NVML or not (and why), host readings."""

from __future__ import annotations

import functools
import os

from . import nvml
from .host import Host
from .sampler import Sampler


@functools.lru_cache(maxsize=8)
def check(mode: str, gpu_index: int | None, cuda_visible_devices: str | None) -> tuple[bool, str | None]:
    """Can NVML sample the selected GPU? (usable, reason if not). Cached per process."""
    if mode == "off":
        return False, "telemetry.nvml=off"
    ok, reason = nvml.availability()
    if not ok:
        return False, reason
    which = nvml.select(gpu_index, cuda_visible_devices)
    try:
        nvml.init()
        try:
            nvml.Device.open(which)
        finally:
            nvml.shutdown()
    except nvml.NvmlError as e:
        return False, f"GPU {which!r}: {e}"
    return True, None


def open_sampler(tc) -> tuple[Sampler, dict]:
    """A started-ready Sampler for TelemetryConfig `tc` and the telemetry header of the record:
    mode, the sampled GPU's static facts (or why there is none), interval."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    info: dict = {"nvml": tc.nvml, "interval_ms": tc.interval_ms, "gpu": None, "reason": None,
                  "selected": None, "cuda_visible_devices": cvd}
    device = None
    usable, reason = check(tc.nvml, tc.gpu_index, cvd)
    if usable:
        which = nvml.select(tc.gpu_index, cvd)
        info["selected"] = which
        try:
            nvml.init()
            device = nvml.Device.open(which)
            info["gpu"] = device.static_info()
            if (tc.gpu_index is None and isinstance(which, int) and cvd
                    and os.environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID" and nvml.device_count() > 1):
                # CUDA numbers GPUs fastest first unless told otherwise; NVML numbers them by PCI bus.
                info["selection_note"] = ("CUDA_VISIBLE_DEVICES names an index and CUDA_DEVICE_ORDER is not "
                                          "PCI_BUS_ID: CUDA's and NVML's numbering may differ; use a GPU UUID")
        except nvml.NvmlError as e:
            device, reason = None, f"GPU {which!r}: {e}"
            nvml.shutdown()
    info["reason"] = reason
    host = Host() if tc.host else None
    return Sampler(tc.interval_ms, device, host), info


def close(sampler: Sampler, info: dict) -> None:
    sampler.stop()
    if info.get("gpu") is not None:
        nvml.shutdown()
