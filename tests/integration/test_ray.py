"""Sweeps through `hydra/launcher=ray` on a real local Ray.

Ray is not a dependency of the harness (`pip install -e .[ray]`: about 80 MB of wheels, about
380 MB installed with what hydra-ray-launcher pulls in). The session installs it once into an
overlay environment in the cache that sees this checkout's .venv (a .pth file), so the .venv
itself is left as setup made it; about 20 s the first time, nothing after. Without PyPI the tests
are skipped with the reason.

A cluster is started with `ray start --head --block` in a private temporary folder (TMPDIR) with
two GPU resources (no GPU behind them: Ray pins each task's CUDA_VISIBLE_DEVICES, and the fake
libnvidia-ml says which GPU a point sampled), and stopped by its pid, with every process it
started, whatever the tests did.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, run_records, wait_for

sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

RAY = ["ray==2.60.0", "hydra-ray-launcher==1.2.2"]
H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555"}
L40 = {"name": "NVIDIA L40S", "uuid": "GPU-99999999-8888-7777-6666-555555555555"}
SMALL = ["workload.max_tokens=4", "bench.repetitions=1", "bench.warmup=0", "report.auto=false"]


@pytest.fixture(scope="session")
def ray_python() -> Path:
    """A Python that has Ray and hydra-ray-launcher on top of this checkout's environment."""
    site = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{site} {' '.join(RAY)}".encode()).hexdigest()[:12]
    base = Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "harness")
    venv = base / f"ray-overlay-{key}"
    py = venv / "bin" / "python"
    if (venv / ".complete").is_file():
        return py
    subprocess.run([Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}",
                    "-m", "venv", "--clear", "--without-pip", str(venv)], check=True, timeout=120)
    own = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip())
    # After its own packages: this checkout's (the editable harness, hydra, pip) via their .pth files.
    (own / "zz_harness_venv.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *RAY],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"Ray could not be installed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    (venv / ".complete").touch()
    return py


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory) -> Path:
    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler to build the fake NVML library")
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_env(ray_python, fake_lib, tmp_path):
    """Environment of the head and of the sweeps: a private Ray temporary folder (short: Ray's
    socket paths must fit 107 bytes), the fake NVML with two GPUs, no token auth, no usage stats."""
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="hray-", dir="/tmp"))
    trace = fakenvml.write_trace(tmp_path / "trace", [H100, L40])
    env = {**os.environ, **fakenvml.env(fake_lib, trace), "TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", "HARNESS_DEVICE_LOCK_SCOPE": f"pytest-{os.getpid()}"}
    for k in ("RAY_ADDRESS", "RAY_TMPDIR", "HYDRA_FULL_ERROR"):
        env.pop(k, None)
    yield env
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


class Head:
    """`ray start --head --block`, stopped by its pid (it stops what it started); anything of its
    process tree still running after that is killed by pid."""

    def __init__(self, python: Path, env: dict, log: Path):
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [str(python), "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={self.port}",
             "--num-cpus=2", "--num-gpus=2", "--include-dashboard=false", "--disable-usage-stats"],
            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.file = Path(env["TMPDIR"]) / "ray" / "ray_current_cluster"

    def address(self) -> str:
        try:
            return self.file.read_text().strip()
        except OSError:
            return ""

    def ready(self) -> bool:
        if not self.address():
            return False
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        import psutil

        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        _, alive = psutil.wait_procs(tree, timeout=10)
        for p in alive:
            p.kill()


@pytest.fixture
def head(ray_python, ray_env, tmp_path):
    h = Head(ray_python, ray_env, tmp_path / "head.log")
    try:
        yield h
    finally:
        h.stop()


def _sweep(py: Path, env: dict, tmp_path: Path, sweep: str, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), "-m", "harness", "run", "-m", "hydra/launcher=ray", *SMALL, *overrides,
                           f"results_dir={tmp_path / 'res'}", f"sweep_name={sweep}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ray_sweep_joins_a_running_cluster_and_a_stale_cluster_file_is_handled(
        ray_python, ray_env, head, tmp_path, model_path):
    log = tmp_path / "head.log"
    assert wait_for(head.ready, 60, tick_s=0.2), log.read_text()[-3000:]

    # Joined with address=auto: object_store_memory stays unset (Ray refuses a size when it joins);
    # each point gets one of the cluster's GPUs and samples it.
    r = _sweep(ray_python, ray_env, tmp_path, "joined", "sampling.seed=1,2", "hydra.launcher.ray.init.address=auto",
               "bench.allow_shared_device=true")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "2 ok, 0 failed, 0 skipped" in r.stdout
    assert f"Ray cluster {head.address()}" in r.stdout + r.stderr and "num_gpus=1" in r.stdout + r.stderr
    recs = run_records(tmp_path / "res" / "joined")
    by_gpu = {rec["telemetry"]["cuda_visible_devices"]: rec["telemetry"]["gpu"]["uuid"] for rec in recs.values()}
    assert by_gpu == {"0": H100["uuid"], "1": L40["uuid"]}, by_gpu
    assert all(rec["status"] == "ok" for rec in recs.values())

    # Stopped by pid (not `ray stop`): Ray's address file stays behind, naming a dead cluster.
    stale = head.address()
    head.stop()
    assert head.file.is_file() and head.address() == stale
    r = _sweep(ray_python, ray_env, tmp_path, "stale", "hydra.launcher.ray.init.address=auto")
    assert r.returncode == 2, (r.stdout + r.stderr)[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and f"({stale}) does not answer" in errors[0], r.stderr[-2000:]

    # The default (address null) starts a new local Ray for the sweep instead of joining the dead one.
    r = _sweep(ray_python, ray_env, tmp_path, "local")
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "1 ok, 0 failed, 0 skipped" in r.stdout
    assert "which does not answer (a stopped cluster): starting a new local Ray" in r.stdout + r.stderr
    (rec,) = run_records(tmp_path / "res" / "local").values()
    assert rec["status"] == "ok"
