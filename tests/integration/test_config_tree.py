"""Every option of every config group, and every point of every sweep preset, composes with real
Hydra and passes validation (experiment presets: tests/integration/test_experiments.py)."""

from __future__ import annotations

import itertools

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from harness.config import validate
from harness.hydra_conf import compose

CONF = ROOT / "conf"
GROUP_OPTIONS = [(g.name, p.stem) for g in sorted(CONF.iterdir()) if g.is_dir() and g.name not in ("sweep", "experiment", "agent")
                 for p in sorted(g.glob("*.yaml"))]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_group_option_composes_and_validates(group, option):
    rc = validate(compose([f"{group}={option}"]))
    assert getattr(rc, group).__class__.__name__.endswith("Config")
    if group == "workload":
        assert rc.workload.name == option
        if rc.workload.prompt_tokens:
            assert rc.workload.prompt_tokens + rc.workload.max_tokens <= rc.runtime.n_ctx


AGENT_OPTIONS = sorted(p.stem for p in (CONF / "agent").glob("*.yaml"))


@pytest.mark.parametrize("option", AGENT_OPTIONS)
def test_agent_option_composes_and_validates(option):
    """The agent group is added on top of the run config (+agent=...), as `harness agent` does."""
    from harness.agent.narrative import agent_config

    cfg = compose([f"+agent={option}"])
    rc = validate(cfg)
    a = agent_config(cfg)
    assert a.max_tokens < rc.runtime.n_ctx


def _points(preset: str) -> list[list[str]]:
    params = OmegaConf.load(CONF / "sweep" / f"{preset}.yaml").hydra.sweeper.params
    axes = [[f"{k}={v.strip()}" for v in str(vals).split(",")] for k, vals in params.items()]
    return [list(p) for p in itertools.product(*axes)]


@pytest.mark.parametrize("preset,n_points", [("quick", 6), ("chimera_grid", 45)])
def test_sweep_preset_points_validate(preset, n_points):
    points = _points(preset)
    assert len(points) == n_points
    seen = set()
    for point in points:
        rc = validate(compose([f"+sweep={preset}", *point]))
        seen.add((rc.runtime.n_gpu_layers, rc.runtime.n_ctx, rc.sampling.temperature))
    assert len(seen) == n_points  # every point is a distinct request


def test_chimera_grid_requests_beyond_the_layer_count_are_one_configuration(model_path):
    """40 and 999 layers on an 18-layer model are the same as 'all': one effective configuration."""
    from harness.plan import make_plan

    ids = {}
    for ngl in ("all", 40, 999, "50%"):
        rc = validate(compose(["+sweep=chimera_grid", f"runtime.n_gpu_layers={ngl}"]))
        ids[ngl] = make_plan(rc, gpu_offload_supported=True, model_path=model_path).effective_id
    assert ids["all"] == ids[40] == ids[999] != ids["50%"]
