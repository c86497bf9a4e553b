"""`harness experiment NAME [overrides]`: compose, validate (nothing loads before every check has
passed), run, and print where the report is."""

from __future__ import annotations

import sys
from pathlib import Path

USAGE = """\
usage: harness experiment NAME [overrides]

experiments (conf/experiment/NAME.yaml):
  agent_ab            the agent workflow under configurations A and B, N repetitions each,
                      compared B/A (ratio, 95% CI, p, significance)
  concurrent_agents   K agents generating at once in one process: per-agent and aggregate
                      tok/s, speedup over K=1, efficiency = speedup / K

overrides: any key of the config tree, and the experiment's own, e.g.
  harness experiment concurrent_agents experiment.k=[1,2] experiment.repetitions=3
  harness experiment agent_ab experiment.source=results/20260101-120000
Results: <results_dir>/NAME-<timestamp>/ (experiment.json, NAME.csv, report.md, report.html)
"""


def available() -> tuple[str, ...]:
    from ..hydra_conf import conf_dir

    return tuple(sorted(p.stem for p in (Path(conf_dir()) / "experiment").glob("*.yaml")))


def cmd_experiment(args: list[str]) -> int:
    from ..config import ConfigError

    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, overrides = args[0], args[1:]
    try:
        cfg, spec, prepared = prepare(name, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if name == "concurrent_agents":
        from . import concurrent

        return concurrent.run(cfg, spec, *prepared)
    from . import agent_ab

    return agent_ab.run(cfg, spec, prepared)


def prepare(name: str, overrides: list[str]):
    """Compose and validate everything the experiment will run. No model loads. Returns
    (config, spec, what the experiment's run() needs); raises ConfigError."""
    from ..config import ConfigError, writable_dir_problem
    from . import spec as specs

    known = available()
    if name not in known or name not in specs.KEYS:
        raise ConfigError("experiment", name, f"is not a known experiment; known: {', '.join(known)}")
    specs.check_override_keys(name, overrides)
    from .agent_ab import register_resolvers

    register_resolvers()  # variant A names llama-cpp-python's thread defaults through resolvers
    cfg = compose([f"+experiment={name}", *overrides])
    sp = specs.validate(cfg, name)
    results_dir = cfg.get("results_dir", "results")
    why = writable_dir_problem(results_dir) if isinstance(results_dir, str) and results_dir.strip() else None
    if why:  # the experiment's folder is made there once it has measured: check it before any load
        raise ConfigError("results_dir", results_dir, f"cannot hold results ({why})")
    if name == "concurrent_agents":
        from ..runner import preflight

        return cfg, sp, preflight(cfg)
    from . import agent_ab

    return cfg, sp, agent_ab.prepare(cfg, sp, overrides)


def compose(overrides: list[str]) -> dict:
    """hydra_conf.compose(), with what Hydra refuses (an unknown key or config group option, bad
    override syntax) turned into one-line ConfigErrors."""
    from ..hydra_conf import CompositionError, composition_error, composition_errors
    from ..hydra_conf import compose as hydra_compose

    try:
        return hydra_compose(overrides)
    except composition_errors() as e:
        err = composition_error(e, overrides, hydra_compose)
        raise CompositionError(err.key, err.value, f"cannot be composed: {err.allowed}") from None
