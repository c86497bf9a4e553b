"""Where and with what a run was measured: harness, engine, hardware, OS, model file."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import __version__


@functools.lru_cache(maxsize=1)
def git_info() -> dict:
    """The harness checkout's commit and whether it had local changes (None outside a checkout)."""
    src = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def host_info() -> dict:
    import psutil

    vm = psutil.virtual_memory()
    return {
        "hostname": platform.node(),
        "cpu_model": _cpu_model(),
        "cpu_cores_physical": psutil.cpu_count(logical=False),
        "cpu_cores_logical": psutil.cpu_count(logical=True),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_total_mib": round(vm.total / 2**20),
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


@functools.lru_cache(maxsize=1)
def gpu_info() -> dict:
    from .telemetry.nvml import probe

    return probe()


def collect(engine: dict, timing_path: str, model: dict) -> dict:
    """Provenance block of a run record. `engine` comes from engine.engine_info()."""
    return {
        "harness": {"version": __version__, **git_info()},
        "engine": engine,
        "timing_path": timing_path,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "host": host_info(),
        "gpu": gpu_info(),
        "model": model,
    }
