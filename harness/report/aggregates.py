"""The "Aggregates" table: values files state about requests they do not list (means, p95s,
totals of n requests), one row per configuration of a file with what it claims. Shown apart from
the sample statistics, which never include them; and the words that name a foreign offload
parameter (num_gpu) where the report shows n_gpu_layers."""

from __future__ import annotations

import math

from ..analysis.table import PARAMS
from .document import Paragraph, Table

#: Identity and parameter columns an aggregate row can be labelled by, in order.
_LABELS = ("model", "job", *(p for p in PARAMS if p not in ("effective_id", "n_gpu_layers_effective",
                                                            "n_ctx_effective")))


def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v)) and str(v) not in ("", "<NA>", "nan")


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return f"{x:.4g}"


def rows(agg, limit: int = 200) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(headers, rows) of the aggregates table: file, configuration (the labels that vary among
    the aggregates, offload as requested with the effective value when known), the claims
    ("decode_tps mean 50 tok/s; ttft_ms p95 260 ms") and the number of requests claimed."""
    if agg is None or not len(agg):
        return (), []
    labels = [c for c in _LABELS if c in agg.columns and agg[c].nunique(dropna=True) > 1]
    if not labels:
        labels = [c for c in ("model", "job") if c in agg.columns and agg[c].notna().any()]
    out = []
    for (src, _rid), g in agg.groupby(["source_file", "run_id"], sort=False, dropna=False):
        first = g.iloc[0]
        parts = []
        for c in labels:
            v = first.get(c)
            if not _present(v):
                continue
            text = _fmt(float(v)) if isinstance(v, float) else str(v)
            if c == "n_gpu_layers":
                name = first.get("offload_param")
                text = f"{name if _present(name) else 'n_gpu_layers'}={text}"
                eff = first.get("n_gpu_layers_effective")
                if _present(eff):
                    text += f" (effective {_fmt(float(eff))})"
                parts.append(text)
            else:
                parts.append(text if c in ("model", "job") else f"{c}={text}")
        claims = "; ".join(f"{r['metric']} {r['stat']} {_fmt(r['value'])}{(' ' + r['unit']) if r['unit'] else ''}"
                           for r in g.to_dict("records"))
        n = first.get("n_claimed")
        out.append((str(src), ", ".join(parts) or "-", claims, _fmt(float(n)) if _present(n) else "not stated"))
        if len(out) >= limit:
            break
    return ("file", "configuration", "claimed (not samples)", "requests"), out


def table(agg) -> Table | None:
    headers, body = rows(agg)
    if not body:
        return None
    return Table(headers, tuple(body), caption="Aggregates: values the files state about requests they do not list. "
                 "They are shown as the files claim them and are never pooled into the sample statistics, the "
                 "effects or the significance tests above.")


def offload_names(samples) -> list[str]:
    """The names the sources gave the offload parameter, where not ours (num_gpu, ngl)."""
    if "offload_param" not in samples.columns:
        return []
    return sorted({str(v) for v in samples["offload_param"].dropna()})


def offload_paragraph(an) -> Paragraph | None:
    """What the report says of foreign offload values: the parameter's name in the files, and which
    requested values were one configuration (or that the layer count was not known)."""
    names = offload_names(an.samples)
    if not names:
        return None
    lines = list(getattr(an.ingest, "offload", None) or [])
    head = (f"Offload parameter: {', '.join(names)} in the source files, read as n_gpu_layers (layers offloaded "
            "to the GPU). ")
    if lines:
        return Paragraph(head + "Values at or above the model's offloadable layers are one configuration. "
                         + "; ".join(lines) + ".")
    return Paragraph(head + "The model's layer count is not known (no local GGUF; `--model-layers` gives it), so "
                     "values at or above it could not be recognised as the same configuration.")


def param_heading(p: str, names: list[str]) -> str:
    """A parameter's column heading: n_gpu_layers names the source's offload parameter too."""
    return f"{p} ({'/'.join(names)})" if p == "n_gpu_layers" and names else p
