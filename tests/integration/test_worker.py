"""The supervised engine worker in real sweeps: a point the engine cannot run, a worker that dies
(SIGSEGV) or hangs in the middle of a point, and Ctrl-C / SIGTERM while the worker loads a model.

Faults are placed with HARNESS_WORKER_PAUSE=OP:N: the worker stops itself (SIGSTOP) right before
the N-th request of kind OP, so the test signals a worker that is certainly inside that request
(not by luck of timing), then lets it go on (SIGCONT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from conftest import TINY, load_schema, run_records, wait_for

pytestmark = pytest.mark.slow

BUDGET = ["workload.max_tokens=4", "bench.repetitions=2", "bench.warmup=0", "report.auto=false"]


def _start(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    full = {**os.environ, **env, "HARNESS_DEVICE_LOCK_SCOPE": f"pytest-{os.getpid()}"}
    full.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen([sys.executable, "-m", "harness", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full)


def _stopped_worker(proc: subprocess.Popen, timeout_s: float = 300) -> psutil.Process:
    """The engine worker of `proc` once it has stopped itself at the pause point."""
    found: dict = {}

    def stopped() -> bool:
        if proc.poll() is not None:
            return True
        for c in psutil.Process(proc.pid).children(recursive=True):
            try:
                if "harness.engine.worker" in " ".join(c.cmdline()) and c.status() == psutil.STATUS_STOPPED:
                    found["p"] = c
                    return True
            except psutil.Error:
                pass
        return False

    assert wait_for(stopped, timeout_s, tick_s=0.1) and "p" in found, \
        f"the worker never reached the pause point (exit {proc.poll()})"
    return found["p"]


def _finish(proc: subprocess.Popen, timeout_s: float = 300) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_context_too_small_for_the_prompt_fails_one_point_and_the_sweep_completes(tmp_path, harness_cli):
    """n_ctx=16 cannot hold the default prompt: llama.cpp used to abort the whole process there."""
    r = harness_cli("run", "-m", "runtime.n_ctx=512,16,1024", *BUDGET, "bench.repetitions=1",
                    f"results_dir={tmp_path}", "sweep_name=s", cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "2 ok, 1 failed, 0 skipped"
    assert "Traceback" not in r.stderr
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["state"] == "complete"
    recs = {rec["config"]["runtime"]["n_ctx"]: rec for rec in run_records(tmp_path / "s").values()}
    assert recs[512]["status"] == recs[1024]["status"] == "ok"
    bad = recs[16]
    assert bad["status"] == "failed" and bad["error"]["type"] == "PromptTooLong"
    assert "does not fit in n_ctx=16" in bad["error"]["message"]
    # The effective batch sizes are recorded like the other effective parameters.
    assert recs[512]["effective"]["n_batch_effective"] == 512
    assert recs[512]["effective"]["n_ubatch_effective"] >= 1
    assert (tmp_path / "s" / "runs.csv").is_file()


def test_prompt_is_evaluated_in_chunks_of_the_effective_batch(tmp_path, harness_cli):
    r = harness_cli("run", "runtime.n_batch=8", "runtime.n_ubatch=8", *BUDGET, f"results_dir={tmp_path}",
                    "sweep_name=s", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    (rec,) = run_records(tmp_path / "s").values()
    assert rec["status"] == "ok" and rec["prompt"]["n_tokens"] > 8
    assert rec["effective"]["n_batch_effective"] == 8
    assert rec["repetitions"][0]["n_prompt_tokens"] == rec["prompt"]["n_tokens"]


def test_a_worker_killed_by_sigsegv_fails_only_its_point(tmp_path):
    """The sweep runs in rounds (one repetition per point per round, no control point here): the
    3rd generate request is the first repetition of the third point visited in round 0."""
    proc = _start(["run", "-m", "sampling.seed=1,2,3", *BUDGET, "bench.control=false", f"results_dir={tmp_path}",
                   "sweep_name=s"], tmp_path, {"HARNESS_WORKER_PAUSE": "generate:3"})
    worker = _stopped_worker(proc)
    worker.send_signal(signal.SIGSEGV)
    worker.send_signal(signal.SIGCONT)
    out, err = _finish(proc)
    assert proc.returncode == 1, err[-3000:]
    assert out.strip().splitlines()[-1] == "2 ok, 1 failed, 0 skipped"
    assert "Traceback" not in err
    sweep = tmp_path / "s"
    assert json.loads((sweep / "sweep.json").read_text())["state"] == "complete"
    recs = {rec["config"]["sampling"]["seed"]: rec for rec in run_records(sweep).values()}
    (bad,) = [r for r in recs.values() if r["status"] != "ok"]
    good = [r for r in recs.values() if r["status"] == "ok"]
    assert len(good) == 2 and all(len(r["repetitions"]) == 2 for r in good)
    assert bad["status"] == "failed"
    assert bad["error"]["type"] == "WorkerDied" and bad["error"]["phase"] == "measure"
    assert "SIGSEGV" in bad["error"]["message"]
    schema = load_schema()
    import jsonschema

    for rec in recs.values():
        jsonschema.validate(rec, schema)
    # The other points went on in a new worker: their model was loaded again there (once: one load
    # group), and their telemetry follows the new worker's pid.
    assert all(r["load"]["isolated"] is True for r in good)
    assert sum(r["load"].get("reloads", 0) for r in good) == 1
    assert all(r["telemetry"]["sampled_pid"] != worker.pid for r in good)
    assert not psutil.pid_exists(worker.pid) or worker.status() == psutil.STATUS_ZOMBIE


def test_a_worker_that_makes_no_progress_is_killed_and_the_point_fails_with_timeout(tmp_path):
    proc = _start(["run", "-m", "sampling.seed=1,2", *BUDGET, "bench.point_timeout_s=6", "bench.control=false",
                   f"results_dir={tmp_path}", "sweep_name=s"], tmp_path, {"HARNESS_WORKER_PAUSE": "generate:1"})
    worker = _stopped_worker(proc)  # stays stopped: no answer comes
    out, err = _finish(proc)
    assert proc.returncode == 1, err[-3000:]
    assert out.strip().splitlines()[-1] == "1 ok, 1 failed, 0 skipped"
    recs = list(run_records(tmp_path / "s").values())
    (bad,) = [r for r in recs if r["status"] == "failed"]
    assert bad["error"]["type"] == "WorkerTimeout"
    assert bad["error"]["message"].startswith("timeout: no progress for 6 s during generate")
    assert [r["status"] for r in recs].count("ok") == 1
    assert wait_for(lambda: not psutil.pid_exists(worker.pid), 10)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_model_load_stops_the_worker_and_marks_the_sweep_interrupted(sig, code, tmp_path):
    proc = _start(["run", "-m", "sampling.seed=1,2", *TINY, "report.auto=false", f"results_dir={tmp_path}",
                   "sweep_name=s"], tmp_path, {"HARNESS_WORKER_PAUSE": "load:1"})
    worker = _stopped_worker(proc)  # inside its first load request
    proc.send_signal(sig)
    out, err = _finish(proc)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["state"] == "interrupted"
    assert not run_records(tmp_path / "s")  # nothing was measured, nothing claims to be
    assert wait_for(lambda: not psutil.pid_exists(worker.pid), 10), "the worker outlived the sweep"
