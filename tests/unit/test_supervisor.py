"""WorkerEngine without a model: a request's own error comes back as itself, a worker that dies
or hangs inside a request fails that request only, and the next request gets a fresh worker."""

from __future__ import annotations

import pickle
import signal

import psutil
import pytest
from conftest import wait_for

from harness.engine.backend import NoModelLoaded, error_type
from harness.engine.supervisor import PAUSE_ENV, WorkerDied, WorkerEngine, WorkerTimeout, describe_exit


@pytest.fixture
def worker(request, monkeypatch):
    pause = getattr(request, "param", None)
    if pause:
        monkeypatch.setenv(PAUSE_ENV, pause)
    else:
        monkeypatch.delenv(PAUSE_ENV, raising=False)
    w = WorkerEngine(timeout_s=60)
    yield w
    w.close()


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def test_an_error_of_the_request_comes_back_as_itself_and_the_worker_stays(worker):
    with pytest.raises(NoModelLoaded, match="no model is loaded"):
        worker.tokenize("hello", True)
    pid = worker.pid
    with pytest.raises(NoModelLoaded):
        worker.detokenize([1, 2])
    assert worker.pid == pid and worker.started == 1


def test_unknown_or_foreign_requests_are_refused(worker):
    with pytest.raises(ValueError, match="unknown engine request"):
        worker.request("exec", "print(1)")
    with pytest.raises(ValueError, match="call target must be 'harness.<module>:<function>'"):
        worker.call("os:system", "true")


def test_signals_sent_to_every_process_of_a_job_are_left_to_the_sweep_process(worker):
    # Slurm's time-limit warning (SIGUSR2) and scancel (SIGTERM) reach every process of the job,
    # the worker included: the sweep process records the point, so the worker must not die first.
    with pytest.raises(NoModelLoaded):
        worker.tokenize("a", True)
    pid = worker.pid
    for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        psutil.Process(pid).send_signal(sig)
    with pytest.raises(NoModelLoaded):
        worker.tokenize("b", True)  # the same worker answers
    assert worker.pid == pid and worker.started == 1 and worker.proc.poll() is None


@pytest.mark.parametrize("worker", ["tokenize:2"], indirect=True)
def test_a_worker_that_dies_fails_its_request_and_the_next_one_starts_afresh(worker):
    with pytest.raises(NoModelLoaded):
        worker.tokenize("a", True)  # request 1: answered
    first = worker.pid
    import threading

    t = threading.Thread(target=lambda: wait_for(lambda: _stopped(first), 30) and psutil.Process(first).kill())
    t.start()
    with pytest.raises(WorkerDied) as e:
        worker.tokenize("b", True)  # request 2: the worker stops itself, then is killed
    t.join()
    assert e.value.how == "signal SIGKILL" and e.value.op == "tokenize"
    assert str(e.value).startswith("engine worker died (signal SIGKILL) during tokenize")
    assert error_type(e.value) == "WorkerDied"
    with pytest.raises(NoModelLoaded):
        worker.tokenize("c", True)  # a fresh worker answers
    assert worker.pid != first and worker.started == 2


@pytest.mark.parametrize("worker", ["tokenize:1"], indirect=True)
def test_a_worker_that_does_not_answer_in_time_is_killed(worker):
    first = worker.pid
    with pytest.raises(WorkerTimeout, match=r"^timeout: no progress for 0.5 s during tokenize"):
        worker.request("tokenize", "a", True, timeout_s=0.5)
    assert wait_for(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE, 5)
    with pytest.raises(NoModelLoaded):
        worker.tokenize("b", True)
    assert worker.started == 2


def test_close_stops_the_worker_and_a_pickled_supervisor_has_none(worker):
    pid = worker.pid
    clone = pickle.loads(pickle.dumps(worker))
    assert clone.proc is None and clone.timeout_s == 60
    worker.close()
    assert wait_for(lambda: not psutil.pid_exists(pid), 10)


def test_exit_descriptions():
    assert describe_exit(-signal.SIGSEGV) == "signal SIGSEGV"
    assert describe_exit(-signal.SIGABRT) == "signal SIGABRT"
    assert describe_exit(134) == "exit code 134"
    assert describe_exit(None) == "still running"


def test_llama_log_capture_works_with_stderr_redirected_to_a_write_only_file(tmp_path):
    """`harness run ... 2>file` with the engine in process: stderr is a write-only regular file."""
    import subprocess
    import sys

    code = ("import os\nfrom harness.engine import llama\nwith llama._capture_stderr() as c:\n"
            "    os.write(2, b'llama says hi\\n')\nprint(repr(c.text))\n")
    with open(tmp_path / "err.txt", "wb") as err:
        r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=err, text=True)
    assert r.returncode == 0, (tmp_path / "err.txt").read_text()
    assert r.stdout.strip() == repr("llama says hi\n")


def test_work_given_for_the_next_wait_runs_once_after_the_request_is_sent(worker):
    calls = []
    worker.on_next_wait(lambda: calls.append(worker.proc.pid))
    with pytest.raises(NoModelLoaded):
        worker.tokenize("a", True)
    with pytest.raises(NoModelLoaded):
        worker.tokenize("b", True)
    assert calls == [worker.pid]


def test_a_worker_started_ahead_and_never_used_is_stopped_at_once():
    import time

    from harness.runner import SweepState

    state = SweepState()
    state.prestart()
    pid = state.backend.pid
    assert psutil.pid_exists(pid) and state.backend.started == 1
    t0 = time.monotonic()
    state.release_unused()  # a launcher that runs its jobs elsewhere
    assert state.backend is None and time.monotonic() - t0 < 5
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    state.close()


@pytest.mark.parametrize("args, here", [
    (["-m", "runtime.n_ctx=256,512"], True),
    (["runtime.n_ctx=256"], True),
    (["-m", "hydra/launcher=rounds", "a=1"], True),
    (["-m", "hydra/launcher=slurm", "a=1"], False),
    (["-m", "hydra/launcher=ray"], False),
    (["--cfg", "job"], False),
    (["-c", "hydra"], False),
    (["--help"], False),
])
def test_the_worker_is_started_ahead_only_when_points_will_run_here(args, here):
    from harness.cli import _points_here

    assert _points_here(args) is here
