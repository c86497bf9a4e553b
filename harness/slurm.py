"""Sweep points as Slurm jobs (`hydra/launcher=slurm`): hydra-submitit-launcher's SlurmLauncher,
fitted to the partition it submits to, and watched until every point has a record.

Before anything is submitted the launcher reads the partition's nodes (`sinfo`): the preset's
unset resources (conf/hydra/launcher/slurm.yaml: null, timeout_min 0) become what fits there (up to 8 CPUs,
32 GB and 120 min, one GPU per job where the nodes have GPUs, none where they have not), and a
request no node of the partition can ever satisfy (CPUs, memory, GPUs, time) stops the sweep in
one line naming the resource and exits 2. A job the scheduler still holds for a reason that never
clears (PartitionConfig, an invalid account...) is cancelled and its point fails with that reason:
never a silent wait.

Each job runs one point start to end and writes its own folder. A job that ends without writing
its record (cancelled with scancel, killed at its time limit, its node lost) gets a failed
run.json from the launcher, with the reason (`cancelled: ...`, `timeout: ...`), so a re-run of
the sweep measures exactly those points. Slurm warns a job `signal_delay_s` before its time limit
(SIGUSR2): the point being measured then fails with `timeout: ...` and is recorded by the job
itself. Job states come from `squeue`, so clusters without accounting (no sacct) work too.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import submitit
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher import submitit_launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf

from . import store
from .hydra_conf import to_plain
from .measure import now_iso
from .record import RunError, RunRecord

log = logging.getLogger("harness")

# What the preset asks for where the partition allows it (its null values).
DEFAULT_CPUS = 8
DEFAULT_MEM_GB = 32
DEFAULT_TIMEOUT_MIN = 120
# Slurm's warning that a job reaches its time limit (sbatch --signal, as submitit asks for it), and
# how early Slurm may send it: it acts on time limits every 30 s and sends the warning when it would
# be due before the next check (sbatch(1): "up to 60 seconds earlier than specified").
WARNING_SIGNAL = signal.SIGUSR2
WARNING_EARLY_S = 60

# Pending reasons that never clear by waiting: the request exceeds the partition or the account.
NEVER_RUNS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
              "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed")
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
          "STAGE_OUT", "SIGNALING", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED")


class RequestRefused(Exception):
    """A request the partition can never satisfy, or a partition that cannot be read. `str()` is
    the one line printed: the key, what was asked, what the partition has."""


@dataclass(frozen=True)
class Partition:
    """The largest node of a partition, as `sinfo` reports it."""

    name: str
    cpus: int  # CPUs of its largest node
    mem_mb: int  # memory of its largest node (MB)
    gpus: int  # GPUs (gres gpu) of its best-equipped node
    max_time_min: int | None  # None: no limit


def parse_gpus(gres: str) -> int:
    """GPUs in a sinfo %G field: "gpu:2", "gpu:a100:4(S:0-1),shard:8", "(null)"."""
    n = 0
    for part in re.split(r",(?![^(]*\))", gres or ""):
        fields = part.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) >= 2 and fields[-1].isdigit():
            n += int(fields[-1])
    return n


def parse_minutes(limit: str) -> int | None:
    """Minutes in a Slurm time limit ("infinite", "30:00" = 30 min, "2:00:00", "1-12:00:00")."""
    limit = limit.strip()
    if limit in ("infinite", "UNLIMITED", "n/a", ""):
        return None
    days = 0
    if "-" in limit:
        d, limit = limit.split("-", 1)
        days = int(d)
    parts = [int(p) for p in limit.split(":")]
    if len(parts) == 3:
        h, m, s = parts
    elif len(parts) == 2:
        h, m, s = 0, parts[0], parts[1]
    else:
        h, m, s = 0, parts[0], 0
    return days * 1440 + h * 60 + m + (1 if s else 0)


def _slurm(*cmd: str) -> str:
    if shutil.which(cmd[0]) is None:
        raise RequestRefused(f"hydra/launcher=slurm: `{cmd[0]}` not found; Slurm's client commands "
                             "must be on PATH on the host that submits the sweep")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or ["no message"])[-1]
        raise RequestRefused(f"hydra/launcher=slurm: `{' '.join(cmd)}` failed: {why}")
    return p.stdout


def read_partition(name: str | None) -> Partition:
    """The partition `name` (None: the cluster's default partition) from `sinfo`."""
    rows = []
    for line in _slurm("sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l").splitlines():
        if line.count("|") == 4:
            rows.append(line.split("|"))
    if name is None:
        mine = [r for r in rows if r[0].endswith("*")]
        if not mine:
            raise RequestRefused("hydra.launcher.partition: not set and the cluster has no default "
                                 "partition; set SBATCH_PARTITION or hydra.launcher.partition")
    else:
        mine = [r for r in rows if r[0].rstrip("*") == name]
        if not mine:
            known = sorted({r[0].rstrip("*") for r in rows})
            raise RequestRefused(f"hydra.launcher.partition: {name!r} is not a partition of this cluster "
                                 f"(sinfo lists: {', '.join(known) or 'none'})")
    limits = {parse_minutes(r[4]) for r in mine}
    return Partition(name=mine[0][0].rstrip("*"), cpus=max(int(r[1].rstrip("+")) for r in mine),
                     mem_mb=max(int(r[2].rstrip("+")) for r in mine), gpus=max(parse_gpus(r[3]) for r in mine),
                     max_time_min=None if None in limits else max(limits))


def fit(params: dict, part: Partition) -> dict:
    """The launcher's parameters with its unset resources filled from the partition; raises
    RequestRefused for a request no node of the partition can ever satisfy."""
    out = dict(params)
    where = f"the nodes of partition {part.name}"

    def refuse(key: str, asked: str, has: str) -> None:
        raise RequestRefused(f"hydra.launcher.{key}: {asked} per job, but {where} have at most {has}; "
                             "no job of this sweep could ever start")

    gpus = out.get("gpus_per_node")
    if gpus is None:
        out["gpus_per_node"] = 1 if part.gpus else None  # one GPU per job on GPU nodes
    elif gpus > part.gpus:
        refuse("gpus_per_node", f"{gpus} GPU(s)", f"{part.gpus} GPU(s)" if part.gpus else "0 GPUs (no gres gpu)")
    cpus = out.get("cpus_per_task")
    if cpus is None:
        out["cpus_per_task"] = min(DEFAULT_CPUS, part.cpus)
    elif cpus > part.cpus:
        refuse("cpus_per_task", f"{cpus} CPUs", f"{part.cpus} CPUs")
    mem = out.get("mem_gb")
    if mem is None:
        out["mem_gb"] = min(DEFAULT_MEM_GB, part.mem_mb // 1024) or None
    elif mem * 1024 > part.mem_mb:
        refuse("mem_gb", f"{mem} GB of memory", f"{part.mem_mb} MB")
    t = out.get("timeout_min")
    if not t:  # 0: unset
        out["timeout_min"] = DEFAULT_TIMEOUT_MIN if part.max_time_min is None else min(DEFAULT_TIMEOUT_MIN,
                                                                                     part.max_time_min)
    elif part.max_time_min is not None and t > part.max_time_min:
        raise RequestRefused(f"hydra.launcher.timeout_min: {t} min per job, but partition {part.name} "
                             f"allows at most {part.max_time_min} min; no job of this sweep could ever start")
    return out


def job_states(array_id: str) -> dict[str, tuple[str, str]]:
    """Slurm job id ("12_0") -> (state, reason) of the tasks of a job array, finished ones
    included while slurmctld remembers them (MinJobAge)."""
    out = {}
    try:
        text = _slurm("squeue", "-h", "-r", "--states=all", "-j", array_id, "-o", "%i|%T|%r")
    except (RequestRefused, subprocess.TimeoutExpired) as e:
        log.warning("job states not read: %s", e)
        return out
    for line in text.splitlines():
        if line.count("|") == 2:
            jid, state, reason = line.strip().split("|")
            out[jid] = (state, reason)
    return out


class JobTimeLimit(TimeoutError):
    """Slurm's warning that the job reaches its time limit: the point stops and is recorded."""


class JobStopped(RuntimeError):
    """Slurm stops the job (scancel, preemption): the point stops and is recorded."""


@dataclass
class _Point:
    idx: int
    overrides: list[str]
    job_dir: Path
    config: dict
    run_id_before: str | None


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """See the module docstring. Registered with Hydra as hydra_plugins.harness.SlurmLauncher
    (harness.launcher.register)."""

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:
        # In the job: submitit has set its handlers; Slurm's SIGUSR2 (signal_delay_s before the
        # time limit, or up to WARNING_EARLY_S s sooner) and SIGTERM (KillWait before SIGKILL) now
        # fail the point being measured, which the job still has time to record.
        env = os.environ
        jid = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in env
               else env.get("SLURM_JOB_ID", "?"))

        def time_limit(signum, frame):
            raise JobTimeLimit(time_limit_message(jid, self.params))

        def stopped(signum, frame):
            raise JobStopped(f"cancelled: the Slurm job {jid} was stopped "
                             "(SIGTERM: scancel or preemption)")

        signal.signal(WARNING_SIGNAL, time_limit)
        # submitit ignores SIGTERM; the point would go on measuring until SIGKILL and maybe record
        # itself ok after the scheduler had ended the job.
        signal.signal(signal.SIGTERM, stopped)
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None
        try:
            part = read_partition(self.params.get("partition"))
            self.params = fit(self.params, part)
        except RequestRefused as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        p = self.params
        log.info("Slurm partition %s: %s CPUs, %s GB, %s GPU(s), %s min per job", part.name, p["cpus_per_task"],
                 p["mem_gb"], p["gpus_per_node"] or 0, p["timeout_min"])
        lead = float(p["timeout_min"]) * 60 - float(p.get("signal_delay_s") or 0)
        if lead < WARNING_EARLY_S + 30:
            log.warning("hydra.launcher.timeout_min=%s with signal_delay_s=%s: Slurm may send its time-limit "
                        "warning as the job starts, before it can record its point (the point then fails "
                        "as JobTimeLimit, recorded here); leave at least %d s between them",
                        p["timeout_min"], p.get("signal_delay_s"), WARNING_EARLY_S + 30)

        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(cluster="slurm", folder=p["submitit_folder"],
                                         slurm_max_num_timeout=p.get("max_num_timeout", 0))
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in p.items() if k not in init_keys})
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        points = [self._point(initial_job_idx + i, list(o)) for i, o in enumerate(job_overrides)]
        for pt in points:
            log.info("\t#%d : %s", pt.idx, " ".join(filter_overrides(pt.overrides)))
        state = Singleton.get_state()
        try:
            jobs = executor.map_array(self, [pt.overrides for pt in points], ["hydra.sweep.dir"] * len(points),
                                      [pt.idx for pt in points], [f"job_id_for_{pt.idx}" for pt in points],
                                      [state] * len(points))
        except submitit.core.utils.FailedJobError as e:  # sbatch refused the request: its own words
            why = (str(e).strip().splitlines() or ["no message"])[-1]
            print(f"error: hydra/launcher=slurm: the jobs were not submitted: {why}", file=sys.stderr)
            sys.exit(2)
        return self._wait(jobs, points)

    def _point(self, idx: int, overrides: list[str]) -> _Point:
        """The job folder and config a point will have (as Hydra's run_job computes them)."""
        c = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        HydraConfig.instance().set_config(c)
        try:
            job_dir = Path(str(c.hydra.sweep.dir)) / str(c.hydra.sweep.subdir)
            plain = to_plain(c)
        finally:
            HydraConfig.instance().set_config(self.config)
        return _Point(idx, overrides, job_dir, plain, (store.read_run(job_dir) or {}).get("run_id"))

    def _wait(self, jobs: list, points: list[_Point]) -> list[JobReturn]:
        """Every job's return: its own, or a failed record written here for a job that ended
        without one (cancelled, over its time limit, never able to start)."""
        out: list[JobReturn | None] = [None] * len(jobs)
        open_ = dict(enumerate(jobs))
        array_id = str(jobs[0].job_id).split("_")[0] if jobs else ""
        gone: dict[int, int] = {}
        tick, delay = threading.Event(), 0.5
        while open_:
            states = job_states(array_id)
            for i, job in list(open_.items()):
                if Path(job.paths.result_pickle).exists():
                    out[i] = self._result(job, points[i])
                    del open_[i]
                    continue
                state, reason = states.get(str(job.job_id), (None, ""))
                if state == "PENDING" and reason in NEVER_RUNS:
                    subprocess.run(["scancel", str(job.job_id)], capture_output=True, timeout=60)
                    out[i] = self._failed(points[i], "JobNeverRuns",
                                          f"never runs: Slurm holds job {job.job_id} pending ({reason}): the "
                                          "request exceeds what the partition or account allows", phase="plan")
                    del open_[i]
                elif state not in ACTIVE:
                    # Its result file may land just after the state changes (later still on a
                    # shared file system, for a job that completed).
                    gone[i] = gone.get(i, 0) + 1
                    if gone[i] >= (6 if state == "COMPLETED" else 2):
                        kind, why = _why_ended(str(job.job_id), state, reason, self.params,
                                               _tail(Path(job.paths.stderr)))
                        out[i] = self._failed(points[i], kind, f"{why}; its log: {job.paths.stderr}")
                        del open_[i]
            if open_:
                tick.wait(delay)
                delay = min(delay * 1.5, 3.0)  # squeue once per 3 s at most
        return [r for r in out if r is not None]

    def _result(self, job, pt: _Point) -> JobReturn:
        try:
            return job.results()[0]
        except Exception as e:  # the job's process raised outside the run boundary, or was stopped
            text = str(e)
            last = (text.strip().splitlines() or [type(e).__name__])[-1]
            if "timeout: the Slurm job" in text or "timed-out" in text:
                # The time-limit warning came outside the point (before Hydra ran it, or while
                # submitit's own handler was still in place, which says "timed-out").
                return self._failed(pt, "JobTimeLimit", time_limit_message(str(job.job_id), self.params))
            kind = "JobTimeout" if "timeout:" in text else "JobFailed"
            return self._failed(pt, kind, f"job: Slurm job {job.job_id} failed: {last}"
                                if kind == "JobFailed" else f"timeout: Slurm job {job.job_id}: {last}")

    def _failed(self, pt: _Point, kind: str, message: str, phase: str = "measure") -> JobReturn:
        """The failed run.json of a point whose job wrote none (an ok record stays)."""
        rec = store.read_run(pt.job_dir)
        wrote = rec is not None and rec.get("run_id") != pt.run_id_before
        if not wrote and not (rec and rec.get("status") == "ok"):
            log.error("%s: failed: %s", pt.job_dir.name, message)
            pt.job_dir.mkdir(parents=True, exist_ok=True)
            now = now_iso()
            new = RunRecord(run_id=uuid.uuid4().hex, sweep_name=str(pt.config.get("sweep_name")),
                            job_name=pt.job_dir.name, status="failed", started_at=now, ended_at=now,
                            overrides=tuple(pt.overrides), config=pt.config,
                            error=RunError(kind, message, phase))
            store.write_json(pt.job_dir / store.RUN_FILE, new.to_dict())
        return JobReturn(overrides=pt.overrides, working_dir=str(pt.job_dir), task_name="harness",
                         status=JobStatus.COMPLETED, _return_value="failed")


def time_limit_message(job_id: str, params: dict, early: bool = False) -> str:
    """The error message of a point stopped by Slurm's warning that its job reaches the time limit."""
    msg = (f"timeout: the Slurm job {job_id} reaches its time limit ({params.get('timeout_min')} min) "
           f"within {params.get('signal_delay_s')} s (hydra.launcher.timeout_min)")
    if early:
        msg += (f"; the warning ({signal.Signals(WARNING_SIGNAL).name}) came before the job could handle it "
                f"(Slurm may send it up to {WARNING_EARLY_S} s early)")
    return msg


def _tail(path: Path, size: int = 16 * 1024) -> str:
    """The end of a job's log ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _killed_by_warning(log_tail: str) -> bool:
    """Whether srun says a task of the job died of the time-limit warning signal (which kills a
    process that has not set a handler yet: it came before Python was up)."""
    name = signal.strsignal(WARNING_SIGNAL) or ""
    return bool(name) and any("srun: error:" in ln and ln.rstrip().endswith(f": {name}")
                              for ln in log_tail.splitlines())


def _why_ended(job_id: str, state: str | None, reason: str, params: dict,
               log_tail: str = "") -> tuple[str, str]:
    """(error type, message) of a job that ended without a result; `log_tail`: the end of its log."""
    if state in (None, "FAILED") and _killed_by_warning(log_tail):
        return "JobTimeLimit", time_limit_message(job_id, params, early=True)
    if state == "TIMEOUT":
        return "JobTimeout", (f"timeout: Slurm job {job_id} ran past its time limit "
                              f"({params.get('timeout_min')} min, hydra.launcher.timeout_min)")
    if state == "CANCELLED":
        return "JobCancelled", f"cancelled: Slurm job {job_id} was cancelled (scancel) before it recorded its point"
    if state is None:
        return "JobFailed", f"job: Slurm job {job_id} ended without a result (its state is no longer known)"
    why = f" ({reason})" if reason and reason != "None" else ""
    return "JobFailed", f"job: Slurm job {job_id} ended {state}{why} without a result (killed or crashed)"


def plugin_names() -> dict[str, Any]:
    """Hydra plugin name -> class, for harness.launcher.register."""
    return {"hydra_plugins.harness.SlurmLauncher": SlurmLauncher}
