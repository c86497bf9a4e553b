"""One device, one job: a host-wide lock per compute device, held while a job measures on it.

Two benchmarks on one GPU (or on one host's CPU) slow each other down, and both record the
damaged numbers as if they were clean. Before a point loads its model the runner takes the lock
of every device the point computes on; a device that another harness process holds makes the
point fail with DeviceBusy (recorded, so a re-run of the sweep measures it again), unless
`bench.allow_shared_device=true`.

The lock is an abstract Unix socket (Linux) bound to a name per device: it is no file, so nothing
is written outside the results folder and nothing stale is left behind; the kernel releases it
when the holding process exits, however it exits (SIGKILL and out-of-memory kills included).
It is host-wide within one network namespace: containers with their own network namespace do not
see each other's locks (HARNESS_DEVICE_LOCK_SCOPE narrows it further, see `_address`). A process keeps its locks from point to point (a sweep in one process
reuses its device) and gives up those a later point no longer needs.

Device keys: a GPU is named by its UUID (from NVML) so that two jobs that number GPUs
differently still meet on the same lock; without NVML, by its CUDA_VISIBLE_DEVICES entry. A point
that offloads layers computes on every GPU CUDA_VISIBLE_DEVICES shows it (llama.cpp splits layers
over all of them), so all of those are locked. A CPU point locks the host CPU ("cpu"); so does a
partly offloaded point, which runs the remaining layers on the CPU.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import struct
import sys

log = logging.getLogger("harness")

CPU = "cpu"
_PREFIX = "harness-device-"
_HELD: dict[str, socket.socket] = {}


class DeviceBusy(RuntimeError):
    """Another harness job holds the device. `str()` is the one-line message recorded."""

    def __init__(self, device: str, pid: int | None):
        self.device, self.pid = device, pid
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(f"device {device} is in use by another harness job ({who}); "
                         "set bench.allow_shared_device=true to run anyway")


def supported() -> bool:
    """Abstract Unix sockets exist on Linux only; elsewhere no lock is taken (and the record says so)."""
    return sys.platform.startswith("linux")


def _address(key: str) -> bytes:
    # HARNESS_DEVICE_LOCK_SCOPE gives a set of processes locks of their own (a test session whose
    # jobs must not refuse those of another session on the same host).
    scope = os.environ.get("HARNESS_DEVICE_LOCK_SCOPE", "")
    name = f"{scope}:{key}" if scope else key
    # Abstract names are at most 107 bytes; a UUID fits, but hash anything long or odd.
    safe = name if name.replace("-", "").replace("_", "").replace(".", "").isalnum() and len(name) < 64 \
        else hashlib.sha256(name.encode()).hexdigest()[:32]
    return b"\0" + (_PREFIX + safe).encode()


def holder(key: str) -> int | None:
    """Pid of the process holding `key` (None when free or unknown): connect to the listening
    socket and read its owner's credentials (SO_PEERCRED)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.5)
    try:
        s.connect(_address(key))
        pid, _uid, _gid = struct.unpack("3i", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        return pid or None
    except OSError:
        return None
    finally:
        s.close()


def _try_take(key: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(_address(key))
    except OSError as e:
        s.close()
        if e.errno == errno.EADDRINUSE:
            return False
        raise
    s.listen(64)  # listening lets others learn the holder's pid; nothing is ever accepted
    os.set_inheritable(s.fileno(), False)  # a child process must not keep the device after we exit
    _HELD[key] = s
    return True


def hold(keys: list[str], *, allow_shared: bool = False) -> dict:
    """Hold the locks of `keys` for this process (releasing held locks not in `keys`).

    Raises DeviceBusy for the first key another process holds, unless `allow_shared`: then the
    point runs anyway, keeps the free locks (protecting itself from jobs that do not allow
    sharing) and the returned record names who it shares with. Returns what run.json records:
    {"devices", "held", "shared_with", "supported"}."""
    out = {"devices": list(keys), "held": [], "shared_with": {}, "supported": supported()}
    if not supported():
        return out
    for k in [k for k in _HELD if k not in keys]:
        _HELD.pop(k).close()
    taken = []
    for k in keys:
        if k in _HELD:
            out["held"].append(k)
        elif _try_take(k):
            out["held"].append(k)
            taken.append(k)
        elif allow_shared:
            out["shared_with"][k] = holder(k)
        else:
            for t in taken:  # a refused point keeps none of the devices it did not get to use
                _HELD.pop(t).close()
            raise DeviceBusy(k, holder(k))
    return out


def release_all() -> None:
    for k in list(_HELD):
        _HELD.pop(k).close()


def device_keys(n_gpu_layers_effective: int, n_offloadable_layers: int,
                cuda_visible_devices: str | None = None) -> list[str]:
    """The devices a point computes on, as lock keys (see the module docstring)."""
    keys: list[str] = []
    if n_gpu_layers_effective > 0:
        keys.extend(gpu_keys(cuda_visible_devices))
    if n_gpu_layers_effective < n_offloadable_layers or not keys:
        keys.append(CPU)
    return keys


def gpu_keys(cuda_visible_devices: str | None) -> list[str]:
    """UUIDs of the GPUs CUDA_VISIBLE_DEVICES names (all GPUs when it is unset), or the raw
    entries where NVML cannot say."""
    from .telemetry import nvml

    entries = None if cuda_visible_devices is None else \
        [e.strip() for e in cuda_visible_devices.split(",") if e.strip()]
    try:
        nvml.init()
    except nvml.NvmlError:
        return [f"gpu-{e}" for e in (entries if entries is not None else ["0"])]
    try:
        if entries is None:
            entries = [str(i) for i in range(nvml.device_count())]
        out = []
        for e in entries:
            try:
                out.append(nvml.Device.open(int(e) if e.isdigit() else e).uuid() or f"gpu-{e}")
            except nvml.NvmlError:
                out.append(f"gpu-{e}")  # a MIG instance or a device NVML does not know: its own key
        return out
    finally:
        nvml.shutdown()


def hold_for(plan, allow_shared: bool) -> dict:
    """Hold the devices a planned point computes on (CUDA_VISIBLE_DEVICES as this job sees it:
    a launcher's allocation pins it). Returns run.json's provenance.device_lock."""
    keys = device_keys(plan.n_gpu_layers_effective, plan.n_offloadable_layers,
                       os.environ.get("CUDA_VISIBLE_DEVICES"))
    out = hold(keys, allow_shared=allow_shared)
    for k, pid in out["shared_with"].items():
        log.warning("device %s is shared with another harness job (pid %s): bench.allow_shared_device=true", k, pid)
    return out
