"""Tests for harness.registry: one metric registry, the glossary that shows it, and the metric
names the sweep tables, tidy table, effects, export and ingest use."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest

from harness import export, fields, metrics, registry
from harness.analysis import effects, normalise, table

GLOSSARY = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
UNITS = {"ms", "ns", "tok/s", "tokens", "J", "J/token", "tok/J", "MiB", "%", "W", "MHz", "GB/s", "fraction"}


def test_names_are_unique_and_well_formed():
    assert [n for n, c in Counter(m.name for m in registry.METRICS).items() if c > 1] == []
    for m in registry.METRICS:
        assert m.unit in UNITS, m.name
        assert m.better in ("higher", "lower", None), m.name
        assert m.scope in ("rep", "run", "aggregate", "alias"), m.name
        assert m.label and m.definition and "|" not in m.definition, m.name
        assert isinstance(m.fmt.format(1.5), str)


def test_default_lists_name_registry_metrics():
    for name in ("HEADLINE_METRICS", "EFFECT_METRICS", "COMPARE_METRICS", "NOISE_METRICS", "EXTRA_INFO_METRICS",
                 "RUN_LEVEL_METRICS"):
        lst = getattr(registry, name)
        assert lst and set(lst) <= set(registry.BY_NAME), name
    assert all(registry.get(m).scope == "run" for m in registry.RUN_LEVEL_METRICS)


def _glossary_units() -> dict[str, str]:
    """name -> unit of every row of the glossary's registry table."""
    text = GLOSSARY.read_text(encoding="utf-8")
    block = text[text.index("<!-- registry:begin -->"):text.index("<!-- registry:end -->")]
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\| `([a-z0-9_]+)` \|([^|]*)\|", block, re.M)}


def test_glossary_lists_every_metric_with_its_unit():
    units = _glossary_units()
    assert {m.name: m.unit for m in registry.METRICS} == units


def test_glossary_table_is_the_generated_one():
    text = GLOSSARY.read_text(encoding="utf-8")
    assert "<!-- registry:begin -->\n" + registry.glossary_table() + "<!-- registry:end -->" in text


def _used_metric_names() -> dict[str, set[str]]:
    """Every metric name the modules reading the registry use, by where it is used."""
    aggregates = {f.path[1] for f in fields.FIELDS if f.path[0] == "aggregates" and len(f.path) >= 2}
    aggregates = {"itl_pooled_p50_ms" if a == "itl_pooled_ms" else a for a in aggregates}
    rep_fields = set(metrics.RepMetrics.__dataclass_fields__) - {"rep"}
    return {
        "table.METRICS": set(table.METRICS),
        "fields (metric columns)": {n for f in fields.FIELDS if (n := registry.base_metric(f.name))} | aggregates,
        "metrics.AGGREGATED*": set(metrics.AGGREGATED + metrics.AGGREGATED_OPTIONAL + metrics.OPTIONAL_REP_FIELDS),
        "metrics.RepMetrics": rep_fields,
        "effects.DEFAULT_METRICS": set(effects.DEFAULT_METRICS) | set(effects.RUN_LEVEL_METRICS),
        "export": set(export.TIMED_METRICS + export.MEAN_METRICS) | {"decode_tps_weighted"}
        | {c for c in export.RUN_VALUES if c in registry.RUN_LEVEL_METRICS},
        "normalise.CHECKED": set(normalise.CHECKED),
    }


@pytest.mark.parametrize("where", list(_used_metric_names()))
def test_every_metric_name_used_is_in_the_registry(where):
    assert _used_metric_names()[where] - set(registry.BY_NAME) == set()


def test_fields_metric_columns_take_header_and_format_from_the_registry():
    by = {f.name: f for f in fields.FIELDS}
    assert by["decode_tps_mean"].display == registry.get("decode_tps").short
    assert by["decode_tps_mean"].fmt == registry.get("decode_tps").fmt
    assert by["load_ms"].fmt == registry.get("load_ms").fmt


def test_table_metric_docs_are_the_registry_definitions():
    for name in table.METRICS:
        assert registry.get(name).definition in table.BY_NAME[name].doc


@pytest.mark.parametrize("column,better,unit", [
    ("decode_tps", "higher", "tok/s"), ("decode_tps_mean", "higher", "tok/s"), ("ttft_ms_ci95_low", "lower", "ms"),
    ("decode_tps_cv", "lower", "fraction"), ("ttft_ms_n", None, ""), ("gpu_util_pct", None, "%"),
    ("energy_per_token_j_mean", "lower", "J/token"), ("itl_max_ms", "lower", "ms"), ("n_ctx", None, ""),
    ("bandwidth_efficiency", "higher", "fraction"),
])
def test_better_and_unit_of_columns(column, better, unit):
    assert registry.better(column) == better
    assert registry.unit(column) == unit


def test_base_metric():
    assert registry.base_metric("itl_max_ms") == "itl_max_ms"  # a metric ending like a stat stays itself
    assert registry.base_metric("itl_p99_ms_max") == "itl_p99_ms"
    assert registry.base_metric("job") is None
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        registry.get("nope")


@pytest.mark.parametrize("name,value,why", [
    ("decode_tps", 1e308, "above the plausible maximum of 1e+07 tok/s"),
    ("decode_tps", math.inf, "not finite"), ("ttft_ms", math.nan, "not finite"),
    ("ttft_ms", -5.0, "negative"), ("gpu_util_pct", 250.0, "above the plausible maximum of 100 %"),
    ("decode_tps", 1e4, None), ("ttft_ms", 0.0, None),
])
def test_implausible(name, value, why):
    assert registry.implausible(name, value) == why


def test_heading_and_short():
    assert registry.get("ttft_ms").heading == "TTFT (ms)"
    assert registry.get("decode_tps").short == "decode tok/s"
