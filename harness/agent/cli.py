"""`harness agent PATH... [--out DIR] [overrides]` and `harness report ... report.narrative=llm`:
the report with the narrative written by the local model.

Arguments of the form key=value (that are not existing paths) are Hydra overrides for the agent
(model=..., runtime.n_ctx=..., sampling.temperature=..., agent.max_tokens=...). They are checked
before anything is analysed or loaded: a bad one is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..config import NARRATIVE_MODES, ConfigError  # one list of modes for harness run and harness report
from ..report import pipeline
from ..report.console import analyze_or_explain
from .narrative import prepare, run_agent

_OVERRIDE = re.compile(r"^[+~]?[A-Za-z_][\w.\-/@]*=")
NARRATIVE_KEY = "report.narrative"


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """(other arguments, Hydra overrides). An existing path is never an override."""
    rest, overrides = [], []
    for a in args:
        (overrides if _OVERRIDE.match(a) and not Path(a).exists() else rest).append(a)
    return rest, overrides


def narrative_mode(args: list[str], overrides: list[str]) -> tuple[str, list[str], list[str]]:
    """report.narrative=MODE or --narrative MODE (default none): (mode, args, overrides) with the
    setting removed. Raises ConfigError for an unknown mode."""
    mode, out_args, out_over = "none", [], []
    it = iter(args)
    for a in it:
        if a == "--narrative":
            mode = next(it, "")
        elif a.startswith("--narrative="):
            mode = a.split("=", 1)[1]
        else:
            out_args.append(a)
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == NARRATIVE_KEY:
            mode = o.split("=", 1)[1]
        else:
            out_over.append(o)
    if mode not in NARRATIVE_MODES:
        raise ConfigError(NARRATIVE_KEY, mode, "must be one of " + "|".join(NARRATIVE_MODES))
    return mode, out_args, out_over


def cmd_agent(args: list[str]) -> int:
    rest, overrides = split_overrides(args)
    return run(rest, overrides, prog="agent")


def run(args: list[str], overrides: list[str], *, prog: str) -> int:
    """Analyse PATH..., run the agent, write the report with its narrative section."""
    p = argparse.ArgumentParser(prog=f"harness {prog}", description=(
        "Analyse PATH..., have the local model write the narrative from the computed facts (fact-checked), "
        "and write report.md, report.html and figures/. key=value arguments are config overrides "
        "(model=..., runtime.n_ctx=..., sampling.temperature=..., agent.max_tokens=...)."))
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help="output folder (default: PATH/report for one folder)")
    p.add_argument("--max-file-mb", type=float, default=200.0,
                   help="skip files larger than this (MiB), with a reason (default 200)")
    a = p.parse_args(args)
    out = a.out or (a.paths[0] / "report" if a.paths[0].is_dir() else Path("report"))
    why = pipeline.out_problem(out, "folder")
    if why:
        print(f"error: --out {out}: {why}", file=sys.stderr)
        return 2
    try:
        setup = prepare(overrides)  # before the analysis and before any load
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    an = analyze_or_explain(a.paths, a.max_file_mb)
    if an is None:
        return 1
    try:
        pipeline.write_tables(an, pipeline.analysis_dir(out))
    except OSError as e:
        print(pipeline.cannot_write(e), file=sys.stderr)
        return 1
    result = narrate(an, out, setup)
    try:
        paths = pipeline.write_report(an, out, narrative=result)
    except OSError as e:
        print(pipeline.cannot_write(e), file=sys.stderr)
        return 1
    print(f"report: {paths['markdown']}")
    print(f"report: {paths['html']}")
    return summarize(result)


def narrate(an, out: Path, setup):
    """Run the agent for the report in `out` (its run goes to out/agent) on an engine worker of its
    own, stopped after it (the model freed, llama.cpp's teardown in the worker's log)."""
    return run_agent(an, setup.overrides, out / "agent", setup=setup)


def summarize(result) -> int:
    m = result.metrics
    if result.status != "ok":
        print(f"narrative: not written: {result.error} (run: {result.run_dir / 'run.json'})", file=sys.stderr)
        return 1
    tps, ttft = m.get("decode_tps"), m.get("ttft_ms")
    print(f"narrative: {result.check.header()}; {result.model}: "
          f"decode {'-' if tps is None else f'{tps:.1f}'} tok/s, TTFT {'-' if ttft is None else f'{ttft:.0f}'} ms, "
          f"{m.get('n_gen_tokens')} tokens (run: {result.run_dir / 'run.json'})")
    return 0
