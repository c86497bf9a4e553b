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

from . import progress, store
from .config import ConfigError, validate
from .hydra_conf import to_plain
from .measure import Notices, Point, backend_for, env_isolated, measure, new_record, now_iso
from .record import RunError, RunRecord

log = logging.getLogger("harness")


@dataclass
class SweepState:
    """What the points of one invocation share in this process: the engine worker (it keeps its
    loaded model from point to point), the statuses for the closing "N ok, M failed, K skipped"
    line, and the notices said once. A launcher that pickles the task (submitit, Ray) gives every
    job process a fresh state."""

    tally: Counter = field(default_factory=Counter)
    notices: Notices = field(default_factory=Notices)
    backend: Any = None

    def engine(self, rc):
        if self.backend is None:
            self.backend = backend_for(rc, isolated=env_isolated())
        elif getattr(self.backend, "timeout_s", None) != rc.bench.point_timeout_s and hasattr(self.backend, "timeout_s"):
            self.backend.timeout_s = rc.bench.point_timeout_s
        return self.backend

    def close(self) -> None:
        """Stop the engine worker (its model freed, llama.cpp's teardown in its log)."""
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def preflight(cfg_dict: dict, *, gpu_offload_supported: bool | None = None):
    """Validate a composed config and plan it (model file, effective parameters). No model load.
    Raises ConfigError."""
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
    return rc, make_plan(rc, gpu_offload_supported=gpu_offload_supported)


def run_point(cfg, state: SweepState | None = None) -> str:
    """Hydra task function: run one point and write its folder. Returns the status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    state = state if state is not None else SweepState()
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
    rec = measure(point, on_rep=lambda ph, i, n, tps: progress.rep(job_name, ph, i, n, tps))
    if rec.status == "ok":
        equivalent = _equivalents(job_dir, rec.effective.get("effective_id"))
        if equivalent:
            log.warning("%s: same effective configuration as %s", job_name, ", ".join(equivalent))
            rec = replace(rec, equivalent_to=tuple(equivalent))
    return _finish(job_dir, rec, state)


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
