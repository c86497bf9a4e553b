"""agent_ab: the agent workflow (narrative of an analysis, fact-checked) under configurations A
and B, N repetitions each, and B relative to A with the semantics of `harness compare`.

Each repetition is one call of harness.agent.narrative.run_agent on the same analysis (of
experiment.source, default the newest sweep under results_dir). A and B alternate (A, B then B, A),
so every repetition loads its model afresh and a slow drift of the machine touches both alike.

Both variants do the same work: one prompt, fitted once (before the first repetition) to the
smallest context among the variants less the experiment's agent.max_tokens, and that same
agent.max_tokens for both (variants may not set agent.*). Fitting each variant to its own context
would hand the larger context more facts to read, and compare two different prompts.
The devices of both variants are locked for the whole experiment (devicelock, as a sweep point
does before it loads), so no other harness job measures on them in between.
Recorded per repetition: load_ms, ttft_ms, decode_tps, total_duration_ms (request to last token),
workflow_ms (the whole run_agent call: load, prompt fitting, generation, fact check, writing),
generated and prompt tokens, fact rows that fitted, and the fact check's verified figures.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..config import ConfigError
from . import SCHEMA_VERSION, report
from .ratios import ratio_rows
from .spec import VARIANTS, AgentABSpec

NAME = "agent_ab"
TABLE_FILE = "agent_ab.csv"
# (metric, label): the compared metrics, in display order
METRICS = (("decode_tps", "decode tok/s"), ("ttft_ms", "TTFT ms"), ("load_ms", "load ms"),
           ("total_duration_ms", "total duration ms"), ("workflow_ms", "workflow ms"),
           ("n_gen_tokens", "generated tokens"), ("n_prompt_tokens", "prompt tokens"))
TABLE_HEADER = ("metric", "n_a", "n_b", "mean_a", "mean_b", "ratio", "ratio_ci95_low", "ratio_ci95_high",
                "p_value", "significant", "direction", "note")


def register_resolvers() -> None:
    """Resolvers for llama-cpp-python's own thread defaults (Llama.__init__: n_threads =
    max(cpu_count // 2, 1), n_threads_batch = cpu_count), used by variant A."""
    import multiprocessing

    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("llama_cpp_python_threads"):
        OmegaConf.register_new_resolver("llama_cpp_python_threads", lambda: max(multiprocessing.cpu_count() // 2, 1))
    if not OmegaConf.has_resolver("llama_cpp_python_threads_batch"):
        OmegaConf.register_new_resolver("llama_cpp_python_threads_batch", lambda: multiprocessing.cpu_count())


def newest_sweep(results_dir: str | Path) -> Path | None:
    """The folder under results_dir whose sweep.json is newest (experiment folders have none)."""
    found = [p.parent for p in Path(results_dir).glob("*/sweep.json")]
    return max(found, key=lambda p: (p / "sweep.json").stat().st_mtime) if found else None


def prepare(cfg: dict, spec: AgentABSpec, overrides: list[str]) -> dict:
    """Everything checked before a model loads: the source and its analysis, and both variants
    composed, validated and planned by the agent's own prepare(). Raises ConfigError."""
    from ..agent import narrative
    from ..analysis.pipeline import NothingToAnalyse, analyze

    register_resolvers()
    # The command line applies to both variants and wins over their presets (experiment.* and the
    # results folder are the experiment's own).
    common = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split(".")[0] not in ("experiment", "results_dir")]
    # The experiment's generation budget (conf/experiment/agent_ab.yaml, or the command line) for both.
    budget = [f"agent.{k}={cfg['agent'][k]}" for k in ("max_tokens", "min_rows")
              if k in (cfg.get("agent") or {})]
    setups = {}
    for label in VARIANTS:
        try:
            setups[label] = narrative.prepare([*budget, *spec.variants[label], *common])
        except ConfigError as e:
            raise ConfigError(f"experiment.variants.{label}: {e.key}", e.value, e.allowed) from None
    results_dir = cfg.get("results_dir", "results")
    if spec.source is None:
        source = newest_sweep(results_dir)
        if source is None:
            raise ConfigError("experiment.source", None, f"must name a results folder: no sweep (a folder with "
                              f"sweep.json) under results_dir={results_dir}; run a sweep first")
    else:
        source = Path(spec.source)
        if not source.exists():
            raise ConfigError("experiment.source", spec.source, "must be an existing results folder or file")
    try:
        analysis = analyze([source])
    except NothingToAnalyse:
        raise ConfigError("experiment.source", str(source), "must hold usable benchmark data (no ok sample found)") from None
    return {"source": source, "analysis": analysis, "setups": setups, "results_dir": results_dir, "common": common}


def lock_devices(setups: dict) -> dict:
    """Hold the devices every variant computes on, for the whole experiment (raises DeviceBusy,
    unless every variant has bench.allow_shared_device=true). Returns the lock record."""
    from .. import devicelock

    keys = list(dict.fromkeys(k for label in VARIANTS for k in devicelock.device_keys(
        setups[label].plan.n_gpu_layers_effective, setups[label].plan.n_offloadable_layers,
        os.environ.get("CUDA_VISIBLE_DEVICES"))))
    allow = all(setups[label].rc.bench.allow_shared_device for label in VARIANTS)
    lock = devicelock.hold(keys, allow_shared=allow)
    for k, pid in lock["shared_with"].items():
        print(f"warning: device {k} is shared with another harness job (pid {pid}): "
              "bench.allow_shared_device=true", file=sys.stderr)
    return lock | {"allow_shared_device": allow}


def fit_prompt(analysis, setups: dict, backend):
    """The one facts prompt of both variants: fitted with the model of the variant with the
    smallest context, to that context less agent.max_tokens. Returns (FittedFacts, label)."""
    from ..agent.narrative import fit_facts

    label = min(VARIANTS, key=lambda v: setups[v].plan.n_ctx_effective)
    plan = setups[label].plan
    try:
        return fit_facts(analysis, setups[label], backend.model(plan.load_key, plan.gguf.architecture)), label
    finally:
        backend.unload()


def _sample(res, wall_ms: float) -> dict:
    m = res.metrics or {}
    chk = res.check
    return {"status": res.status, "error": res.error, "decode_tps": m.get("decode_tps"), "ttft_ms": m.get("ttft_ms"),
            "load_ms": m.get("load_ms"), "load_reused": m.get("load_reused"),
            "total_duration_ms": m.get("total_duration_ms"), "workflow_ms": wall_ms,
            "n_gen_tokens": m.get("n_gen_tokens"), "n_prompt_tokens": m.get("n_prompt_tokens"),
            "prompt_eval_ms": m.get("prompt_eval_ms"), "rows_given": res.rows_given, "rows_total": res.rows_total,
            "figures": chk.n if chk is not None else None, "figures_verified": chk.k if chk is not None else None}


def run(cfg: dict, spec: AgentABSpec, prepared: dict) -> int:
    """Run the repetitions, write the experiment folder, print where it is. Returns the exit code
    (1 when a repetition failed, after writing everything that was measured)."""
    from .. import engine
    from ..engine.backend import error_type
    from ..measure import backend_for, env_isolated

    out = report.new_folder(prepared["results_dir"], NAME)
    started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    load_before = report.machine_load()
    setups, analysis = prepared["setups"], prepared["analysis"]
    for label in VARIANTS:
        for w in setups[label].plan.warnings:
            print(f"warning: variant {label}: {w}", file=sys.stderr)
    samples: list[dict] = []
    state: dict = {"lock": None, "fitted": None, "fitted_by": None}
    error = None
    backend = backend_for(setups["A"].rc, isolated=env_isolated())  # one engine worker for both variants
    try:
        _measure(spec, analysis, setups, out, samples, state, backend)
    except Exception as e:  # the run boundary: a busy device or a prompt that fits no variant is recorded
        error = f"{error_type(e)}: {e}"
        print(f"{NAME}: failed: {error}", file=sys.stderr)
    finally:
        backend.close()
        from .. import devicelock

        devicelock.release_all()
    fitted, ag = state["fitted"], setups["A"].agent
    rows = comparison(samples)
    failed = error is not None or any(s["status"] != "ok" for s in samples)
    raw = {
        "schema_version": SCHEMA_VERSION, "experiment": NAME, "status": "failed" if failed else "ok",
        "error": error, "started_at": started,
        "ended_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "spec": asdict(spec), "config": cfg, "source": str(prepared["source"]),
        "common_overrides": prepared["common"],
        "variants": {label: _variant_info(setups[label]) for label in VARIANTS},
        "prompt": (fitted.to_dict() | {"fitted_with_variant": state["fitted_by"], "max_tokens": ag.max_tokens,
                                       "why": "one prompt and one generation budget for both variants (the same "
                                              "work): fitted to the smallest context among them less "
                                              "agent.max_tokens"}) if fitted else None,
        "setup": {"engine": engine.engine_info(), "device_lock": state["lock"], "machine_load_before": load_before,
                  "machine_load_after": report.machine_load()},
        "samples": samples, "comparison": rows,
    }
    paths = report.write(out, raw, TABLE_FILE, TABLE_HEADER, [[r.get(h) for h in TABLE_HEADER] for r in rows],
                         _document(raw))
    f = report.fmt
    if fitted:
        print(f"{NAME}: prompt {fitted.n_tokens} tokens ({fitted.rows}/{fitted.rows_total} configuration rows, "
              f"{fitted.summary}/{fitted.summary_total} summary lines; fitted to n_ctx={fitted.n_ctx} of variant "
              f"{state['fitted_by']} less agent.max_tokens={ag.max_tokens}) for both variants", file=sys.stderr)
    for r in rows:
        print(f"{r['metric']:>18}  A {f(r['mean_a']):>8}  B {f(r['mean_b']):>8}  B/A {f(r['ratio']):>6} "
              f"{report.ci(r['ratio_ci95_low'], r['ratio_ci95_high'])}  {r['note'].split('; ')[-1]}")
    print(f"report: {paths['html']}")
    return 1 if failed else 0


def _measure(spec: AgentABSpec, analysis, setups: dict, out, samples: list, state: dict, backend) -> None:
    """Lock the devices, fit the prompt, run the warm-up and the alternating repetitions."""
    from ..agent.narrative import run_agent

    lock = state["lock"] = lock_devices(setups)
    fitted, state["fitted_by"] = fit_prompt(analysis, setups, backend)
    state["fitted"] = fitted
    run_lock = {k: v for k, v in lock.items() if k != "allow_shared_device"}
    for i in range(spec.warmup):
        for label in VARIANTS:
            run_agent(analysis, out_dir=out / "warmup" / f"{label}-{i}", setup=setups[label], fitted=fitted,
                      device_lock=run_lock, backend=backend)
    for r in range(spec.repetitions):
        for label in (VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))):
            backend.unload()  # every repetition loads afresh: load time is measured per repetition
            run_dir = out / "runs" / f"{label}-{r}"
            t0 = time.perf_counter_ns()
            res = run_agent(analysis, out_dir=run_dir, setup=setups[label], fitted=fitted, device_lock=run_lock,
                            backend=backend)
            wall = (time.perf_counter_ns() - t0) / 1e6
            s = {"rep": r, "variant": label, "run_dir": os.path.relpath(run_dir, out), **_sample(res, wall)}
            samples.append(s)
            if s["status"] != "ok":
                print(f"{NAME}: rep {r + 1}/{spec.repetitions} {label} failed: {s['error']}", file=sys.stderr)
            else:
                print(f"{NAME}: rep {r + 1}/{spec.repetitions} {label}: {s['decode_tps'] or 0:.1f} tok/s, "
                      f"TTFT {s['ttft_ms'] or 0:.0f} ms", file=sys.stderr)


def comparison(samples: list[dict]) -> list[dict]:
    """B relative to A per metric (rows of ratios.ratio_rows, in METRICS order); failed
    repetitions are counted, never averaged."""
    side = {label: {m: [s[m] for s in samples if s["variant"] == label and s["status"] == "ok"] for m, _ in METRICS}
            for label in VARIANTS}
    res = ratio_rows(side["A"], side["B"], [m for m, _ in METRICS])
    return [res[m] | {"label": lbl} for m, lbl in METRICS if m in res]


def _variant_info(setup) -> dict:
    rc, plan = setup.rc, setup.plan
    return {"overrides": list(setup.overrides), "effective": plan.effective_dict(),
            "runtime": asdict(rc.runtime), "sampling": asdict(rc.sampling),
            "n_threads": plan.load_key.n_threads, "n_threads_batch": plan.load_key.n_threads_batch,
            "agent_max_tokens": setup.agent.max_tokens, "warnings": list(plan.warnings)}


def _document(raw: dict):
    from ..report.document import Bullets, Document, Paragraph, Table

    f, ci = report.fmt, report.ci
    doc = Document(title="Agent workflow: A vs B",
                   subtitle=f"{raw['started_at']} · llama-cpp-python {raw['setup']['engine']['llama_cpp_python']} · "
                            f"analysis of {raw['source']}")
    sec = doc.section("B relative to A")
    if raw.get("error"):
        sec.add(Paragraph(f"The experiment stopped: {raw['error']}", strong=True))
    p = raw.get("prompt")
    if p:
        sec.add(Paragraph(
            f"Both variants read the same prompt of {p['n_tokens']} tokens ({p['rows']} of {p['rows_total']} "
            f"configuration rows, {p['summary_lines']} of {p['summary_lines_total']} summary lines of the facts) "
            f"and may generate up to agent.max_tokens={p['max_tokens']} tokens: the same work. The prompt was "
            f"fitted once to the smallest context, n_ctx={p['n_ctx']} of variant {p['fitted_with_variant']}, less "
            f"that budget ({p['budget']} prompt tokens), so that it fits both."))
    sec.add(Table(
        headers=("metric", "n A", "n B", "A mean", "B mean", "B/A", "95% CI", "p", "significant", "direction"),
        rows=tuple((r["label"], str(r["n_a"]), str(r["n_b"]), f(r["mean_a"]), f(r["mean_b"]), f(r["ratio"]),
                    ci(r["ratio_ci95_low"], r["ratio_ci95_high"]), f(r["p_value"]),
                    "yes" if r["significant"] else "no", r["direction"]) for r in raw["comparison"]),
        caption="ratio of means B/A, Fieller 95% CI, Welch p; significant when p < 0.05 and the change "
                "is at least 1% (as harness compare)"))
    notes = [f"{r['label']}: {r['note']}" for r in raw["comparison"] if r["note"] not in ("significant", "not significant")]
    if notes:
        sec.add(Bullets(tuple(notes)))
    for label in VARIANTS:
        mine = [s for s in raw["samples"] if s["variant"] == label]
        if mine and all(s["status"] != "ok" for s in mine):
            sec.add(Paragraph(f"Variant {label}: every repetition failed ({mine[0]['error']}).", strong=True))
    if not raw["comparison"]:
        sec.add(Paragraph("No metric has ok repetitions on both sides: nothing to compare.", strong=True))
    v = doc.section("Configurations")
    keys = (("n_gpu_layers requested", lambda x: x["effective"]["n_gpu_layers_requested"]),
            ("n_gpu_layers effective", lambda x: x["effective"]["n_gpu_layers_effective"]),
            ("n_ctx", lambda x: x["runtime"]["n_ctx"]), ("n_batch", lambda x: x["runtime"]["n_batch"]),
            ("n_ubatch", lambda x: x["runtime"]["n_ubatch"]), ("flash_attn", lambda x: x["runtime"]["flash_attn"]),
            ("n_threads / batch", lambda x: f"{x['n_threads']} / {x['n_threads_batch']}"),
            ("temperature", lambda x: x["sampling"]["temperature"]), ("top_p", lambda x: x["sampling"]["top_p"]),
            ("top_k", lambda x: x["sampling"]["top_k"]), ("min_p", lambda x: x["sampling"]["min_p"]),
            ("repeat_penalty", lambda x: x["sampling"]["repeat_penalty"]),
            ("agent.max_tokens", lambda x: x["agent_max_tokens"]))
    va, vb = raw["variants"]["A"], raw["variants"]["B"]
    v.add(Table(headers=("setting", "A", "B"), rows=tuple((k, str(get(va)), str(get(vb))) for k, get in keys)))
    warn = [f"{label}: {w}" for label in VARIANTS for w in raw["variants"][label]["warnings"]]
    if warn:
        v.add(Bullets(tuple(warn)))
    reps = doc.section("Repetitions")
    reps.add(Table(
        headers=("rep", "variant", "status", "load ms", "TTFT ms", "decode tok/s", "total ms", "workflow ms",
                 "tokens", "prompt tokens", "fact rows", "figures verified"),
        rows=tuple((str(s["rep"]), s["variant"], s["status"] if s["status"] == "ok" else f"failed: {s['error']}",
                    f(s["load_ms"]), f(s["ttft_ms"]), f(s["decode_tps"]), f(s["total_duration_ms"]),
                    f(s["workflow_ms"]), f(s["n_gen_tokens"]), f(s["n_prompt_tokens"]),
                    f"{s['rows_given']}/{s['rows_total']}",
                    "-" if s["figures"] is None else f"{s['figures_verified']}/{s['figures']}")
                   for s in raw["samples"])))
    lb, la = raw["setup"]["machine_load_before"], raw["setup"]["machine_load_after"]
    reps.add(Bullets(tuple(x for x in (
        f"{raw['spec']['repetitions']} repetitions per variant, alternating A, B / B, A; each loads its model "
        f"afresh; {raw['spec']['warmup']} untimed warm-up run(s) per variant",
        f"machine load average (1 min) before {f(lb.get('loadavg_1m'))}, after {f(la.get('loadavg_1m'))} on "
        f"{lb.get('cpu_count')} CPUs: other work on the machine adds noise" if lb else None,
        f"overrides for both variants: {' '.join(raw['common_overrides'])}" if raw["common_overrides"] else None,
    ) if x)))
    return doc
