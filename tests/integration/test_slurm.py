"""Sweeps on a real Slurm cluster: scripts/local_slurm.sh starts a one-node cluster (slurmctld,
slurmd, munged as root, a fake gres of two GPUs) once for the session and stops exactly its
daemons at the end. The sweeps run the real engine on the default model with the smallest
budgets; the fake libnvidia-ml (LD_PRELOAD, inherited by the jobs) tells which GPU each job samples.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, load_schema, run_records, wait_for

sys.path.insert(0, str(ROOT / "tests" / "fakes"))
import fakenvml  # noqa: E402

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

SCRIPT = ROOT / "scripts" / "local_slurm.sh"
H100 = {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-11111111-2222-3333-4444-555555555555"}
L40 = {"name": "NVIDIA L40S", "uuid": "GPU-99999999-8888-7777-6666-555555555555"}
# One repetition of 4 tokens, no warm-up: a point is a model load and a few tokens.
SMALL = ["workload.max_tokens=4", "bench.repetitions=1", "bench.warmup=0", "report.auto=false"]
DAEMONS = {"munge/munged.pid": "munged", "slurmctld.pid": "slurmctld", "slurmd.pid": "slurmd"}


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p < 65000:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", p + 1))
                    return p
                except OSError:
                    continue
    raise RuntimeError("no two free adjacent ports")


def _alive(pid: int, prog: str) -> bool:
    try:
        return prog in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """The cluster's environment (SLURM_CONF and the script's settings). Stopped by pid at the end
    of the session, whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root (slurmctld, slurmd and munged run as root)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("Slurm is not installed and apt-get is not available to install it")
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "LOCAL_SLURM_DIR": str(state), "LOCAL_SLURM_GPUS": "2",
           "LOCAL_SLURM_PORT": str(_free_port_pair())}
    t0 = time.monotonic()
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=300)
    pids = {prog: int((state / f).read_text()) for f, prog in DAEMONS.items() if (state / f).is_file()}

    def down():
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=120)
        for prog, pid in pids.items():  # what `up` started is gone, even after a failed test
            if _alive(pid, prog):
                os.kill(pid, 9)

    try:
        assert up.returncode == 0, up.stderr[-3000:]
        lines = up.stdout.splitlines()
        assert lines and all(ln.startswith("export SLURM_CONF=") for ln in lines), up.stdout
        env["SLURM_CONF"] = lines[-1].split("=", 1)[1]
        env["_UP_S"] = f"{time.monotonic() - t0:.1f}"
        yield {"env": env, "state": state, "pids": pids}
    finally:
        down()
        left = [prog for prog, pid in pids.items() if _alive(pid, prog)]
        assert not left, f"still running after down: {left}"


@pytest.fixture(scope="module")
def fake_lib(tmp_path_factory) -> Path:
    if fakenvml.find_compiler() is None:
        pytest.skip("no C compiler to build the fake NVML library")
    return fakenvml.build(tmp_path_factory.mktemp("fakenvml"))


def _env(slurm, fake_lib, tmp_path, **extra) -> dict:
    trace = fakenvml.write_trace(tmp_path / "trace", [H100, L40])
    return {**slurm["env"], **fakenvml.env(fake_lib, trace), **extra}


def _sweep_args(tmp_path, sweep, *overrides):
    return ["run", "-m", "hydra/launcher=slurm", *SMALL, *overrides,
            f"results_dir={tmp_path / 'res'}", f"sweep_name={sweep}"]


def _squeue(env, *args) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-r", *args], env=env, capture_output=True, text=True, timeout=30).stdout
    return [ln.split("|") for ln in out.splitlines() if ln.strip()]


def test_up_again_is_a_no_op_that_prints_only_the_exports(slurm):
    env = slurm["env"]
    r = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"export SLURM_CONF={env['SLURM_CONF']}\n"
    now = {prog: int((slurm["state"] / f).read_text()) for f, prog in DAEMONS.items()}
    assert now == slurm["pids"]  # nothing restarted
    out = subprocess.run(["sinfo", "-h", "-o", "%P|%c|%G|%T"], env=env, capture_output=True, text=True).stdout
    assert out.split("|")[0] == "local*" and out.split("|")[2].startswith("gpu:2")


@pytest.mark.slow
def test_sweep_runs_one_job_per_point_and_each_samples_the_gpu_of_its_allocation(
        slurm, fake_lib, tmp_path, harness_cli, model_path):
    # Two jobs at once (one CPU each) on a node with two GPUs: Slurm gives each its own GPU, and
    # each job samples that one. Both compute on the host CPU (a CPU build), which they share.
    env = _env(slurm, fake_lib, tmp_path, CUDA_VISIBLE_DEVICES="7")
    t0 = time.monotonic()
    r = harness_cli(*_sweep_args(tmp_path, "s", "sampling.seed=1,2", "hydra.launcher.cpus_per_task=1",
                                 "bench.allow_shared_device=true", "report.auto=true"),
                    cwd=tmp_path, env=env, timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ok, 0 failed, 0 skipped" in r.stdout
    assert "Slurm partition local: 1 CPUs, " in r.stdout and ", 1 GPU(s), " in r.stdout  # one GPU per job

    sweep_dir = tmp_path / "res" / "s"
    recs = run_records(sweep_dir)
    import jsonschema

    by_gpu = {}
    for rec in recs.values():
        jsonschema.validate(rec, load_schema())
        assert rec["status"] == "ok"
        tel = rec["telemetry"]
        by_gpu[tel["cuda_visible_devices"]] = tel["gpu"]["uuid"]
        assert rec["provenance"]["cuda_visible_devices"] == tel["cuda_visible_devices"]
        assert rec["provenance"]["host"]["hostname"] == socket.gethostname()
    assert by_gpu == {"0": H100["uuid"], "1": L40["uuid"]}, by_gpu  # not the parent's "7"
    # One Slurm job per point (an array, one task each); their files stay in the sweep folder.
    tasks = [p.name for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert sorted(t.split("_")[1] for t in tasks) == ["0", "1"] and len({t.split("_")[0] for t in tasks}) == 1
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["state"] == "complete" and meta["last_invocation"] == {"ok": 2, "failed": 0, "skipped": 0}
    import pandas as pd

    assert sorted(pd.read_csv(sweep_dir / "runs.csv")["job"]) == sorted(recs)
    assert (sweep_dir / "report" / "report.html").is_file()
    print(f"slurm up {slurm['env']['_UP_S']} s; 2-point sweep {took:.1f} s")


@pytest.mark.slow
def test_a_cancelled_job_fails_its_point_and_a_rerun_measures_only_it(slurm, tmp_path, model_path):
    env = {**slurm["env"], "HARNESS_DEVICE_LOCK_SCOPE": f"pytest-{os.getpid()}"}
    env.pop("HYDRA_FULL_ERROR", None)
    # Both jobs at once (one CPU each, sharing the host CPU); one of them is cancelled mid-point.
    args = [sys.executable, "-m", "harness", *_sweep_args(tmp_path, "c", "sampling.seed=1,2",
                                                          "hydra.launcher.cpus_per_task=1",
                                                          "bench.allow_shared_device=true")]
    p = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        running = []
        assert wait_for(lambda: bool(running.extend(j for j, st in _squeue(env, "-o", "%i|%T") if st == "RUNNING")
                                     or running), 120, tick_s=0.1), "no job started"
        subprocess.run(["scancel", running[0]], env=env, check=True, timeout=30)
        out, err = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 1, err[-3000:]
    assert "1 ok, 1 failed, 0 skipped" in out
    recs = run_records(tmp_path / "res" / "c")
    (failed,) = [x for x in recs.values() if x["status"] == "failed"]
    assert failed["error"]["message"].startswith("cancelled: "), failed["error"]
    assert running[0] in failed["error"]["message"]

    r = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "1 ok, 0 failed, 1 skipped" in r.stdout
    assert all(x["status"] == "ok" for x in run_records(tmp_path / "res" / "c").values())


@pytest.mark.parametrize("override, named", [
    ("hydra.launcher.cpus_per_task=64", "hydra.launcher.cpus_per_task: 64 CPUs per job, but the nodes of "
                                        "partition local have at most"),
    ("hydra.launcher.mem_gb=100000", "hydra.launcher.mem_gb: 100000 GB of memory per job"),
    ("hydra.launcher.gpus_per_node=3", "hydra.launcher.gpus_per_node: 3 GPU(s) per job, but the nodes of "
                                       "partition local have at most 2 GPU(s)"),
])
def test_a_request_no_node_can_satisfy_is_refused_before_submission(slurm, tmp_path, harness_cli, override, named):
    env = slurm["env"]
    before = _squeue(env, "--states=all", "-o", "%i")
    t0 = time.monotonic()
    r = harness_cli(*_sweep_args(tmp_path, "x", "sampling.seed=1,2", override), cwd=tmp_path, env=env, timeout=60)
    assert time.monotonic() - t0 < 60
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and named in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert _squeue(env, "--states=all", "-o", "%i") == before  # nothing submitted


@pytest.mark.slow
def test_a_job_over_its_time_limit_fails_its_point_with_timeout(slurm, tmp_path, harness_cli, model_path):
    # Slurm warns the job signal_delay_s before its limit (1 min), or up to 60 s sooner (it acts on
    # time limits every 30 s): the point, which would take minutes, stops at once and its job records
    # it. With 15 s the warning comes 15-45 s after the start, once the job has set its handler; a
    # warning that comes before (a delay of 50-60 s allows one at the start) kills the job, and the
    # sweep records the same JobTimeLimit itself (unit tests in test_slurm_fit.py).
    r = harness_cli(*_sweep_args(tmp_path, "t", "bench.repetitions=500", "hydra.launcher.timeout_min=1",
                                 "hydra.launcher.signal_delay_s=15"),
                    cwd=tmp_path, env=slurm["env"], timeout=240)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "0 ok, 1 failed, 0 skipped" in r.stdout
    (rec,) = run_records(tmp_path / "res" / "t").values()
    assert rec["status"] == "failed" and rec["error"]["type"] == "JobTimeLimit", rec["error"]
    assert rec["error"]["message"].startswith("timeout: the Slurm job ")
    assert "time limit (1 min) within 15 s" in rec["error"]["message"]


LOCKER = """
import json, os, sys, time
from pathlib import Path
from harness import devicelock
out, other = Path(sys.argv[1]), Path(sys.argv[2])
cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
keys = devicelock.device_keys(1, 1, cvd)  # a point that offloads every layer to the job's GPUs
try:
    devicelock.hold(keys)
    got = "held"
except devicelock.DeviceBusy as e:
    got = str(e)
out.write_text(json.dumps({"cvd": cvd, "keys": keys, "got": got}))
for _ in range(600):  # hold the lock until the other job has tried too
    if other.exists():
        break
    time.sleep(0.05)
"""


@pytest.mark.slow
def test_device_lock_lets_jobs_on_different_gpus_run_at_once_and_refuses_a_shared_gpu(slurm, fake_lib, tmp_path):
    env = {**_env(slurm, fake_lib, tmp_path), "HARNESS_DEVICE_LOCK_SCOPE": f"pytest-{os.getpid()}",
           "PYTHONPATH": str(ROOT)}
    script = tmp_path / "locker.py"
    script.write_text(LOCKER)

    def pair(name: str, *sbatch: str, job_env: dict | None = None) -> list[dict]:
        a, b = tmp_path / f"{name}-a.json", tmp_path / f"{name}-b.json"
        procs = [subprocess.Popen(["sbatch", "--wait", "-c", "1", "-o", str(tmp_path / f"{name}-%j.log"), *sbatch,
                                   "--wrap", f"{sys.executable} {script} {mine} {other}"],
                                  env={**env, **(job_env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for mine, other in ((a, b), (b, a))]
        for p in procs:
            assert p.wait(timeout=120) == 0, p.stderr.read()
        return [json.loads(a.read_text()), json.loads(b.read_text())]

    # Each job gets its own GPU from Slurm: both hold their GPU at the same time.
    both = pair("apart", "--gpus=1")
    assert sorted(x["cvd"] for x in both) == ["0", "1"]
    assert [x["got"] for x in both] == ["held", "held"]
    assert {x["keys"][0] for x in both} == {H100["uuid"], L40["uuid"]}
    # Two jobs pinned to the same GPU (no gres, the same CUDA_VISIBLE_DEVICES): one holds it, the
    # other is refused while the first measures.
    same = pair("same", job_env={"CUDA_VISIBLE_DEVICES": "0"})
    assert sorted(x["got"] == "held" for x in same) == [False, True], same
    (refused,) = [x["got"] for x in same if x["got"] != "held"]
    assert refused.startswith(f"device {H100['uuid']} is in use by another harness job (pid ")
