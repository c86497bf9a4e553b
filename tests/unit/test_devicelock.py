"""The per-device lock between processes: refusal names the holder, a SIGKILLed holder frees the
device, sharing only when allowed; and which devices a point locks (GPU UUIDs through the real
pynvml code path against the fake libnvidia-ml)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from harness import devicelock

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

pytestmark = pytest.mark.skipif(not devicelock.supported(), reason="device locks need Linux (abstract sockets)")

HOLDER = textwrap.dedent("""
    import sys, time
    from harness import devicelock
    devicelock.hold(sys.argv[1:])
    print("held", flush=True)
    time.sleep(600)
""")


@pytest.fixture
def scope(monkeypatch):
    """A lock scope of this test's own, inherited by the processes it starts."""
    monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", f"test-{uuid.uuid4().hex[:12]}")
    yield
    devicelock.release_all()


def _holder(*keys: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, *keys], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def _kill(p: subprocess.Popen) -> None:
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)


def test_held_device_is_refused_with_the_holders_pid_and_freed_when_it_is_killed(scope):
    p = _holder("GPU-aaaa")
    try:
        with pytest.raises(devicelock.DeviceBusy) as e:
            devicelock.hold(["GPU-aaaa"])
        assert e.value.pid == p.pid and e.value.device == "GPU-aaaa"
        assert str(e.value) == (f"device GPU-aaaa is in use by another harness job (pid {p.pid}); "
                                "set bench.allow_shared_device=true to run anyway")
        assert devicelock.holder("GPU-aaaa") == p.pid
        # A device the other process does not hold is free.
        assert devicelock.hold(["GPU-bbbb"])["held"] == ["GPU-bbbb"]
    finally:
        _kill(p)  # no cleanup runs in the holder: the kernel frees the name
    assert devicelock.holder("GPU-aaaa") is None
    got = devicelock.hold(["GPU-aaaa"])
    assert got["held"] == ["GPU-aaaa"] and got["shared_with"] == {}


def test_a_refused_point_takes_no_lock_of_its_other_devices(scope):
    p = _holder("cpu")
    try:
        with pytest.raises(devicelock.DeviceBusy):
            devicelock.hold(["GPU-cccc", "cpu"])  # GPU-cccc is free and comes first
        assert devicelock.holder("GPU-cccc") is None
    finally:
        _kill(p)


def test_allowed_sharing_runs_and_names_whom_it_shares_with(scope):
    p = _holder("cpu")
    try:
        got = devicelock.hold(["cpu", "GPU-dddd"], allow_shared=True)
        assert got["shared_with"] == {"cpu": p.pid}
        assert got["held"] == ["GPU-dddd"] and got["devices"] == ["cpu", "GPU-dddd"]
    finally:
        _kill(p)


def test_a_process_keeps_its_locks_across_points_and_drops_unneeded_ones(scope):
    assert devicelock.hold(["cpu"])["held"] == ["cpu"]
    assert devicelock.hold(["cpu"])["held"] == ["cpu"]  # the next point of the same process
    devicelock.hold(["GPU-eeee"])
    assert devicelock.holder("cpu") is None
    assert devicelock.holder("GPU-eeee") == os.getpid()


def test_scopes_do_not_see_each_other(scope, monkeypatch):
    p = _holder("cpu")
    try:
        monkeypatch.setenv("HARNESS_DEVICE_LOCK_SCOPE", "another-" + uuid.uuid4().hex[:8])
        assert devicelock.hold(["cpu"])["held"] == ["cpu"]
        devicelock.release_all()
    finally:
        _kill(p)


def test_cpu_points_lock_the_cpu_without_asking_nvml():
    assert devicelock.device_keys(0, 19) == ["cpu"]


GPUS = [{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555"},
        {"name": "NVIDIA L40S", "uuid": "GPU-99999999-8888-7777-6666-555555555555"}]


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory) -> Path:
    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler to build the fake NVML library")
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


def _keys_in_child(lib: Path, trace: Path | None, calls: list[tuple]) -> list:
    code = ("import json, sys\nfrom harness import devicelock\n"
            "print(json.dumps([devicelock.device_keys(*c) for c in json.loads(sys.argv[1])]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_NVML")}
    env.update(fakenvml.env(lib, trace))
    r = subprocess.run([sys.executable, "-c", code, json.dumps(calls)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_gpu_points_lock_every_visible_gpu_by_uuid(tmp_path, fake_lib):
    trace = fakenvml.write_trace(tmp_path / "trace", GPUS)
    h100, l40 = (g["uuid"] for g in GPUS)
    full, partial = (19, 19, None), (10, 19, None)
    got = _keys_in_child(fake_lib, trace, [
        full,                      # CUDA_VISIBLE_DEVICES unset: llama.cpp splits over every GPU
        (19, 19, "1"),             # an index
        (19, 19, l40),             # a UUID (what Slurm and submitit may set)
        (19, 19, "0,1"),
        partial,                   # partial offload also runs layers on the CPU
        (19, 19, "MIG-abc"),       # NVML does not know it: its own key
    ])
    assert got == [[h100, l40], [l40], [l40], [h100, l40], [h100, l40, "cpu"], ["gpu-MIG-abc"]]


def test_without_nvml_gpus_are_keyed_by_their_cuda_visible_devices_entry(tmp_path, fake_lib):
    got = _keys_in_child(fake_lib, None, [(19, 19, None), (19, 19, "2,3")])
    assert got == [["gpu-0"], ["gpu-2", "gpu-3"]]
