"""The report's narrative: a local model, as InsightAgent, writes it from the computed facts, and
every figure it writes is checked against those facts.

    setup = prepare(["model=gemma3_1b", "sampling.temperature=0.2"])   # ConfigError before any load
    result = run_agent(analysis, out_dir=report_dir / "agent", setup=setup)
    result.text, result.check.header(), result.metrics["decode_tps"]

`run_agent(analysis, cfg_overrides, out_dir)` is the whole step: config (the `agent` group plus
the usual model/runtime/sampling groups), facts, prompt sized to the context, one measured
generation recorded as a run (out_dir/run.json, tokens.csv, telemetry.csv), the text
(out_dir/narrative.md) and its fact check (out_dir/factcheck.json).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from ..config import ConfigError
from .factcheck import CheckResult, check, mark
from .facts import build_facts, fit

AGENT_GROUP = "+agent=default"
_AGENT_KEYS = ("max_tokens", "min_rows", "system", "task", "response_prefix")

# The agent's metrics in the report's workflow summary: (key, label, unit).
WORKFLOW_METRICS = (("decode_tps", "Throughput", "tok/s"), ("ttft_ms", "TTFT", "ms"),
                    ("total_duration_ms", "Total Duration", "ms"), ("n_gen_tokens", "Tokens Generated", ""),
                    ("prompt_eval_ms", "Prompt Eval", "ms"), ("eval_duration_ms", "Eval Duration", "ms"),
                    ("load_ms", "Load Duration", "ms"))


@dataclass(frozen=True)
class AgentConfig:
    max_tokens: int
    min_rows: int
    system: str
    task: str
    response_prefix: str = ""


@dataclass(frozen=True)
class AgentSetup:
    """A validated, planned agent run: nothing is loaded yet."""

    cfg: dict  # the composed config
    agent: AgentConfig
    rc: object  # config.RunConfig
    plan: object  # plan.Plan
    overrides: tuple[str, ...]

    @property
    def model(self) -> str:
        return self.rc.model.name


@dataclass
class AgentResult:
    status: str  # ok | failed
    model: str
    text: str  # the generated narrative ("" when the run failed)
    check: CheckResult | None
    record: dict  # the agent run's run.json
    metrics: dict  # WORKFLOW_METRICS keys -> value (None when not measured)
    run_dir: Path
    rows_given: int = 0  # configuration rows of the facts table that fitted in the prompt
    rows_total: int = 0
    error: str | None = None
    facts: tuple = field(default=(), repr=False)  # the Facts the text was checked against
    fitted: object = field(default=None, repr=False)  # FittedFacts of the prompt (None: failed before)

    @property
    def marked_text(self) -> str:
        return mark(self.text, self.check) if self.check is not None else self.text


def agent_config(cfg: dict) -> AgentConfig:
    """The `agent` section of a composed config, checked. Raises ConfigError naming the key."""
    a = cfg.get("agent")
    if not isinstance(a, dict):
        raise ConfigError("agent", a, "must be a config group (mapping)")
    for k in a:
        if k not in _AGENT_KEYS:
            raise ConfigError(f"agent.{k}", a[k], "is not a known key; known: " + ", ".join(sorted(_AGENT_KEYS)))
    for k in ("max_tokens", "min_rows"):
        v = a.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < (1 if k == "max_tokens" else 0):
            raise ConfigError(f"agent.{k}", v, "must be a positive integer" if k == "max_tokens"
                              else "must be a non-negative integer")
    for k in ("system", "task"):
        if not isinstance(a.get(k), str) or not a[k].strip():
            raise ConfigError(f"agent.{k}", a.get(k), "must be a non-empty string")
    prefix = a.get("response_prefix", "")
    if prefix is None:
        prefix = ""
    if not isinstance(prefix, str):
        raise ConfigError("agent.response_prefix", prefix, "must be a string (empty: no prefill)")
    if "{facts}" not in a["task"]:
        raise ConfigError("agent.task", a["task"][:40] + "...", "must contain {facts} (where the facts go)")
    return AgentConfig(max_tokens=a["max_tokens"], min_rows=a["min_rows"], system=a["system"], task=a["task"],
                       response_prefix=prefix)


def compose(overrides: Sequence[str]) -> dict:
    """The agent's composed config; Hydra's composition errors become one-line ConfigErrors."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from ..hydra_conf import compose as hydra_compose

    args = [AGENT_GROUP, *overrides]
    if not any(o.split("=", 1)[0].lstrip("+~") == "sweep_name" for o in overrides):
        args.append("sweep_name=agent")  # the run's sweep_name in run.json; it joins no sweep folder
    try:
        return hydra_compose(args)
    except (HydraException, OmegaConfBaseException) as e:
        msg = str(e).strip()
        first = msg.splitlines()[0] if msg else type(e).__name__
        bad = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") in first), None)
        options = re.search(r"Available options[^:]*:((?:\n\t\S+)+)", msg)
        allowed = f"cannot be applied ({first.rstrip('.')})" + (
            "; available: " + ", ".join(options.group(1).split()) if options else "")
        if bad is None:
            raise ConfigError("overrides", " ".join(overrides), allowed) from e
        key, _, value = bad.partition("=")
        raise ConfigError(key.lstrip("+~"), value, allowed) from e


def prepare(cfg_overrides: Sequence[str] = ()) -> AgentSetup:
    """Compose, validate and plan the agent run (model file resolved, nothing loaded). Raises
    ConfigError for a bad value."""
    from ..hydra_conf import compose as hydra_compose
    from ..hydra_conf import composition_error, composition_errors
    from ..runner import preflight

    try:
        cfg = compose(cfg_overrides)
    except composition_errors() as e:
        # What Hydra refused, as `harness run` says it: the key or group, and what exists instead.
        cause = e.__cause__ if isinstance(e, ConfigError) else e
        if cause is None or isinstance(cause, ConfigError) or not isinstance(cause, composition_errors()):
            raise
        raise composition_error(cause, list(cfg_overrides),
                                lambda ov: hydra_compose([AGENT_GROUP, *ov])) from None
    ag = agent_config(cfg)
    if (cfg.get("model") or {}).get("weights") == "twin":  # refused before a twin is made or loaded
        raise ConfigError("model.weights", "twin", NARRATOR_REAL)
    # The workload is the persona and its task; the facts are filled in once the model is loaded.
    cfg["workload"] = {**cfg["workload"], "name": "insight_agent", "kind": "text", "system": ag.system,
                       "prompt": ag.task, "max_tokens": ag.max_tokens, "prompt_tokens": None}
    rc, plan = preflight({k: v for k, v in cfg.items() if k != "agent"})
    refuse_twin(plan)
    if ag.max_tokens >= plan.n_ctx_effective:
        raise ConfigError("agent.max_tokens", ag.max_tokens,
                          f"must be less than the context (runtime.n_ctx={plan.n_ctx_effective}) to leave room "
                          "for the facts; lower it or raise runtime.n_ctx")
    return AgentSetup(cfg=cfg, agent=ag, rc=rc, plan=plan, overrides=tuple(cfg_overrides))


NARRATOR_REAL = ("must be real for the narrative: a performance twin has synthetic weights, so its text is noise "
                 "(narrate with a real model, e.g. model=gemma3_270m)")


def refuse_twin(plan) -> None:
    """The narrator is never a performance twin, whatever the config says: a twin file found as
    the model (model.path, $HARNESS_MODELS) is refused too. Raises ConfigError (one line)."""
    if plan.twin is not None:
        raise ConfigError("model.path", plan.model_path,
                          f"is a performance twin of {plan.twin.get('twin_of')}; the narrator {NARRATOR_REAL}")


@dataclass(frozen=True)
class FittedFacts:
    """The facts prompt fitted to a context: the user message (task with the facts filled in),
    what of the fact sheet it holds, and the facts it states (what the text is checked against)."""

    user: str
    n_tokens: int  # the whole prompt (system, template, answer prefix), with the fitting model's tokenizer
    budget: int  # prompt tokens it was fitted to: n_ctx - agent.max_tokens
    n_ctx: int
    rows: int
    rows_total: int
    summary: int
    summary_total: int
    facts: tuple = field(default=(), repr=False)

    def to_dict(self) -> dict:
        return {"n_tokens": self.n_tokens, "budget": self.budget, "n_ctx": self.n_ctx, "rows": self.rows,
                "rows_total": self.rows_total, "summary_lines": self.summary, "summary_lines_total": self.summary_total}


def _full_prompt(setup: AgentSetup, lm, user: str):
    """The prompt as generated: chat template, system message, and the answer prefix."""
    from ..workload import build_prompt

    ag, rc = setup.agent, setup.rc
    p = build_prompt(replace(rc.workload, prompt=user), lm, rc.sampling.seed)
    if ag.response_prefix and p.text is not None:  # the answer starts as configured
        text = p.text + ag.response_prefix
        p = replace(p, text=text, n_tokens=len(lm.tokenize(text, p.add_bos)),
                    note="; ".join(x for x in (p.note, "answer prefilled with agent.response_prefix") if x))
    return p


def fit_facts(analysis, setup: AgentSetup, lm, sheet=None) -> FittedFacts:
    """The fact sheet of `analysis` fitted to the loaded model's context less agent.max_tokens,
    counted with its tokenizer (see facts.fit for what is dropped first). Raises PromptTooLong when
    not even the minimal sheet (the headline lines and agent.min_rows rows, at least one) fits."""
    ag = setup.agent
    sheet = build_facts(analysis) if sheet is None else sheet
    budget = lm.n_ctx - ag.max_tokens
    try:
        f = fit(sheet, lambda facts: ag.task.replace("{facts}", facts),
                lambda user: _full_prompt(setup, lm, user).n_tokens, budget, min_rows=max(1, ag.min_rows))
    except ValueError as e:
        raise _too_long(f"{e} (runtime.n_ctx={lm.n_ctx}, agent.max_tokens={ag.max_tokens})") from e
    return FittedFacts(user=f.prompt, n_tokens=f.n_tokens, budget=budget, n_ctx=lm.n_ctx, rows=f.rows,
                       rows_total=len(sheet.rows), summary=f.summary, summary_total=len(sheet.summary),
                       facts=sheet.facts(f.rows, f.summary))


def run_agent(analysis, cfg_overrides: Sequence[str] = (), out_dir: Path | str = "agent", *,
              setup: AgentSetup | None = None, fitted: FittedFacts | None = None,
              device_lock: dict | None = None, backend=None) -> AgentResult:
    """Write the narrative of `analysis` with the configured local model and fact-check it.

    out_dir receives the run (run.json, tokens.csv, telemetry.csv), prompt.txt, narrative.md and
    factcheck.json. A ConfigError (bad override) is raised before anything loads; a failure while
    loading or generating is recorded in run.json and returned as status "failed".

    `fitted` (from fit_facts) gives the prompt instead of fitting it to this run's context: runs
    that are compared then do the same work; it must fit this context with agent.max_tokens.
    `device_lock`: the lock record of devices the caller already holds (measure_once takes them
    otherwise). `backend`: the engine to run on (harness.measure.backend_for); by default a
    supervised worker started for this call and stopped after it."""
    from .. import store
    from .measure import measure_once

    setup = setup or prepare(cfg_overrides)
    refuse_twin(setup.plan)  # a twin's generated text is never quoted as a narrative
    out_dir = Path(out_dir)
    ag = setup.agent
    sheet = build_facts(analysis) if fitted is None else None
    given: dict = {"fitted": fitted}

    def make_prompt(lm):
        f = given["fitted"]
        if f is None:
            f = given["fitted"] = fit_facts(analysis, setup, lm, sheet)
        prompt = _full_prompt(setup, lm, f.user)
        if prompt.n_tokens > lm.n_ctx - ag.max_tokens:
            raise _too_long(f"the given facts prompt of {prompt.n_tokens} tokens + agent.max_tokens={ag.max_tokens} "
                            f"does not fit in runtime.n_ctx={lm.n_ctx}")
        cfg = {**setup.cfg, "workload": {**setup.cfg["workload"], "prompt": f.user}}
        store.atomic_write_text(out_dir / "prompt.txt", prompt.text or "")
        return prompt, cfg

    measured = measure_once(setup.rc, setup.plan, out_dir, make_prompt, cfg=setup.cfg, overrides=setup.overrides,
                            device_lock=device_lock, backend=backend)
    rec = measured.record.to_dict()
    f = given["fitted"]
    facts = f.facts if f is not None else ()
    text = (ag.response_prefix + measured.text) if measured.record.status == "ok" and measured.text else ""
    result = AgentResult(status=measured.record.status, model=setup.model, text=text.strip(), check=None,
                         record=rec, metrics=workflow_metrics(rec), run_dir=out_dir,
                         rows_given=f.rows if f is not None else 0,
                         rows_total=f.rows_total if f is not None else len(sheet.rows), facts=facts, fitted=f,
                         error=(f"{measured.record.error.type}: {measured.record.error.message}"
                                if measured.record.error else None))
    if result.status == "ok":
        result.check = check(result.text, facts)
        store.atomic_write_text(out_dir / "narrative.md", result.text + "\n")
        store.write_json(out_dir / "factcheck.json", result.check.to_dict()
                         | {"facts_rows_given": result.rows_given, "facts_rows_total": result.rows_total,
                            "facts_summary_lines_given": f.summary, "facts_summary_lines_total": f.summary_total})
    return result


def _too_long(msg: str) -> Exception:
    from ..engine import PromptTooLong

    return PromptTooLong(msg)


def workflow_metrics(rec: dict) -> dict:
    """The agent run's figures for the workflow summary, from its one timed repetition."""
    reps = rec.get("repetitions") or []
    r = reps[0] if reps else {}

    def num(v, scale: float = 1.0):
        return float(v) / scale if v is not None else None

    load = rec.get("load") or {}
    return {"decode_tps": num(r.get("decode_tps")), "ttft_ms": num(r.get("ttft_ms")),
            "total_duration_ms": num(r.get("total_duration"), 1e6),
            "n_gen_tokens": int(r["n_gen_tokens"]) if r.get("n_gen_tokens") is not None else None,
            "prompt_eval_ms": num(r.get("prompt_eval_ms")),
            "n_prompt_tokens": int(r["n_prompt_tokens"]) if r.get("n_prompt_tokens") is not None else None,
            "eval_duration_ms": num(r.get("eval_duration"), 1e6), "load_ms": num(load.get("load_ms")),
            "load_reused": load.get("reused")}
