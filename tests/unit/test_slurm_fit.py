"""The Slurm launcher's reading of sinfo, its fitting of a request to a partition, and its account of a
job that ended without recording its point (no Slurm needed)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

from harness.slurm import (  # noqa: E402
    JobTimeLimit,
    Partition,
    RequestRefused,
    SlurmLauncher,
    _Point,
    _why_ended,
    fit,
    parse_gpus,
    parse_minutes,
)

GPU_NODES = Partition(name="gpu", cpus=64, mem_mb=515000, gpus=8, max_time_min=2880)
CPU_NODES = Partition(name="cpu", cpus=2, mem_mb=19000, gpus=0, max_time_min=None)
UNSET = {"gpus_per_node": None, "cpus_per_task": None, "mem_gb": None, "timeout_min": 0}


@pytest.mark.parametrize("gres, n", [("(null)", 0), ("gpu:2", 2), ("gpu:a100:4(S:0-1)", 4),
                                     ("gpu:h100:8(S:0-1),shard:16", 8), ("gpu:a:2,gpu:b:1", 3), ("", 0)])
def test_gpus_of_a_gres_field(gres, n):
    assert parse_gpus(gres) == n


@pytest.mark.parametrize("limit, minutes", [("infinite", None), ("30:00", 30), ("1:00:00", 60),
                                            ("2-00:00:00", 2880), ("0:30", 1), ("45", 45)])
def test_minutes_of_a_time_limit(limit, minutes):
    assert parse_minutes(limit) == minutes


def test_unset_resources_fit_the_partition_with_one_gpu_per_job_on_gpu_nodes():
    assert fit(UNSET, GPU_NODES) == {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 120}
    assert fit(UNSET, CPU_NODES) == {"gpus_per_node": None, "cpus_per_task": 2, "mem_gb": 18, "timeout_min": 120}
    short = Partition(name="debug", cpus=4, mem_mb=8192, gpus=1, max_time_min=30)
    assert fit(UNSET, short)["timeout_min"] == 30


@pytest.mark.parametrize("key, value, named", [
    ("cpus_per_task", 128, "hydra.launcher.cpus_per_task: 128 CPUs per job, but the nodes of partition gpu "
                           "have at most 64 CPUs"),
    ("mem_gb", 1024, "hydra.launcher.mem_gb: 1024 GB of memory per job, but the nodes of partition gpu have "
                     "at most 515000 MB"),
    ("gpus_per_node", 9, "hydra.launcher.gpus_per_node: 9 GPU(s) per job, but the nodes of partition gpu have "
                         "at most 8 GPU(s)"),
    ("timeout_min", 3000, "hydra.launcher.timeout_min: 3000 min per job, but partition gpu allows at most 2880"),
])
def test_a_request_over_the_partition_is_refused_naming_the_resource(key, value, named):
    with pytest.raises(RequestRefused) as e:
        fit({**UNSET, key: value}, GPU_NODES)
    assert str(e.value).startswith(named)


def test_explicit_requests_within_the_partition_stand():
    asked = {"gpus_per_node": 2, "cpus_per_task": 16, "mem_gb": 64, "timeout_min": 30, "partition": "gpu"}
    assert fit(asked, GPU_NODES) == asked
    with pytest.raises(RequestRefused, match=r"gpus_per_node: 1 GPU\(s\) per job, .* at most 0 GPUs \(no gres gpu\)"):
        fit({**UNSET, "gpus_per_node": 1}, CPU_NODES)


# --- how a job that ended without its own record is classified ------------------------------------

PARAMS = {"timeout_min": 1, "signal_delay_s": 50}


def test_a_job_killed_by_the_time_limit_warning_before_it_could_handle_it_fails_as_time_limit():
    # srun's line when the warning (SIGUSR2) kills the task before Python has set its handler
    log = "some line\nsrun: error: node7: task 0: User defined signal 2\n"
    kind, msg = _why_ended("12_0", "FAILED", "NonZeroExitCode", PARAMS, log)
    assert kind == "JobTimeLimit"
    assert msg.startswith("timeout: the Slurm job 12_0 reaches its time limit (1 min) within 50 s")
    assert "SIGUSR2" in msg and "up to 60 s early" in msg


@pytest.mark.parametrize("state, log, kind", [
    ("FAILED", "srun: error: node7: task 0: Segmentation fault\n", "JobFailed"),
    ("FAILED", "", "JobFailed"),
    ("FAILED", "User defined signal 2 in a message of the program itself\n", "JobFailed"),
    ("TIMEOUT", "srun: error: node7: task 0: User defined signal 2\n", "JobTimeout"),
    ("CANCELLED", "", "JobCancelled"),
])
def test_other_ends_keep_their_own_type(state, log, kind):
    assert _why_ended("12_0", state, "", PARAMS, log)[0] == kind


class _Job:
    job_id = "12_1"

    def __init__(self, error: Exception):
        self.error = error

    def results(self):
        raise self.error


@pytest.mark.parametrize("error, kind", [
    # the warning reached the job outside the point, while submitit's own handler was in place
    (RuntimeError("UncompletedJobError: Job not requeued because: timed-out too many times."), "JobTimeLimit"),
    # ... or while Hydra prepared the point, after the launcher had set its handler
    (JobTimeLimit("timeout: the Slurm job 12_1 reaches its time limit (1 min) within 50 s"), "JobTimeLimit"),
    (RuntimeError("Traceback ...\nValueError: something else"), "JobFailed"),
])
def test_a_job_that_raised_outside_its_point_is_classified_by_its_error(tmp_path, error, kind):
    launcher = SlurmLauncher.__new__(SlurmLauncher)
    launcher.params = dict(PARAMS)
    pt = _Point(idx=0, overrides=["a=1"], job_dir=tmp_path / "p", config={"sweep_name": "s"}, run_id_before=None)
    launcher._result(_Job(error), pt)
    rec = json.loads((tmp_path / "p" / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["type"] == kind
    if kind == "JobTimeLimit":
        assert rec["error"]["message"].startswith("timeout: the Slurm job 12_1 reaches its time limit (1 min)")
