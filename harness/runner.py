"""One configuration point of a sweep, end to end: validate, plan, measure (harness.measure, on the
supervised engine worker), record.

`run_point` is the Hydra task function. It is the run boundary: an error after planning, or an
engine worker that dies or hangs, is recorded as `status: failed` with its message and phase, and
the sweep goes on. Bad input in a single
run stops before any model loads (one line, exit code 2); in a sweep the sweeper has already
checked every point before the first load.
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import prefetch, progress, store
from .config import ConfigError, validate
from .hydra_conf import to_plain
from .measure import Notices, Point, backend_for, env_isolated, new_record, now_iso
from .record import RunError, RunRecord

log = logging.getLogger("harness")


@dataclass
class SweepState:
    """What the points of one invocation share in this process: the engine worker (it keeps its
    loaded models from point to point), the statuses for the closing "N ok, M failed, K skipped"
    line, the notices said once, and, for a sweep measured in rounds (harness.launcher), the
    points between their visits, the execution order, and the control point with its drift
    samples. A launcher that pickles the task (submitit, Ray) gives every job process a fresh
    state."""

    tally: Counter = field(default_factory=Counter)
    notices: Notices = field(default_factory=Notices)
    backend: Any = None
    visit: Any = None  # schedule.Visit of the call being made (set by the launcher), or None
    live: dict = field(default_factory=dict)  # job folder -> Point between its visits
    settled: dict = field(default_factory=dict)  # job folder -> its last decode rate (a warm-up reference)
    order: int = 0
    warm_pid: int | None = None  # the engine process that has been warmed up
    control: Any = None  # the control Point
    drift: list = field(default_factory=list)

    def prestart(self) -> None:
        """Start the engine worker now (not for HARNESS_ISOLATION=inprocess): it imports the
        engine on another core while this process composes the configuration and plans. A launcher
        that runs its jobs elsewhere kills it unused (release_unused)."""
        if self.backend is None and env_isolated():
            backend = backend_for(None)
            try:
                backend.start()
            except OSError as e:  # the first point starts it again, and records why it cannot
                log.debug("engine worker not started ahead: %s", e)
                backend.close()
                return
            self.backend = backend

    def release_unused(self) -> None:
        """Stop a worker started ahead that no point of this process will use."""
        if self.backend is not None and not getattr(self.backend, "used", True):
            self.backend.close()
            self.backend = None

    def engine(self, rc):
        if self.backend is None:
            self.backend = backend_for(rc, isolated=env_isolated())
        elif getattr(self.backend, "timeout_s", None) != rc.bench.point_timeout_s and hasattr(self.backend, "timeout_s"):
            self.backend.timeout_s = rc.bench.point_timeout_s
        return self.backend

    def next_order(self) -> int:
        self.order += 1
        return self.order - 1

    def close(self) -> None:
        """Stop the samplers of points left between visits (an interrupted sweep) and the engine
        worker (its models freed, llama.cpp's teardown in its log)."""
        for point in [*self.live.values(), self.control]:
            if isinstance(point, Point) and point.sampler is not None:
                point.sampler.stop()
        self.live.clear()
        self.control = None
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def preflight(cfg_dict: dict, *, gpu_offload_supported: bool | None = None):
    """Validate a composed config and plan it (model file, effective parameters; with
    model.weights=twin the twin is made here if it is not cached, and one line says so). No model
    load. Raises ConfigError."""
    from . import engine
    from .plan import make_plan

    rc = validate(cfg_dict)
    if rc.bench.timing == "native":
        from .engine import native

        st = native.status()
        if not st.usable:
            raise ConfigError("bench.timing", "native",
                              f"is not available: {st.reason}; use bench.timing=auto or python")
    if rc.telemetry.nvml == "on":
        from .telemetry.session import check

        usable, reason = check("on", rc.telemetry.gpu_index, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if not usable:
            raise ConfigError("telemetry.nvml", "on", f"requires NVML on the sampled GPU, but {reason} "
                              "(use telemetry.nvml=auto to record host readings only)")
    if gpu_offload_supported is None:
        gpu_offload_supported = engine.gpu_offload_supported()
    plan = make_plan(rc, gpu_offload_supported=gpu_offload_supported)
    for line in plan.notes:  # a performance twin made or used: said once, before the first point
        progress.note(line, key=f"twin:{plan.model_path}")
    return rc, plan


def run_point(cfg, state: SweepState | None = None) -> str:
    """Hydra task function: run one point and write its folder. Returns the status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    state = state if state is not None else SweepState()
    visit, state.visit = state.visit, None
    hc = HydraConfig.get()
    job_dir = Path(hc.runtime.output_dir)
    job_name = job_dir.name
    overrides = tuple(hc.overrides.task)
    multirun = hc.mode == RunMode.MULTIRUN
    existing = store.read_run(job_dir)
    if existing and existing.get("status") == "ok":
        log.info("%s: already done (status ok), skipped", job_name)
        state.tally["skipped"] += 1
        progress.point_done(job_name, "skipped")
        return "skipped"

    cfg_dict = to_plain(cfg)
    started = now_iso()
    try:
        rc, plan = preflight(cfg_dict)
    except Exception as e:  # the run boundary: an unusable point must not end the sweep
        if isinstance(e, ConfigError) and not multirun:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        # In a sweep every point was checked before the first load, so something changed since
        # (a model file removed or unreadable): this point fails, the sweep goes on.
        log.error("%s: failed while planning: %s", job_name, e)
        import uuid

        rec = RunRecord(run_id=uuid.uuid4().hex, sweep_name=str(cfg_dict.get("sweep_name")), job_name=job_name,
                        status="failed", started_at=started, ended_at=now_iso(), overrides=overrides,
                        config=cfg_dict, error=RunError(type(e).__name__, str(e), "plan"))
        return _finish(job_dir, rec, state)
    for w in plan.warnings:
        state.notices.once(w, w)  # once per sweep: every point of it would repeat the same notice
    rec = new_record(rc, plan, job_name=job_name, overrides=overrides, config=cfg_dict, started_at=started)
    point = Point(rc, plan, state.engine(rc), rec, job_dir, notices=state.notices)
    report = multirun and bool((cfg_dict.get("report") or {}).get("auto"))
    point.after = prefetch.STATISTICS + prefetch.SWEEP_INDEX + (prefetch.REPORT if report else ())
    try:
        point.start()
    except Exception as e:  # the run boundary
        point.fail(e)
        return _close(job_dir, point, state)
    state.live[job_dir] = point
    return visit_point(state, job_dir, visit)


def visit_point(state: SweepState, job_dir: Path, visit=None) -> str:
    """Measure what `visit` (schedule.Visit; None: everything at once) owes of the point in
    `job_dir`: warm up when the visit says so (or the engine process is new), the visit's
    repetitions, and on its last visit the record. Returns the status ("pending" between visits)."""
    point = state.live[job_dir]
    b = point.rc.bench
    last = visit is None or visit.last
    reps = range(b.repetitions) if visit is None else visit.reps
    name = point.record.job_name
    try:
        if visit is not None and not visit.first:
            point.resume()
        pid = point.backend.pid
        if visit is None or visit.warm or state.warm_pid != pid:
            if b.warmup:
                progress.rep(name, "warmup", 1, 1, None)
            point.warm_up(b.warmup, state.settled.get(job_dir))
            state.warm_pid = pid
        for r in reps:
            rep = point.repetition(r, round=None if visit is None else visit.round,
                                   order=None if visit is None else state.next_order())
            state.settled[job_dir] = rep.metrics.decode_tps
            progress.rep(name, "rep", r + 1, b.repetitions, rep.metrics.decode_tps)
        if last:
            point.finish()
    except Exception as e:  # the run boundary: the failure is this point's, the sweep goes on
        point.fail(e)
        last = True
    if not last:
        point.pause()
        return "pending"
    del state.live[job_dir]
    return _close(job_dir, point, state)


def _close(job_dir: Path, point: Point, state: SweepState) -> str:
    rec = point.close()
    if rec.status == "ok":
        equivalent = _equivalents(job_dir, rec.effective.get("effective_id"))
        if equivalent:
            log.warning("%s: same effective configuration as %s", rec.job_name, ", ".join(equivalent))
            rec = replace(rec, equivalent_to=tuple(equivalent))
    return _finish(job_dir, rec, state)


def control_visit(state: SweepState, cfg_dict: dict, overrides: list[str], visit, sweep_dir: Path) -> None:
    """One repetition of the control point (the sweep's first point) for the drift record,
    <sweep>/drift.json, rewritten after every control repetition. A control that fails is
    reported once and dropped; the sweep goes on."""
    if state.control is False:
        return
    point = state.control
    try:
        if point is None:
            rc, plan = preflight(cfg_dict)
            point = Point(rc, plan, state.engine(rc),
                          new_record(rc, plan, job_name="control", config=cfg_dict), None, notices=state.notices)
            state.control = point
            point.start()
        else:
            point.resume()
        pid = point.backend.pid
        if state.warm_pid != pid:  # the process's warm-up before its first measured repetition
            point.warm_up(point.rc.bench.warmup)
            state.warm_pid = pid
        order = state.next_order()
        rep = point.repetition(len(point.repetitions), round=visit.round, order=order)
        point.pause()
    except Exception as e:
        log.warning("control point failed (%s: %s); the drift of this sweep is not measured", type(e).__name__, e)
        if isinstance(point, Point) and point.sampler is not None:
            point.sampler.stop()
        state.control = False
        return
    m = rep.metrics
    state.drift.append({"round": visit.round, "position": visit.control, "order": order,
                        "t_ns": point.raws[-1].t_request_ns, **{k: getattr(m, k) for k in DRIFT_METRICS}})
    write_drift(sweep_dir, point, overrides, state.drift, visit.rounds)


DRIFT_METRICS = ("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms")
DRIFT_FILE = "drift.json"


def write_drift(sweep_dir: Path, point: Point, overrides: list[str], samples: list[dict], rounds: int) -> None:
    rec = point.record
    store.write_json(sweep_dir / DRIFT_FILE, {
        "schema_version": 1,
        "what": "the sweep's first point re-measured at the start and end of every round, in execution order",
        "control": {"overrides": list(overrides), "effective_id": rec.effective.get("effective_id"),
                    "config": _control_params(rec.config)},
        "rounds": rounds,
        "started_at": rec.started_at,
        "samples": samples,
    })


def _control_params(cfg: dict) -> dict:
    return {k: cfg.get(k) for k in ("model", "runtime", "sampling", "workload")}


def _finish(job_dir: Path, rec: RunRecord, state: SweepState) -> str:
    """Write the point's run.json. When that fails (disk full, read-only, quota) the sweep stops
    with store.ResultNotWritten: the next points would measure and lose their results too. The
    atomic write leaves no partial run.json and no temporary file."""
    try:
        store.write_json(job_dir / store.RUN_FILE, rec.to_dict())
    except OSError as e:
        raise store.ResultNotWritten(e) from e
    state.tally[rec.status] += 1
    progress.point_done(rec.job_name, rec.status)
    return rec.status


def _equivalents(job_dir: Path, effective_id: str | None) -> list[str]:
    """Other points of this sweep that resolved to the same effective configuration."""
    out = []
    for d in store.job_dirs(job_dir.parent):
        if d != job_dir:
            r = store.read_run(d)
            if r and (r.get("effective") or {}).get("effective_id") == effective_id:
                out.append(d.name)
    return out
