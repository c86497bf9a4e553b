"""Model variants in a report: the twin marks and the comparison of the models measured.

A model is a group of the analysis (never pooled with another), so a sweep over `model=` has no
"model" parameter; the report names the model in its configuration labels and tables whenever
more than one model was measured or any figure comes from a performance twin, and compares the
models side by side here: decode and prefill rates and the roofline's bytes per token (a decode
step reads every weight once, so a memory-bound decode rate scales with 1 / weight bytes).

Figures from a performance twin (synthetic weights: the real model's speed, text that is noise)
carry the model label 'NAME (twin)' (fields.twin_label) and the report says what they are twins of.
"""

from __future__ import annotations

import math

from .document import Paragraph, Table
from .format import ci, num, param, plural, value

TWIN = "twin"


def model_facts(an) -> dict[str, dict]:
    """model label -> {weights, twin_of, weight_bytes} from the sample table (first known value)."""
    s = an.samples
    out: dict[str, dict] = {}
    for model, sub in s.groupby("model", dropna=True, sort=True):
        facts = {}
        for c in ("weights", "twin_of", "weight_bytes"):
            known = sub[c].dropna() if c in sub else ()
            facts[c] = known.iloc[0] if len(known) else None
        out[str(model)] = facts
    return out


def twins(an) -> dict[str, dict]:
    """The models measured on performance twins: label -> facts."""
    return {m: f for m, f in model_facts(an).items() if f.get("weights") == TWIN}


def label_columns(an) -> list[str]:
    """Columns that name a configuration besides the swept parameters: `model` when several
    models were measured or any figure is a twin's (so its mark is on every label)."""
    models = an.configs["model"].dropna().unique() if "model" in an.configs else ()
    return ["model"] if len(models) > 1 or twins(an) else []


def twin_note(an) -> Paragraph | None:
    """The report's statement about synthetic weights, when any figure comes from a twin."""
    tw = twins(an)
    if not tw:
        return None
    what = "; ".join(f"{m}: twin of {f.get('twin_of') or 'an unnamed model'}" for m, f in tw.items())
    return Paragraph(
        f"Synthetic weights: {plural(len(tw), 'model')} measured here {'is a' if len(tw) == 1 else 'are'} "
        f"performance twin{'' if len(tw) == 1 else 's'} ({what}). A twin has the real model's architecture, "
        "shapes, tokenizer and tensor types with synthetic weights, so it decodes and prefills at the speed of "
        "the real model's shape; its generated text is noise and is never quoted. Every figure from a twin is "
        "marked '(twin)'.", strong=True)


def _model_bound(cfg, p: str) -> bool:
    """Whether parameter `p` takes one value per model (and differs between them): a property of
    the model, such as the prompt's length in its tokenizer's tokens, not a setting."""
    values = cfg[["model", p]].astype(str)
    return bool((values.groupby("model")[p].nunique() <= 1).all() and values[p].nunique() > 1)


def _bytes(v) -> str:
    return "-" if v is None else f"{v / 2**20:,.1f}"


def comparison(an, varying: list[str]) -> tuple[Table, list[str]] | None:
    """The model comparison (None with fewer than two models): a table with one row per
    configuration of each model (weights, weight MiB, decode and prefill tok/s, TTFT, decode x
    weight bytes, decode and bytes relative to the smallest model at the same other parameters),
    and sentences stating the roofline comparison."""
    cfg = an.configs
    if "model" not in cfg or cfg["model"].dropna().nunique() < 2:
        return None
    facts = model_facts(an)
    shown = [p for p in varying if p != "model"]
    # Parameters the model decides (the prompt's length in its own tokens) are shown, not matched on:
    # every model is compared with the smallest at the same values of the parameters that were set.
    others = [p for p in shown if not _model_bound(cfg, p)]
    hw = cfg["hardware"].dropna().nunique() > 1 if "hardware" in cfg else False
    rows = cfg.to_dict("records")
    for r in rows:
        f = facts.get(str(r.get("model")), {})
        r["_bytes"] = f.get("weight_bytes")
        r["_weights"] = (f"twin of {f.get('twin_of')}" if f.get("weights") == TWIN else f.get("weights")) or "-"
        d = value(r, "decode_tps_mean")
        r["_gbps"] = d * r["_bytes"] / 1e9 if d is not None and r["_bytes"] else None

    def key(r):
        return (r.get("hardware"),) + tuple(param(value(r, p)) for p in others)

    ref: dict = {}
    for r in rows:  # the reference at each setting of the other parameters: the fewest weight bytes
        if r["_bytes"] and value(r, "decode_tps_mean") is not None:
            k = key(r)
            if k not in ref or r["_bytes"] < ref[k]["_bytes"]:
                ref[k] = r
    gpu = "bandwidth_efficiency_mean" in cfg and cfg["bandwidth_efficiency_mean"].notna().any()
    headers = (("hardware",) if hw else ()) + ("model", "weights") + tuple(shown) + (
        "weight MiB (bytes/token)", "decode tok/s (95% CI)", "prefill tok/s (95% CI)", "TTFT ms (95% CI)",
        "decode x weight bytes GB/s", "decode vs smallest", "roofline (bytes ratio)") + (
        ("bandwidth efficiency",) if gpu else ())
    table_rows, lines = [], []
    for r in rows:
        base = ref.get(key(r))
        rel = exp = "-"
        if base is not None and base is not r and r["_bytes"]:
            rel = f"{value(r, 'decode_tps_mean') / value(base, 'decode_tps_mean'):.2f}x" \
                if value(r, "decode_tps_mean") is not None else "-"
            exp = f"{base['_bytes'] / r['_bytes']:.2f}x"
            if rel != "-":
                setting = ", ".join(f"{p}={param(value(r, p))}" for p in others)
                lines.append(f"{r['model']} has {r['_bytes'] / base['_bytes']:.2f}x the weight bytes of "
                             f"{base['model']} and decodes at {rel} its rate"
                             + (f" ({setting})" if setting else "")
                             + f"; a purely memory-bound decode would run at {exp}.")
        elif base is r:
            rel, exp = "1.00x", "1.00x"
        eff = value(r, "bandwidth_efficiency_mean")
        table_rows.append(((str(r.get("hardware")),) if hw else ()) + (str(r.get("model")), r["_weights"])
                          + tuple(param(value(r, p)) for p in shown)
                          + (_bytes(r["_bytes"]), ci(r, "decode_tps"), ci(r, "prefill_tps"), ci(r, "ttft_ms"),
                             num(r["_gbps"]) if r["_gbps"] is not None else "-", rel, exp)
                          + ((f"{eff:.1%}" if eff is not None and math.isfinite(eff) else "-",) if gpu else ()))
    table = Table(headers, tuple(table_rows), caption=(
        "Models compared: one row per configuration of each model. Weight MiB is the model's tensor data, the "
        "least a decode step reads per token (the roofline's bytes per token); decode x weight bytes is the rate "
        "weights are read at while decoding. 'decode vs smallest' divides by the model with the fewest weight "
        "bytes at the same other parameters; the roofline column is what a purely memory-bound decode would give."))
    return table, lines
