"""Hydra callbacks: a pre-flight over every point of a sweep, and the sweep-level files
(sweep.json, runs.csv, runs.parquet) kept current from the job folders."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf


@dataclass
class Invocation:
    """One `harness run`: what the sweep callbacks learn (the sweep folder, its points, the run_id
    of every job folder when it started, the rebuilt index rows, what this invocation did) and the
    sweep state its points share in this process (runner.SweepState). Hydra instantiates the
    callbacks itself from the config, so the CLI hands this object over through `CURRENT`, the one
    place where the callbacks and the CLI meet."""

    state: Any = None  # runner.SweepState of the points run in this process
    sweep_dir: Path | None = None
    rows: list = field(default_factory=list)
    counts: dict | None = None
    before: dict | None = None
    n_points: int = 0
    in_process: bool = True
    report_auto: bool = False
    report_narrative: str = "none"


CURRENT = Invocation()


def begin_invocation(state: Any) -> Invocation:
    """A fresh Invocation for a new `harness run` whose points share `state`."""
    global CURRENT
    CURRENT = Invocation(state=state)
    return CURRENT


def sweep_points(config: Any) -> list[list[str]]:
    """The override list of every job the basic sweeper will launch, in launch order (for a
    single run: its one override list)."""
    from hydra.types import RunMode

    if config.hydra.mode == RunMode.RUN:
        return [list(config.hydra.overrides.task)]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(args)
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def preflight_sweep(config: Any) -> int:
    """Compose, validate and plan every point before the first model loads, and check that the
    results can be written. A bad value (an unknown key or config group option of one point
    included), or a results_dir that cannot hold results, prints one line naming the key, the value
    and what is wrong, and exits with code 2."""
    from hydra import compose
    from hydra.types import RunMode

    from . import engine
    from .config import ConfigError, writable_dir_problem
    from .hydra_conf import composition_error, composition_errors, to_plain
    from .runner import preflight

    # The folder the callbacks and Hydra create first: the sweep folder under results_dir.
    target = config.hydra.sweep.dir if config.hydra.mode == RunMode.MULTIRUN else Path(config.hydra.run.dir).parent
    why = writable_dir_problem(str(target))
    if why:
        print(f"error: {ConfigError('results_dir', config.results_dir, f'cannot hold results ({why})')}",
              file=sys.stderr)
        sys.exit(2)
    points = sweep_points(config)
    common = set.intersection(*(set(p) for p in points)) if points else set()
    gpu = engine.gpu_offload_supported()
    name = config.hydra.job.config_name

    def recompose(overrides: list[str]):
        return compose(config_name=name, overrides=overrides, return_hydra_config=True)

    if config.hydra.mode == RunMode.MULTIRUN:
        # as the sweeper's check and the launcher compose each point: the same composition, done once
        # within harness.hydra_conf.compositions_shared
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()

        def point_config(job: list[str]):
            return loader.load_sweep_config(config, job)
    else:
        def point_config(job: list[str]):
            return compose(config_name=name, overrides=job)

    for job in points:
        try:
            cfg = point_config(job)
        except composition_errors() as e:  # a sweep value Hydra refuses: model=llama99, an unknown key
            print(f"error: {composition_error(e, job, recompose)}", file=sys.stderr)
            sys.exit(2)
        try:
            preflight(to_plain(cfg), gpu_offload_supported=gpu)
        except ConfigError as e:
            varying = [o for o in job if o not in common]  # what tells this point from the others
            print(f"error: {e}" + (f"  (sweep point: {' '.join(varying)})" if varying else ""), file=sys.stderr)
            sys.exit(2)
    return len(points)


def in_process(config: Any) -> bool:
    """Does the launcher run the jobs in this process (Hydra's basic launcher, the rounds launcher)? Others
    (submitit, Ray) run each job in a process of its own, possibly on another host."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return target.endswith(("basic_launcher.BasicLauncher", "harness.RoundsLauncher")) or not target


def invocation_counts(finished: bool = True) -> dict:
    """What this invocation did: ok and failed from the job folders whose run.json is new since it
    started (the same under every launcher: jobs of other processes or hosts write them), skipped
    the points that wrote nothing (their earlier ok record stands). Before the end of a sweep
    (an interrupt) skipped is known only for jobs that ran in this process."""
    from . import store

    inv = CURRENT
    tally = inv.state.tally if inv.state is not None else {}
    d, before = inv.sweep_dir, inv.before
    if d is None or before is None:
        return {k: tally.get(k, 0) for k in ("ok", "failed", "skipped")}
    ran = [r for p in store.job_dirs(d) if (r := store.read_run(p)) and r.get("run_id") != before.get(p.name)]
    out = {k: sum(r.get("status") == k for r in ran) for k in ("ok", "failed")}
    if finished:
        out["skipped"] = max(0, inv.n_points - len(ran))
    else:
        out["skipped"] = tally.get("skipped", 0) if inv.in_process else 0
    return out


def _started(d: Path, config: Any, n: int) -> None:
    from . import store, sweepindex

    d.mkdir(parents=True, exist_ok=True)
    before = {p.name: (store.read_run(p) or {}).get("run_id") for p in store.job_dirs(d)}
    sweepindex.mark_started(d, list(config.hydra.overrides.task))
    # known from now on, so an interrupt can mark the sweep
    CURRENT.sweep_dir, CURRENT.before, CURRENT.n_points, CURRENT.counts = d, before, n, None
    CURRENT.in_process = in_process(config)


def _ended(d: Path) -> None:
    from . import sweepindex

    counts = invocation_counts()
    CURRENT.sweep_dir, CURRENT.counts = d, counts
    CURRENT.rows = sweepindex.rebuild(d, last_invocation=counts)


class SweepIndex(Callback):
    """Runs in the launching process; the jobs may run elsewhere (submitit, Ray), so everything
    here reads what the jobs wrote into their own folders."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from . import progress

        n = preflight_sweep(config)
        d = Path(config.hydra.sweep.dir)
        _started(d, config, n)
        if CURRENT.in_process:
            progress.start(n)
        else:  # the jobs report in their own processes: their logs, not a live bar here
            if CURRENT.state is not None:
                CURRENT.state.release_unused()
            print(f"{n} points launched by {config.hydra.launcher._target_.rsplit('.', 1)[-1]}; "
                  f"each job logs to {d}/<job>/run.log", file=sys.stderr, flush=True)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from . import progress

        progress.stop()
        _ended(Path(config.hydra.sweep.dir))
        CURRENT.report_auto = bool(config.get("report", {}).get("auto", False))
        CURRENT.report_narrative = str(config.get("report", {}).get("narrative", "none"))

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        preflight_sweep(config)
        _started(Path(config.hydra.run.dir).parent, config, 1)

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        _ended(Path(config.hydra.run.dir).parent)
