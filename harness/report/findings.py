"""The report's words from an Analysis: headline lines, key findings, recommendations and risks.

Every statement carries its numbers from the analysis; recommendations follow from the findings by
rules, risks from what the data shows. `build` places them in the document.
"""

from __future__ import annotations

from ..analysis import table
from . import figures
from .format import ci, num, param, plural, value

UNITS = {"decode_tps": "tok/s", "ttft_ms": "ms", "prefill_tps": "tok/s", "energy_per_token_j": "J/token",
         "vram_used_mib": "MiB", "itl_p99_ms": "ms", "e2e_ms": "ms"}
SAMPLING_PARAMS = {"temperature", "top_p", "top_k", "min_p", "repeat_penalty"}


def config_label(row, varying: list[str]) -> str:
    parts = [f"{p}={param(value(row, p))}" for p in varying if value(row, p) is not None]
    return ", ".join(parts) or "default configuration"


def headlines(an, varying) -> list[str]:
    out = []
    for group, objectives in (an.best or {}).items():
        prefix = f"[{group}] " if len(an.best) > 1 else ""
        for objective, row in objectives.items():
            metric = objective.split(" ", 1)[1] if " " in objective else objective
            clear = "" if value(row, "clear") in (None, True) else " (not distinguishable from the runner-up)"
            out.append(f"{prefix}Best {figures.LABELS.get(metric, metric)}: {ci(row, metric)} {UNITS.get(metric, '')} "
                       f"with {config_label(row, varying)}{clear}")
    return out


def findings(an, varying) -> dict:
    statements, no_effect, significant = [], [], []
    shown = set(varying)
    for e in an.effect_summary:
        param, metric, big = e["param"], e["metric"], abs(e.get("largest_rel_diff") or 0.0)
        if param not in shown and param.endswith("_effective") and param[: -len("_effective")] in shown:
            param = param[: -len("_effective")]  # the effective twin equals the request: name the request
        where = f" [{e['group']}]" if len(an.best or {}) > 1 else ""
        verdict = e.get("verdict", "")
        if verdict == "measurable effect":
            significant.append((param, metric))
            statements.append(f"{param} changes {metric}{where}: up to {big:.1%} between adjacent levels "
                              f"({e.get('largest_between') or ''}), significant after Holm correction.")
        elif verdict == "effect coincides with a model reload":
            statements.append(f"The {metric} difference across {param}{where} (up to {big:.1%}) coincides with a "
                              f"model reload: a load effect, not attributed to {param}.")
        elif verdict == "same effective configuration":
            statements.append(f"The {param} values compared{where} are the same effective configuration: "
                              f"no effect on {metric} is possible.")
        else:
            no_effect.append((param, metric))
            statements.append(f"{param} has no measurable effect on {metric}{where} (largest difference {big:.1%}, "
                              f"not significant after Holm correction, below the 1% minimum effect, or within the drift this sweep measured).")
    merged = []
    if "requested_n_gpu_layers" in an.configs:
        for row in an.configs.to_dict("records"):
            req = value(row, "requested_n_gpu_layers")
            key = (req, value(row, "n_gpu_layers_effective"), value(row, "hardware_group"))
            if isinstance(req, str) and "," in req and key not in merged:
                merged.append(key)
                where = f" on {key[2]}" if an.configs["hardware_group"].nunique() > 1 else ""
                statements.append(f"n_gpu_layers {req.replace(',', ', ')} are the same configuration{where} "
                                  f"({num(key[1])} layers offloaded): their points are pooled as one.")
    noisy = an.configs[an.configs["noisy"]] if "noisy" in an.configs else an.configs.iloc[0:0]
    if len(noisy):
        statements.append(f"{len(noisy)} of {plural(len(an.configs), 'configuration')} "
                          f"{'is' if len(noisy) == 1 else 'are'} noisy (CV > 5% or fewer than 3 samples): "
                          f"{'its' if len(noisy) == 1 else 'their'} differences need more repetitions to be trusted.")
    failed = an.samples[an.samples["status"] == "failed"]
    if len(failed):
        top = failed["error"].fillna("unknown").value_counts().head(3)
        statements.append(f"{plural(len(failed), 'sample')} failed; most common: "
                          + "; ".join(f"{str(k)[:80]} (x{v})" for k, v in top.items()) + ".")
    return {"statements": statements, "no_effect": no_effect, "significant": significant, "merged": merged,
            "noisy": len(noisy)}


def recommendations(an, varying, f) -> list[str]:
    recs = []
    for group, objectives in (an.best or {}).items():
        row = objectives.get("max decode_tps")
        if row is not None:
            recs.append(f"For throughput use {config_label(row, varying)} ({ci(row, 'decode_tps')} tok/s).")
        ttft = objectives.get("min ttft_ms")
        if ttft is not None and row is not None and config_label(ttft, varying) != config_label(row, varying):
            recs.append(f"For responsiveness use {config_label(ttft, varying)} (TTFT {ci(ttft, 'ttft_ms')} ms); "
                        f"it is not the throughput optimum, so choose by workload.")
    for param, metric in f["no_effect"]:
        if metric != "decode_tps":
            continue
        if param in SAMPLING_PARAMS:
            recs.append(f"Choose {param} for output quality: it does not change decode throughput measurably here.")
        else:
            recs.append(f"Choose {param} by what the workload needs: within the measured range it does not "
                        f"change decode throughput measurably.")
    if f["merged"]:
        recs.append("Use n_gpu_layers=all (or -1): requests beyond the model's layer count are the same "
                    "configuration; do not sweep them as separate points.")
    if f["noisy"]:
        recs.append("Raise bench.repetitions (5 or more) for the noisy configurations before acting on small "
                    "differences.")
    if an.samples["gpu_util_pct"].isna().all():
        recs.append("Run on a GPU machine with telemetry.nvml=on to add utilisation, power and energy per token.")
    return recs or ["No recommendation: the data shows no difference worth acting on."]


def risks(an) -> list[tuple[str, str, str]]:
    s, rows = an.samples, []
    ok = an.ok
    cv = an.configs.get("decode_tps_cv")
    if cv is not None and (cv > 0.05).any():
        rows.append(("Noisy measurements", f"{plural(int((cv > 0.05).sum()), 'configuration')} with decode CV > 5% "
                     f"(worst {cv.max():.1%})", "More repetitions; an idle machine; pin threads; compare with CIs, "
                     "not means"))
    if ok["throttled"].fillna(False).any():
        rows.append(("GPU throttling", f"{plural(int(ok['throttled'].fillna(False).sum()), 'sample')} ran while the GPU "
                     "reported throttle reasons", "Check cooling and power limits; compare only unthrottled runs"))
    if (ok["fan_reported"] == False).any():  # noqa: E712 (nullable boolean)
        rows.append(("Fan speed not reported", "the GPU answers NotSupported for fan speed (passively cooled)",
                     "Watch temperature and clocks instead; fan values are null, not 0"))
    if ok["gpu_shared"].fillna(False).any():
        rows.append(("GPU shared with another process", "other processes held GPU memory during the run",
                     "Run exclusively; the numbers may be depressed"))
    if "weights_huge_share" in ok and ok["weights_huge_share"].notna().any():
        span = ok.groupby("model")["weights_huge_share"].agg(["min", "max"]).dropna()
        wide = span[span["max"] - span["min"] > table.HUGE_SHARE_SPREAD]
        if len(wide):
            what = "; ".join(f"{m}: {r['min']:.0%} to {r['max']:.0%}" for m, r in wide.iterrows())
            rows.append(("Model file mapped differently", f"share of the weights mapped with huge pages, by run: {what}",
                         "CPU decode depends on it (how the file was last written or read, not the model): compare "
                         "runs with like shares, or set runtime.use_mmap=false"))
    counts = ok.groupby("run_id").size()
    if len(counts) and counts.min() < 3:
        rows.append(("Few repetitions", f"{plural(int((counts < 3).sum()), 'run')} with fewer than 3 samples",
                     "Set bench.repetitions >= 3 (5 for decisions)"))
    failed = int((s["status"] == "failed").sum())
    if failed:
        rows.append(("Failed samples", f"{failed} failed {'sample' if failed == 1 else 'samples'} (see findings)", "Fix the cause and re-run: "
                     "failed points are retried on resume"))
    agg = getattr(an.ingest, "aggregates", None)
    if agg is not None and len(agg):
        n_files = agg["source_file"].nunique()
        rows.append(("Pre-aggregated input", f"{len(agg)} values in {n_files} {'file' if n_files == 1 else 'files'} "
                     "are means or percentiles of requests not listed", "Shown as aggregates only: no CIs or tests "
                     "for them; keep per-request data to compare"))
    return rows or [("None detected", "no noise, throttling, sharing or failures in this data", "-")]
