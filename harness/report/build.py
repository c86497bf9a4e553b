"""Build the report Document from an Analysis, draw its figures, write report.md and report.html.

The sections are assembled here; their words (headlines, findings, recommendations, risks) come
from `findings`, numbers are formatted by `format`, figures are drawn by `figures`.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path

from ..agent.narrative import WORKFLOW_METRICS
from ..analysis.pipeline import shown_params
from ..analysis.table import COLUMNS
from ..store import atomic_write_text
from . import aggregates, figures, html, markdown, variants
from .document import Bullets, Document, Figure, Narrative, Paragraph, Table
from .findings import UNITS, config_label, findings, headlines, recommendations, risks
from .format import ci, num, param, plural, value

HEADLINE_METRICS = ("decode_tps", "ttft_ms", "prefill_tps", "energy_per_token_j", "vram_used_mib", "itl_p99_ms")


def _present(configs, metric: str) -> bool:
    col = f"{metric}_mean"
    return col in configs and configs[col].notna().any()


def build(an, out_dir: Path, narrative=None) -> tuple[Document, dict]:
    """The Document and timing info; figures are written under out_dir/figures. `narrative` (an
    agent.narrative.AgentResult) adds the model-written, fact-checked section and the agent run's
    figures in the workflow summary."""
    t0 = time.perf_counter()
    configs = an.configs
    varying = shown_params(an)
    # what names a configuration: the model too when several were measured or any is a twin
    labels = variants.label_columns(an) + varying
    metrics = [m for m in HEADLINE_METRICS if _present(configs, m)]
    n_ok, n_failed = len(an.ok), int((an.samples["status"] == "failed").sum())
    doc = Document(title="Benchmark report",
                   subtitle=f"{plural(len(configs), 'configuration')}, {plural(n_ok, 'sample')} ({n_failed} failed) from "
                            f"{', '.join(str(r) for r in an.roots)}; generated "
                            f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    found = findings(an, varying)
    figs = _figures(an, varying, out_dir)

    # 1. Executive summary: headline numbers straight from the analysis.
    s = doc.section("Executive summary")
    note = variants.twin_note(an)
    if note is not None:
        s.add(note)
    for line in headlines(an, labels):
        s.add(Paragraph(line, strong=True))
    s.add(Paragraph(f"{plural(len(configs), 'configuration')} {'was' if len(configs) == 1 else 'were'} measured "
                    f"with {plural(n_ok, 'sample')} in total"
                    + (f"; {plural(n_failed, 'sample')} failed and {'is' if n_failed == 1 else 'are'} counted, "
                       "not averaged." if n_failed else ".")))
    if varying:
        s.add(Paragraph("Swept parameters: " + ", ".join(varying) + "."))
    compared = variants.comparison(an, varying)
    if compared is not None:
        s.add(Paragraph("Models compared: " + ", ".join(str(m) for m in configs["model"].dropna().unique()) + "."))
    if narrative is not None:
        _narrative_section(doc, narrative)

    # 2. Data ingestion summary.
    s = doc.section("Data ingestion")
    summ = an.ingest.summary()
    s.add(Table(("what", "count"), tuple((k, str(v)) for k, v in _flat_counts(summ))))
    read = [f for f in an.ingest.files if f.recognised and (f.note or f.n_aggregates or f.n_rejected)]
    if read:
        s.add(Table(("file", "format", "samples", "failed", "aggregates", "rows with rejected values", "how it was read"),
                    tuple((f.path, f.kind, str(f.n_rows), str(f.n_failed), str(f.n_aggregates), str(f.n_rejected),
                           f.note or "-") for f in read[:200]),
                    caption="Files read, with how: units taken from values, columns not used, pre-aggregated "
                            "values, where a tool's definitions differ from ours"))
    skipped = [f for f in an.ingest.files if f.reason and f.reason != "derived harness file"]
    if skipped:
        s.add(Table(("file", "kind", "reason"), tuple((f.path, f.kind, f.reason) for f in skipped[:200]),
                    caption="Files skipped or rows rejected, with the reason"))

    # 3. Environment.
    s = doc.section("Environment")
    env_cols = [c for c in ("hardware", "engine", "model", "model_sha256") if c in an.samples]
    env = an.samples.groupby(env_cols, dropna=False).size().reset_index(name="samples")
    s.add(Table(tuple(env_cols) + ("samples",),
                tuple(tuple(num(v) if not isinstance(v, str) else (v[:16] if c == "model_sha256" else v)
                            for c, v in zip(env_cols + ["samples"], row)) for row in env.itertuples(index=False))))
    if len(env) > 1:
        s.add(Paragraph("Samples from different hardware, model files or engine builds are analysed separately, "
                        "never pooled."))

    # 4. Performance analysis.
    s = doc.section("Performance analysis")
    shown = [m for m in metrics]
    offload = aggregates.offload_names(an.samples)
    headers = ("#",) + tuple(aggregates.param_heading(p, offload) for p in labels) + ("n",) + tuple(f"{m} ({UNITS.get(m, '')}) mean (95% CI)" for m in shown) + ("CV decode",)
    rows = []
    for i, row in enumerate(configs.to_dict("records"), 1):
        rows.append((str(i),) + tuple(param(value(row, p)) for p in labels) + (num(value(row, "n_samples")),)
                    + tuple(ci(row, m) for m in shown)
                    + (f"{value(row, 'decode_tps_cv'):.1%}" if value(row, "decode_tps_cv") is not None else "-",))
    s.add(Table(headers, tuple(rows), caption="Configurations (only parameters that vary are shown"
                + ("; the model of each, a performance twin's marked (twin)" if labels != varying else "") + ")"))
    front = an.pareto
    if front is not None and len(front) and len(configs) > 1:
        objectives = str(front["pareto_objectives"].iloc[0]) if "pareto_objectives" in front else ""
        s.add(Table(tuple(labels) + ("decode tok/s", "TTFT ms", "VRAM MiB"), tuple(
            tuple(param(value(r, p)) for p in labels) + (num(value(r, "decode_tps_mean")), num(value(r, "ttft_ms_mean")),
                                                       num(value(r, "vram_used_mib_mean")))
            for r in front.to_dict("records")),
            caption=f"Pareto front: configurations no other beats on every objective ({objectives})"))
    note_offload = aggregates.offload_paragraph(an)
    if note_offload is not None:
        s.add(note_offload)
    for path, caption in figs:
        s.add(Figure(path, caption))
    agg_table = aggregates.table(getattr(an.ingest, "aggregates", None))
    if agg_table is not None:
        doc.section("Aggregates").add(agg_table)

    # 4a. Model variants: the models side by side, with the roofline's bytes per token.
    if compared is not None:
        s = doc.section("Model variants")
        if note is not None:
            s.add(Paragraph(note.text))
        table, lines = compared
        s.add(table)
        if lines:
            s.add(Bullets(tuple(lines)))
        path = figures.bars([config_label(r, labels) for r in configs.to_dict("records")],
                            list(configs.get("decode_tps_mean", [])), "decode tok/s", "Decode tok/s by model",
                            out_dir / "figures" / "decode_by_model.png")
        if path:
            s.add(Figure("figures/decode_by_model.png", "Decode tok/s per configuration of each model"))

    # 4b. Noise and drift: what the same sweep measured about its own reliability.
    _noise_section(doc, an)

    # 5. Key findings.
    doc.section("Key findings").add(Bullets(tuple(found["statements"]) or ("No finding: too little data.",)))

    # 6. Recommendations.
    doc.section("Recommendations").add(Bullets(tuple(recommendations(an, labels, found))))

    # 7. Risks and mitigations.
    doc.section("Risks and mitigations").add(Table(("risk", "evidence", "mitigation"), tuple(risks(an))))

    # 8. Workflow summary (report time is filled in by write()).
    s = doc.section("Workflow summary")
    tim = dict(an.timings, figures_s=time.perf_counter() - t0)
    s.add(Table(("step", "value"), (
        ("files analysed", str(summ.get("n_files", len(an.ingest.files)))),
        ("samples (ok / failed)", f"{n_ok} / {n_failed}"),
        ("ingest", f"{tim['ingest_s']:.2f} s"),
        ("analysis", f"{tim['analysis_s']:.2f} s"),
        ("report (figures + text)", "{report_s}"),
    ) + (_agent_rows(narrative) if narrative is not None else ())))

    # 9. Glossary.
    doc.section("Metrics glossary").add(Table(("metric", "meaning"), tuple(
        (c.name, c.doc) for c in COLUMNS if c.kind == "metric" and c.doc)))
    return doc, tim


def _pct(x, signed: bool = True) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:+.1%}" if signed else f"{x:.1%}"


def _noise_section(doc: Document, an) -> None:
    """Drift (control point, trend against execution order) and the noise floor per metric."""
    nz = getattr(an, "noise", None) or {}
    noise, trends, drift = nz.get("noise") or {}, nz.get("trends") or {}, nz.get("drift") or []
    if not (noise or trends or drift):
        return
    s = doc.section("Noise and drift")
    s.add(Paragraph("How far this sweep's own numbers can be trusted. An effect is reported only when it is "
                    "significant (Holm-corrected), at least 1% and larger than the drift measured here; samples "
                    "measured in rounds are compared within each round, so a slow drift cancels."))
    rows = []
    for m in noise.keys() | trends.keys() | {k for d in drift for k in d["metrics"]}:
        nf, tr = noise.get(m) or {}, trends.get(m)
        dr = [d["metrics"][m] for d in drift if m in d["metrics"]]
        d0 = dr[0] if dr else {}
        lo, hi = (d0.get("rel_ci") or (None, None)) if d0 else (None, None)
        rows.append((m, (_pct(d0.get("rel")) + (f" [{_pct(lo)}, {_pct(hi)}]" if lo is not None else "")) if d0 else "-",
                     f"{_pct(tr['rel'])} (p={tr['p']:.2g})" if tr else "-",
                     _pct(nf.get("cv"), False), num(nf.get("n")), _pct(nf.get("mde"), False),
                     str(nf.get("reps_for_2pct")) if nf.get("reps_for_2pct") else "-"))
    order = {m: i for i, m in enumerate(("decode_tps", "prefill_tps", "ttft_ms", "e2e_ms"))}
    rows.sort(key=lambda r: order.get(r[0], 99))
    s.add(Table(("metric", "control drift over the sweep [95% CI]", "trend vs execution order", "CV",
                 "samples / config", "min. detectable effect", "samples for 2%"), tuple(rows),
                caption="Control drift: the sweep's first configuration re-measured at the start and end of every "
                        "round (drift.json), change over the sweep relative to its mean. Trend: every sample relative "
                        "to its configuration's mean, regressed on execution order. Minimum detectable effect: "
                        "alpha 0.05, power 0.8, for the CV and samples per configuration measured here."))
    if not drift:
        s.add(Paragraph("No control point was measured (a single point, a sweep from another launcher, or files "
                        "from another tool): drift is judged from the order trend alone, where samples know their "
                        "order."))
    cal = nz.get("calibrated")
    if cal:
        cm = cal.get("metrics") or {}
        parts = [f"{m} CV {_pct((cm.get(m) or {}).get('cv'), False)}" for m in ("decode_tps", "ttft_ms") if m in cm]
        s.add(Paragraph(f"This machine's calibrated noise floor (harness calibrate, {cal.get('created_at', '?')[:10]}, "
                        f"{cal.get('n', '?')} A/A samples per side on {cal.get('model', 'the default model')}): "
                        + ", ".join(parts) + "."))


def _narrative_section(doc: Document, nar) -> None:
    """The narrative as written by the model, its figures checked against the facts it was given.
    The headline figures stay those of the executive summary, computed by the analysis."""
    s = doc.section(f"Narrative (written by {nar.model}, fact-checked)")
    if nar.status != "ok" or nar.check is None:
        s.add(Paragraph(f"No narrative: the agent's run failed ({nar.error or 'unknown error'}); "
                        f"see {nar.run_dir.name}/run.json."))
        return
    c = nar.check
    s.add(Paragraph(f"{c.header()}", strong=True))
    rows = (f"{nar.rows_given} of {plural(nar.rows_total, 'configuration row')}" if nar.rows_given < nar.rows_total
            else _all(nar.rows_total, "configuration row"))
    f = getattr(nar, "fitted", None)
    if f is not None and f.summary < f.summary_total:
        lines = (f"{f.summary} of {plural(f.summary_total, 'summary line')} (the least important dropped to fit "
                 "the context)")
    else:
        lines = _all(f.summary_total, "summary line") if f is not None else "the summary lines"
    s.add(Paragraph(f"Written by the local model {nar.model} from the computed facts ({rows}; {lines}). "
                    f"Every number in it was matched against those facts, allowing for rounding and "
                    f"unit conversions; numbers marked [unverified] are not among them. The executive summary's "
                    f"figures come from the analysis, not from this text."))
    if not nar.text.strip():
        s.add(Paragraph("The model wrote nothing (it ended its turn at once)."))
        return
    s.add(Narrative(nar.text, tuple((f.start, f.end) for f in c.unverified)))


def _all(n: int, what: str) -> str:
    return f"all {plural(n, what)}" if n != 1 else f"its only {what}"


def _agent_rows(nar) -> tuple[tuple[str, str], ...]:
    """The agent's run in the workflow summary: it is a benchmark run like the others."""
    m = nar.metrics or {}
    rows = []
    for key, label, unit in WORKFLOW_METRICS:
        v = m.get(key)
        text = "-" if v is None else (f"{num(float(v))} {unit}".strip() if key != "n_gen_tokens" else str(int(v)))
        if key == "prompt_eval_ms" and v is not None and m.get("n_prompt_tokens"):
            text += f" ({m['n_prompt_tokens']} prompt tokens)"
        if key == "load_ms" and m.get("load_reused"):
            text += " (model already loaded)"
        rows.append((f"narrative ({nar.model}): {label}", text))
    if nar.check is not None:
        rows.append((f"narrative ({nar.model}): fact check", nar.check.header()))
    return tuple(rows)


def _flat_counts(summ: dict) -> list[tuple[str, object]]:
    out = []
    for k, v in summ.items():
        if isinstance(v, dict):
            out += [(f"{k}: {k2}", v2) for k2, v2 in v.items() if not isinstance(v2, (list, dict))]
        elif not isinstance(v, list):
            out.append((k, v))
    return out


def _figures(an, varying, out_dir: Path) -> list[tuple[str, str]]:
    figs: list[tuple[str, str]] = []
    fig_dir = out_dir / "figures"
    ok = an.ok
    for p in varying:
        path = figures.param_effect(ok, p, ("decode_tps", "ttft_ms"), fig_dir / f"by_{p}.png")
        if path:
            figs.append((f"figures/{path.name}", f"decode tok/s and TTFT by {p}: marginal means with 95% CI"))
    label_cols = varying[:3]
    for metric in ("ttft_ms", "itl_p99_ms"):
        path = figures.distribution(ok, metric, label_cols, fig_dir / f"{metric}_distribution.png")
        if path:
            figs.append((f"figures/{path.name}", f"{figures.LABELS[metric]} per configuration"))
    if ok["bandwidth_efficiency"].notna().any():
        cfg = an.configs
        path = figures.bars([config_label(r, variants.label_columns(an) + varying) for r in cfg.to_dict("records")],
                            list(cfg.get("bandwidth_efficiency_mean", [])), "bandwidth efficiency",
                            "Decode tok/s as a share of the memory-bandwidth ceiling", fig_dir / "bandwidth_efficiency.png")
        if path:
            figs.append(("figures/bandwidth_efficiency.png", "Bandwidth efficiency (decode tok/s / roofline ceiling)"))
    figs += _timelines(an, fig_dir)
    return figs


def _timelines(an, fig_dir: Path, limit: int = 4) -> list[tuple[str, str]]:
    """GPU timelines from our telemetry.csv files (only runs that sampled a GPU)."""
    import pandas as pd

    out = []
    ours = an.ok[(an.ok["source_format"] == "harness") & an.ok["gpu_util_pct"].notna()]
    for i, src in enumerate(sorted(ours["source_file"].dropna().unique())):
        if len(out) >= limit:
            break
        csv = next((r / src for r in an.roots if (r / src).is_file()), None)
        csv = csv.parent / "telemetry.csv" if csv is not None else None
        if csv is None or not csv.is_file() or csv.is_symlink():
            continue
        try:
            samples = pd.read_csv(csv)
        except (OSError, ValueError):
            continue
        path = figures.telemetry_timeline(samples, f"{Path(src).parent.name}", fig_dir / f"timeline_{i}.png")
        if path:
            out.append((f"figures/{path.name}", f"GPU utilisation, power and fan by phase: {Path(src).parent.name}"))
    return out


def write(an, out_dir: Path, narrative=None) -> dict:
    """Write report.md, report.html and figures/ under out_dir (with the narrative section when
    `narrative`, an agent.narrative.AgentResult, is given). Returns paths and timings."""
    import shutil

    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "figures", ignore_errors=True)  # no stale figure of an earlier report
    doc, tim = build(an, out_dir, narrative)
    report_s = time.perf_counter() - t0
    for sec in doc.sections:  # fill in the one number that exists only now
        for i, b in enumerate(sec.blocks):
            if isinstance(b, Table) and any("{report_s}" in c for row in b.rows for c in row):
                sec.blocks[i] = Table(b.headers, tuple(tuple(c.replace("{report_s}", f"{report_s:.2f} s") for c in row)
                                                        for row in b.rows), b.caption)
    md = markdown.render(doc)
    page = html.render(doc, out_dir)
    atomic_write_text(out_dir / "report.md", md)
    atomic_write_text(out_dir / "report.html", page)
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html", "figures": out_dir / "figures",
            "timings": tim | {"report_s": report_s}}
