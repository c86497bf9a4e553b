"""The default Hydra launcher of `harness run -m`: the sweep's points in this process, measured in
rounds (harness.schedule) instead of one point after the other.

Hydra's basic launcher runs each point from start to end in declaration order, so the order of
the sweep is confounded with whatever drifts on the machine. This launcher plans every point's
load group (points that share a loaded model), then follows schedule.plan_visits: each point's
first visit goes through Hydra's run_job (job folder, config, logging, callbacks as before), its
later visits continue the same measurement (runner.visit_point), and the control visits measure
the drift (runner.control_visit). A point's run.json is written on its last visit.

Selected in conf/config.yaml (hydra/launcher: rounds). Hydra instantiates launchers only from
its `hydra_plugins` namespace, which an editable install does not put on its plugin scan; so the
class is registered with Hydra's plugin registry by `register()` (called by `harness run`) under
the name `hydra_plugins.harness.RoundsLauncher`, which the launcher config names. The submitit and Ray launchers run every
point in a job of its own, start to end: rounds do not apply there (each job measures its
repetitions back to back, after bench.warmup), and no control point is measured.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from omegaconf import open_dict

log = logging.getLogger("harness")


PLUGIN_MODULE = "hydra_plugins.harness"


class RoundsLauncher(BasicLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from . import callbacks, runner, schedule
        from .hydra_conf import to_plain

        state = callbacks.CURRENT.state
        if state is None:  # not started by `harness run`: one point after the other
            return super().launch(job_overrides, initial_job_idx)
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)

        configs = []
        for idx, overrides in enumerate(job_overrides):
            c = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(c):
                c.hydra.job.id = c.hydra.job.num = initial_job_idx + idx
            configs.append(c)
        groups, reps, rounds, planned = [], [], [], []
        for i, c in enumerate(configs):
            plain = to_plain(c)
            try:
                rc, plan = runner.preflight(plain)
                groups.append(plan.load_key)
                reps.append(rc.bench.repetitions)
                rounds.append(schedule.n_rounds(rc.bench.rounds, rc.bench.repetitions))
                planned.append(True)
            except Exception:  # fails on its visit, recorded there; its own group
                groups.append(("unplanned", i))
                reps.append(1)
                rounds.append(1)
                planned.append(False)
        first = to_plain(configs[0]) if configs else {}
        bench = first.get("bench") or {}
        control = bool(bench.get("control", True)) and len(configs) > 1 and planned[0]
        visits = schedule.plan_visits(groups, reps, rounds, seed=int(bench.get("order_seed", 0) or 0),
                                      control=control)
        log.info("%d points in %d round(s)%s", len(configs), max(rounds, default=0),
                 ", a control point re-measured at the start and end of each" if control else "")
        returns: dict[int, JobReturn] = {}
        dirs: dict[int, Path] = {}
        for v in visits:
            if v.control:
                runner.control_visit(state, first, list(job_overrides[0]), v, sweep_dir)
                continue
            if v.first:
                state.visit = v
                ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                              config=configs[v.point], job_dir_key="hydra.sweep.dir",
                              job_subdir_key="hydra.sweep.subdir")
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                returns[v.point] = ret
                if ret.status == JobStatus.FAILED:
                    _ = ret.return_value  # an error outside the run boundary (results not written): stop
                dirs[v.point] = _job_dir(ret)
                continue
            d = dirs.get(v.point)
            if d is not None and d in state.live:  # skipped, failed or finished points have no more visits
                runner.visit_point(state, d, v)
        return [returns[i] for i in sorted(returns)]


def _job_dir(ret: JobReturn) -> Path | None:
    hc = ret.hydra_cfg
    try:
        return Path(hc.hydra.runtime.output_dir)
    except Exception:
        return None


RoundsLauncher.__module__ = PLUGIN_MODULE  # the name Hydra's registry and conf/hydra/launcher/rounds.yaml use


def register() -> None:
    """Make the launcher known to Hydra's plugin registry (idempotent)."""
    import sys

    from hydra.core.plugins import Plugins

    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])  # so Hydra's instantiate finds it by that name
    Plugins.instance().register(RoundsLauncher)
    import importlib
    import warnings

    # conf/hydra/launcher/ray.yaml shares its name with hydra-ray-launcher's own config on purpose
    # (`hydra/launcher=ray` selects the preset); Hydra 1.3 merges the two and warns about it.
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema",
                            category=UserWarning)
    # The Slurm and Ray launchers need their extras (hydra-submitit-launcher, hydra-ray-launcher).
    for module in ("slurm", "raylaunch"):
        try:
            mod = importlib.import_module(f".{module}", __package__)
        except ImportError:
            continue
        for name, cls in mod.plugin_names().items():
            # The class keeps its own module (jobs unpickle it from there); Hydra finds it by the
            # name its preset gives (conf/hydra/launcher/slurm.yaml, ray.yaml).
            Plugins.instance().register(cls)
            Plugins.instance().class_name_to_class[name] = cls
