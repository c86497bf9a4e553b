"""`harness analyze | report | compare | export`: thin argument handling around the analysis."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .agent.cli import narrate, narrative_mode, run, split_overrides, summarize
from .agent.narrative import prepare
from .analysis.compare import DEFAULT_METRICS, compare, parse_check, regressions
from .analysis.offload import parse_layers
from .analysis.pipeline import analyze
from .config import ConfigError
from .report import pipeline
from .report.console import analyze_or_explain, print_comparisons, print_configs, print_ingest
from .report.format import plural
from .store import atomic_write_bytes
from .report.pipeline import write_tables


def _parser(prog: str, desc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"harness {prog}", description=desc)


def _max_bytes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-file-mb", type=float, default=200.0,
                   help="skip files larger than this (MiB), with a reason (default 200)")
    p.add_argument("--model-layers", action="append", default=[], metavar="[MODEL=]N",
                   help="layers the model can offload (Ollama's 'offloaded N/N layers'; a GGUF's blocks + 1), "
                        "for files that sweep num_gpu: values at or above N are one configuration. Repeat per "
                        "model; without MODEL= it applies to every model (a local GGUF is found otherwise)")


class BadOutput(ValueError):
    """--out cannot be what the command writes (a file where a folder goes, or the reverse), or
    another argument is bad (--model-layers): found before anything is analysed. str() is the
    one-line message."""


def check_out(path: Path, want: str) -> None:
    """Raise BadOutput when `path` cannot be the output `want` ("folder" or "file")."""
    why = pipeline.out_problem(path, want)
    if why:
        raise BadOutput(f"--out {path}: {why}")


def _load(prog: str, desc: str, args: list[str], out_name: str, extra=None, out_kind: str = "folder"):
    """Parse PATH... [--out] [--max-file-mb] (+ extra options), check the output path (BadOutput)
    and analyse. Returns (args, analysis or None when nothing usable was found, output path)."""
    p = _parser(prog, desc)
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--out", type=Path, help=f"output {out_kind} (default: PATH/{out_name} for one folder)")
    if extra:
        extra(p)
    _max_bytes(p)
    a = p.parse_args(args)
    out = a.out or (a.paths[0] / out_name if a.paths[0].is_dir() else Path(out_name))
    if a.out is not None or out_kind == "folder":
        check_out(out, out_kind)
    try:
        layers = parse_layers(a.model_layers)
    except ValueError as e:
        raise BadOutput(str(e)) from None
    return a, analyze_or_explain(a.paths, a.max_file_mb, layers), out


def cmd_analyze(args: list[str]) -> int:
    try:
        a, an, out = _load("analyze", "Ingest result folders and benchmark files; write the tidy table and "
                           "statistics.", args, "analysis")
    except BadOutput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if an is None:
        return 1
    try:
        write_tables(an, out)
    except OSError as e:
        print(pipeline.cannot_write(e), file=sys.stderr)
        return 1
    print_ingest(an.ingest)
    print_configs(an)
    print(f"analysis: {out}")
    return 0


def write_report(paths: list[Path], out: Path, max_file_mb: float = 200.0, narrative: str = "none") -> dict:
    """Analyse `paths` and write the report into `out`; narrative="llm" adds the section written
    by the local model with the agent's default config (its run goes to out/agent)."""
    an = analyze(paths, max_file_bytes=int(max_file_mb * 2**20))
    if narrative != "llm":
        return pipeline.write_report(an, out)
    result = narrate(an, out, prepare([]))
    paths_out = pipeline.write_report(an, out, narrative=result)
    summarize(result)
    return paths_out


def cmd_report(args: list[str]) -> int:
    args, overrides = split_overrides(args)
    try:
        mode, args, overrides = narrative_mode(args, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if mode == "llm":  # the narrative written by the local model: see harness/agent
        return run(args, overrides, prog="report")
    if overrides:
        print(f"error: {overrides[0]}: config overrides apply only with report.narrative=llm", file=sys.stderr)
        return 2
    try:
        a, an, out = _load("report", "Analyse and write report.md, report.html (self-contained) and figures/.",
                           args, "report")
    except BadOutput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if an is None:
        return 1
    try:
        paths = pipeline.write_report(an, out)
    except OSError as e:
        print(pipeline.cannot_write(e), file=sys.stderr)
        return 1
    print(f"report: {paths['markdown']}")
    print(f"report: {paths['html']}")
    return 0


def cmd_compare(args: list[str]) -> int:
    p = _parser("compare", "Compare result set B against A: ratio B/A per configuration and metric.")
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--fail-on", action="append", default=[], metavar="METRIC:+-N%",
                   help="exit 1 when a significant change passes this threshold, e.g. decode_tps:-5%% or ttft_ms:+10%%")
    _max_bytes(p)
    a = p.parse_args(args)
    try:
        checks = [parse_check(s) for s in a.fail_on]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        layers = parse_layers(a.model_layers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    an_a, an_b = analyze_or_explain([a.a], a.max_file_mb, layers), analyze_or_explain([a.b], a.max_file_mb, layers)
    if an_a is None or an_b is None:
        return 1  # nothing usable on a side, as for analyze and report
    metrics = tuple(dict.fromkeys(DEFAULT_METRICS + tuple(c.metric for c in checks)))
    result = compare(an_a.samples, an_b.samples, metrics=metrics)
    for side, items in (("A", result.unmatched_a), ("B", result.unmatched_b)):
        for u in items:
            print(f"only in {side}: {u['label']}")
    if not result.rows:  # a CI gate must not pass on no data
        why = (f"A and B have no configuration in common ({plural(len(result.unmatched_a), 'configuration')} "
               f"only in A, {len(result.unmatched_b)} only in B)" if not result.n_matched else
               f"no metric was measured on both sides of the {plural(result.n_matched, 'matched configuration')}")
        print(f"error: nothing compared between {a.a} and {a.b}: {why}", file=sys.stderr)
        return 1
    print_comparisons(result.rows)
    unchecked = [c for c in checks if not any(r["metric"] == c.metric for r in result.rows)]
    if unchecked:
        print(f"error: --fail-on {unchecked[0]}: no matched configuration has {unchecked[0].metric} on both sides; "
              "nothing to check", file=sys.stderr)
        return 1
    failures = regressions(result.rows, checks)
    for msg in failures:
        print(f"REGRESSION: {msg}")
    if checks and not failures:
        print(f"no regression beyond the thresholds ({plural(len(result.rows), 'comparison')})")
    return 1 if failures else 0


def cmd_export(args: list[str]) -> int:
    from .export import FORMATS, export

    try:
        a, an, _ = _load("export", "Export the tidy sample table of PATH in another format.", args, "export",
                         extra=lambda p: p.add_argument("--format", required=True, choices=FORMATS), out_kind="file")
    except BadOutput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if an is None:
        return 1
    data = export(an.samples, a.format)
    if a.out:
        try:
            atomic_write_bytes(a.out, data if isinstance(data, bytes) else data.encode("utf-8"))
        except OSError as e:
            print(pipeline.cannot_write(e), file=sys.stderr)
            return 1
        print(f"export: {a.out}")
    elif isinstance(data, bytes):
        print("error: --out is required for binary formats", file=sys.stderr)
        return 2
    else:
        sys.stdout.write(data)
    return 0
