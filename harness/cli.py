"""`harness` command line. Imports stay lazy so `harness --help` answers without the engine."""

from __future__ import annotations

import logging
import signal
import sys

USAGE = """\
usage: harness <command> [args]

commands:
  run [overrides]         run one configuration point (Hydra overrides, e.g. runtime.n_ctx=512)
  run -m [overrides]      run a sweep: comma lists are axes, e.g.
                            harness run -m runtime.n_ctx=256,512 sampling.temperature=0.2,1.0
                            harness run -m +sweep=quick
                          put load-changing axes (model, runtime.*) first: the last axis varies
                          fastest and a loaded model is reused while load parameters stay equal
  analyze PATH...         ingest result folders and foreign benchmark files (llama-bench,
                          pytest-benchmark, Ollama-style): statistics, effects, best, Pareto
  report PATH... [--out DIR] [report.narrative=llm [overrides]]
                          analyze and write report.md, report.html and figures/
  agent PATH... [--out DIR] [overrides]
                          the report with a narrative written by the local model (InsightAgent)
                          from the computed facts, every figure fact-checked; its generation is
                          measured and recorded like a run (REPORT/agent/run.json)
  compare A B [--fail-on METRIC:+-N%]...
                          match configurations of two result sets: ratios B/A with CIs; exit 1
                          when a significant regression passes a threshold
  export PATH --format F [--out FILE]
                          csv, parquet, pytest-benchmark, llama-bench-json|jsonl|csv|sql
  models                  list configured models: resolved file, size, architecture, layers,
                          trained context, quantisation, or why the model does not resolve
  models twin NAME|PATH --out FILE.gguf [--seed N]
                          write a performance twin: a spec's (gemma3_270m ... gemma3_27b) or a
                          GGUF's (header only) architecture, tokenizer, tensor shapes and types,
                          with synthetic weights: the source's speed, text that is noise
  calibrate [overrides]   this machine's noise floor: a short A/A measurement on the default
                          model (CV, minimum detectable effect), stored and cited by reports
  doctor                  engine version, GPU offload support, NVML, default model status
  experiment NAME [overrides]
                          agent_ab (agent workflow, configurations A vs B) or concurrent_agents
                          (K agents at once: speedup, efficiency); `harness experiment --help`
  --version               print the harness version

Results: results/<sweep_name>/<job>/run.json (+ tokens.csv, .hydra/), per sweep sweep.json,
runs.csv and runs.parquet. Re-running with the same sweep_name=... resumes the sweep.
`harness run --help` shows Hydra's help and the composed config.
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in ("--version", "version"):
        from . import __version__

        print(f"harness {__version__}")
        return 0
    if cmd == "run":
        return cmd_run(rest)
    if cmd in ("analyze", "report", "compare", "export"):
        from . import analysis_cli

        return getattr(analysis_cli, f"cmd_{cmd}")(rest)
    if cmd == "agent":
        from .agent.cli import cmd_agent

        return cmd_agent(rest)
    if cmd == "models":
        if rest[:1] == ["twin"]:
            from .twin import cmd_twin

            return cmd_twin(rest[1:])
        from .doctor import cmd_models

        return cmd_models(rest)
    if cmd == "experiment":
        from .experiments.command import cmd_experiment

        return cmd_experiment(rest)
    if cmd == "calibrate":
        from .calibrate import cmd_calibrate

        return cmd_calibrate(rest)
    if cmd == "doctor":
        from .doctor import cmd_doctor

        return cmd_doctor(rest)
    print(f"harness: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr, end="")
    return 2


# Options with which Hydra prints or checks and measures nothing.
_NO_POINTS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--shell-completion", "-sc")


def _points_here(args: list[str]) -> bool:
    """Whether this invocation will likely measure points in this process: not a print-only option,
    and no launcher on the command line that runs its jobs elsewhere (a config file may still
    choose one: the sweep callbacks then stop the worker started ahead)."""
    for a in args:
        if a.split("=", 1)[0] in _NO_POINTS:
            return False
        key, _, value = a.lstrip("+~").partition("=")
        if key == "hydra/launcher" and value not in ("rounds", "basic"):
            return False
    return True


def cmd_run(args: list[str]) -> int:
    from datetime import datetime

    import hydra

    from . import callbacks, hydra_conf, runner, store
    from .config import ConfigError

    hydra_conf.register_resolvers()
    from .launcher import register

    register()  # the rounds launcher (conf/hydra/launcher/rounds.yaml), the default of -m
    try:
        # Unknown keys, unknown config group options and bad override syntax: one line and exit 2
        # here, not Hydra's several-line message (and exit 1) from inside hydra.main.
        hydra_conf.check_run_args(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A log file that cannot be written (disk full) must not print a traceback per message: the
    # write of the results says what went wrong, once.
    logging.raiseExceptions = False
    state = runner.SweepState()
    if _points_here(args):
        state.prestart()  # the engine worker imports llama.cpp while Hydra composes
    inv = callbacks.begin_invocation(state)
    if not any(a.split("=", 1)[0].lstrip("+~") == "sweep_name" for a in args):
        # One timestamp for the whole invocation: each job composes its own config, and a
        # per-job ${now:} would scatter one sweep over several folders.
        # Next to the last override: Hydra's parser takes one run of overrides, so one placed
        # after an option (`harness run -m a=1,2 --cfg hydra`) would be refused.
        at = max((i + 1 for i, a in enumerate(args) if "=" in a and not a.startswith("-")), default=len(args))
        args = [*args[:at], f"sweep_name={datetime.now().strftime('%Y%m%d-%H%M%S')}", *args[at:]]
    def run_point(cfg):  # Hydra's task function: every point of this invocation shares `state`
        return runner.run_point(cfg, state)

    run_point.__module__ = runner.__name__  # Hydra names the job after the task's module
    task = hydra.main(version_base="1.3", config_path=hydra_conf.conf_dir(), config_name="config")(run_point)
    saved = sys.argv
    sys.argv = ["harness run", *args]
    signalled: list[int] = []  # SIGINT / SIGTERM received, whatever became of their exception

    def on_signal(signum, frame):
        signalled.append(signum)
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = signal.signal(signal.SIGTERM, on_signal)
    previous_int = signal.signal(signal.SIGINT, on_signal)
    try:
        with hydra_conf.compositions_shared():
            task()
        if signalled:
            # The signal's KeyboardInterrupt was swallowed on its way up (a library that catches
            # it, or it came between two points): the sweep still stops here, as interrupted.
            raise Terminated() if signalled[0] == signal.SIGTERM else KeyboardInterrupt()
    except KeyboardInterrupt as e:
        # SIGINT or SIGTERM: the point being measured has no run.json (writes are atomic, so it
        # is simply missing and a re-run measures it); finished points stay; the sweep says so.
        code = 143 if isinstance(e, Terminated) else 130
        from . import progress

        progress.stop()
        _mark_interrupted(inv.sweep_dir, "SIGTERM" if code == 143 else "SIGINT")
        return code
    except store.ResultNotWritten as e:
        # A run.json could not be written (disk full, read-only, quota): the sweep stops rather
        # than measure points whose results would be lost too. One line, no traceback.
        from . import progress

        progress.stop()
        print(f"error: {e}", file=sys.stderr)
        _mark_interrupted(inv.sweep_dir, "results not written")
        return 1
    except SystemExit as e:
        # Hydra reports an exception that escaped the launcher (a job process that died without
        # a result: killed, out of memory, over its time limit) and exits 1. The points that
        # finished stand; the index says the sweep stopped short.
        if e.code not in (0, None, 2) and inv.sweep_dir is not None and inv.counts is None:
            _mark_interrupted(inv.sweep_dir, _why_stopped(e))
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        sys.argv = saved
        state.close()  # the engine worker frees its model and exits (killed if it does not)
    if inv.sweep_dir is not None:
        _print_summary(inv.sweep_dir, inv.rows)
    for note in sorted(state.notices.said - {"native"}):
        print(f"note: {note}", file=sys.stderr)
    # What the jobs did, read from their folders: under submitit or Ray they ran in other processes.
    t = inv.counts
    if t is None:
        return 0  # --help, --cfg and friends: Hydra printed and ran nothing
    if inv.report_auto and inv.sweep_dir is not None and t["ok"] + t["skipped"]:
        from .analysis_cli import write_report

        try:
            paths = write_report([inv.sweep_dir], inv.sweep_dir / "report",
                                 narrative=inv.report_narrative or "none")
            print(f"report: {paths['html']}")
        except Exception as e:  # the sweep's results stand even if the report cannot be made
            print(f"report: not written: {type(e).__name__}: {e}", file=sys.stderr)
    print(f"{t['ok']} ok, {t['failed']} failed, {t['skipped']} skipped")
    return 1 if t["failed"] else 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every finally block and atomic write completes."""


def _why_stopped(e: SystemExit) -> str:
    """Hydra printed the exception that stopped the sweep and exited 1; the exception it was
    handling tells a disk that takes no more files (Hydra's own files of the next job could not
    be written) from a job that died."""
    import errno

    cause = e.__context__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return f"results not written: {cause.strerror}"
    return "a job ended without a result"


def _mark_interrupted(sweep_dir, how: str) -> None:
    from . import sweepindex
    from .callbacks import invocation_counts

    t = invocation_counts(finished=False)
    if sweep_dir is not None:
        try:
            sweepindex.rebuild(sweep_dir, state="interrupted", last_invocation=dict(t))
        except OSError as e:  # a full disk takes no index either; sweep.json keeps its last whole version
            print(f"error: {sweep_dir / 'sweep.json'} not updated: {e.strerror or e}", file=sys.stderr)
    print(f"interrupted ({how}): {t['ok']} ok, {t['failed']} failed, {t['skipped']} skipped"
          + (f"; re-run with sweep_name={sweep_dir.name} to finish the missing points" if sweep_dir else ""),
          file=sys.stderr)


def _print_summary(sweep_dir, rows: list[dict]) -> None:
    """Terminal table of the sweep: the columns that vary, then the headline metrics."""
    from rich.console import Console
    from rich.table import Table

    from .fields import FIELDS, cell

    if not rows:
        return
    shown = []
    for f in FIELDS:
        if not f.summary:
            continue
        values = {repr(r.get(f.name)) for r in rows}
        if f.name == "job":
            continue  # long; the varying columns identify the point
        is_metric = f.name.endswith(("_mean", "_ms", "_tps")) or f.name == "status"
        if is_metric or len(values) > 1:
            shown.append(f)
    table = Table(title=f"{sweep_dir}", title_justify="left")
    table.add_column("#", justify="right")
    for f in shown:
        table.add_column(f.display, justify="left" if f.name == "status" else "right")
    for i, r in enumerate(rows, 1):
        table.add_row(str(i), *[cell(f, r) for f in shown])
    Console(width=max(120, Console().width)).print(table)
