"""The computed facts an analysis hands to the narrative: a compact Markdown table plus a few
summary lines, and the same numbers as `Fact`s for the fact check.

Only numbers that are written into the prompt become facts, so a row or line dropped to fit the
model's context takes its facts with it. Rows are kept in order of interest (the best
configurations and the Pareto front first, then the rest in table order). A sheet too large for the
context sheds table rows first (down to agent.min_rows, at least one), then summary lines, lowest
priority first (SUMMARY_PRIORITY): a small context still gets the headline facts (best decode,
best TTFT) and a row of the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from ..analysis.pipeline import shown_params
from ..report.format import interval, num, param, plural, value
from .factcheck import Fact

# (configurations column, header, unit for the fact check, metric for ratios)
COLUMNS = (
    ("decode_tps_mean", "decode tok/s", "tok/s", "decode_tps"),
    ("ttft_ms_mean", "TTFT ms", "ms", "ttft_ms"),
    ("prefill_tps_mean", "prefill tok/s", "tok/s", "prefill_tps"),
    ("itl_p99_ms_mean", "ITL p99 ms", "ms", "itl_p99_ms"),
    ("e2e_ms_mean", "end-to-end ms", "ms", "e2e_ms"),
    ("energy_per_token_j_mean", "J/token", "J/token", "energy_per_token_j"),
    ("vram_used_mib_mean", "VRAM MiB", "MiB", "vram_used_mib"),
    ("decode_tps_cv", "decode CV %", "fraction", "decode_tps_cv"),
)
OBJECTIVE_LABELS = {"max decode_tps": ("Best decode throughput", "decode_tps", "tok/s"),
                    "min ttft_ms": ("Best TTFT", "ttft_ms", "ms"),
                    "min energy_per_token_j": ("Lowest energy", "energy_per_token_j", "J/token")}


# Summary lines by kind, most important first; lines of priority ESSENTIAL are never dropped.
ESSENTIAL = 0
SUMMARY_PRIORITY = {"best decode_tps": ESSENTIAL, "best ttft_ms": ESSENTIAL, "setup": 1, "counts": 2,
                    "best other": 3, "best detail": 4, "noisy": 5, "effect": 6}


@dataclass(frozen=True)
class Line:
    """A line of the fact sheet and the facts it states; `priority` orders the summary lines for
    dropping (higher goes first; ESSENTIAL stays)."""

    text: str
    facts: tuple[Fact, ...] = ()
    priority: int = ESSENTIAL


@dataclass(frozen=True)
class FactSheet:
    summary: tuple[Line, ...]  # in display order; dropped by Line.priority to fit a context
    headers: tuple[str, ...]
    rows: tuple[Line, ...]  # one per configuration, most interesting first
    table_order: tuple[int, ...] = field(default=())  # display order of rows (indices into rows)

    @property
    def n_essential(self) -> int:
        """Summary lines that are never dropped."""
        return sum(1 for x in self.summary if x.priority <= ESSENTIAL)

    def render(self, n_rows: int | None = None, n_summary: int | None = None) -> str:
        """The fact sheet with the first `n_rows` configuration rows and the `n_summary` most
        important summary lines (all by default)."""
        keep = self._kept(n_rows)
        out = [self.summary[i].text for i in self._kept_summary(n_summary)]
        if keep:
            out += ["", "| " + " | ".join(self.headers) + " |", "|" + "|".join("---" for _ in self.headers) + "|"]
            out += [self.rows[i].text for i in keep]
            if len(keep) < len(self.rows):
                out.append(f"({plural(len(self.rows) - len(keep), 'more configuration')} not shown)")
        return "\n".join(out)

    def facts(self, n_rows: int | None = None, n_summary: int | None = None) -> tuple[Fact, ...]:
        """The facts stated by `render(n_rows, n_summary)`."""
        out = [f for i in self._kept_summary(n_summary) for f in self.summary[i].facts]
        for i in self._kept(n_rows):
            out += self.rows[i].facts
        return tuple(out)

    def _kept(self, n_rows: int | None) -> list[int]:
        n = len(self.rows) if n_rows is None else max(0, min(n_rows, len(self.rows)))
        chosen = set(range(n))
        order = self.table_order or tuple(range(len(self.rows)))
        return [i for i in order if i in chosen]

    def _kept_summary(self, n: int | None) -> list[int]:
        if n is None or n >= len(self.summary):
            return list(range(len(self.summary)))
        by_priority = sorted(range(len(self.summary)), key=lambda i: (self.summary[i].priority, i))
        chosen = set(by_priority[:max(n, self.n_essential)])
        return [i for i in range(len(self.summary)) if i in chosen]


def fmt(v, unit: str | None = None) -> str:
    """A value as shown to the model (the report's number format; fractions as percentages)."""
    if unit == "fraction":
        return f"{v * 100:.1f}"
    if isinstance(v, str):
        return v.replace("|", "/").replace("\n", " ")  # one table cell
    return num(float(v)) if isinstance(v, float) else num(v)


def _v(row: dict, key: str):
    return value(row, key)


def _param_facts(row: dict, params: list[str], label: str) -> tuple[str, list[Fact]]:
    parts, facts = [], []
    for p in params:
        v = _v(row, p)
        if v is None:
            continue
        parts.append(f"{p}={fmt(v) if isinstance(v, str) else param(v)}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            facts.append(Fact(f"{label} {p}", float(v), None, p))
    return ", ".join(parts) or "default configuration", facts


def build_facts(an) -> FactSheet:
    """The fact sheet of an analysis."""
    configs = an.configs
    params = shown_params(an)
    records = configs.to_dict("records")
    summary: list[Line] = []
    groups = list(dict.fromkeys(r.get("hardware_group") for r in records))
    names = {g: f"G{i}" for i, g in enumerate(groups, 1)} if len(groups) > 1 else {}
    for g in groups:  # never pooled: one line per hardware / model / engine group
        r = next(x for x in records if x.get("hardware_group") == g)
        summary.append(Line((f"Group {names[g]}: " if names else "")
                            + f"model: {_v(r, 'model') or 'unknown'}; engine: {_v(r, 'engine') or 'unknown'}; "
                            f"hardware: {_v(r, 'hardware') or 'unknown'}.", priority=SUMMARY_PRIORITY["setup"]))
    n_ok = len(an.ok)
    n_failed = int((an.samples["status"] == "failed").sum())
    summary.append(Line(f"Configurations: {len(records)}; samples: {n_ok} ok, {n_failed} failed.",
                        (Fact("configurations", float(len(records))), Fact("ok samples", float(n_ok)),
                         Fact("failed samples", float(n_failed))), SUMMARY_PRIORITY["counts"]))
    interesting: list[int] = []
    for group, objectives in (an.best or {}).items():
        for objective, row in objectives.items():
            label, metric, unit = OBJECTIVE_LABELS.get(objective, (objective, objective.split()[-1], None))
            mean, lo, hi = (_v(row, f"{metric}_{s}") for s in ("mean", "ci95_low", "ci95_high"))
            if mean is None:
                continue
            where, pf = _param_facts(row, params, label)
            tag = f"[{names[group]}] " if names else ""
            # The headline (kept longest), and its interval and verdict as a line of their own that
            # a small context can do without.
            summary.append(Line(f"{tag}{label}: {fmt(mean)} {unit or ''}".rstrip() + f" with {where}.",
                                (Fact(label, float(mean), unit, metric), *pf),
                                SUMMARY_PRIORITY.get(f"best {metric}", SUMMARY_PRIORITY["best other"])))
            detail, facts = [], []
            if lo is not None and hi is not None:
                detail.append(f"95% CI {interval(lo, hi, None)} {unit or ''}".rstrip())
                facts += [Fact(f"{label} CI low", float(lo), unit, metric),
                          Fact(f"{label} CI high", float(hi), unit, metric), Fact("confidence level", 95.0, "%")]
            if _v(row, "clear") not in (None, True):
                detail.append("not distinguishable from the runner-up")
            if detail:
                summary.append(Line(f"{tag}{label}: " + "; ".join(detail) + ".", tuple(facts),
                                    SUMMARY_PRIORITY["best detail"]))
            interesting += [i for i, r in enumerate(records) if r.get("effective_id") == row.get("effective_id")
                            and all(_same(r.get(p), row.get(p)) for p in params)]
    for e in an.effect_summary:
        big = e.get("largest_rel_diff")
        if big is None or big != big:
            continue
        verdict, name = e.get("verdict", ""), e["param"]
        if name not in params and name.endswith("_effective") and name[: -len("_effective")] in params:
            name = name[: -len("_effective")]  # the effective twin equals the request: name the request
        where = f" [{names[e['group']]}]" if e.get("group") in names else ""
        summary.append(Line(f"Effect of {name} on {e['metric']}{where}: {verdict} (largest difference "
                            f"{abs(big) * 100:.1f}%).",
                            (Fact(f"effect of {name} on {e['metric']}{where}", abs(big), "fraction"),),
                            SUMMARY_PRIORITY["effect"]))
    noisy = int(configs["noisy"].sum()) if "noisy" in configs else 0
    if noisy:
        summary.append(Line(f"Noisy configurations (decode or TTFT CV > 5%, or fewer than 3 samples): "
                            f"{noisy} of {len(records)}.", (Fact("noisy configurations", float(noisy)),
                                                             Fact("noise threshold", 5.0, "%"),
                                                             Fact("minimum samples", 3.0)),
                            SUMMARY_PRIORITY["noisy"]))
    cols = [c for c in COLUMNS if c[0] in configs and configs[c[0]].notna().any()]
    headers = ("#", *(("group",) if names else ()), *params, "n", *(c[1] for c in cols))
    rows: list[Line] = []
    for i, r in enumerate(records, 1):
        cells, facts = [str(i)], [Fact(f"config {i}", float(i))]
        if names:
            cells.append(names[r.get("hardware_group")])
        for p in params:
            v = _v(r, p)
            cells.append("-" if v is None else fmt(v) if isinstance(v, str) else param(v))
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                facts.append(Fact(f"config {i} {p}", float(v), None, p))
        n = _v(r, "n_samples")
        cells.append(fmt(n) if n is not None else "-")
        if n is not None:
            facts.append(Fact(f"config {i} samples", float(n)))
        for col, _, unit, metric in cols:
            v = _v(r, col)
            cells.append(fmt(v, unit) if v is not None else "-")
            if v is not None:
                facts.append(Fact(f"config {i} {metric}", float(v), unit, metric))
        rows.append(Line("| " + " | ".join(cells) + " |", tuple(facts)))
    pareto = []
    if an.pareto is not None and len(an.pareto):
        ids = set(an.pareto["effective_id"]) if "effective_id" in an.pareto else set()
        pareto = [i for i, r in enumerate(records) if r.get("effective_id") in ids]
    priority = list(dict.fromkeys(interesting + pareto + list(range(len(records)))))
    return FactSheet(summary=tuple(summary), headers=headers, rows=tuple(rows[i] for i in priority),
                     table_order=tuple(sorted(range(len(priority)), key=lambda k: priority[k])))


def _same(a, b) -> bool:
    try:
        return a == b or (a != a and b != b)
    except (TypeError, ValueError):
        return False


class Fitted(NamedTuple):
    """A fact sheet fitted to a token budget: the prompt and what of the sheet it holds."""

    prompt: str
    rows: int  # configuration rows given
    summary: int  # summary lines given
    n_tokens: int  # the prompt's tokens (count_tokens of it)


def fit(sheet: FactSheet, render_prompt: Callable[[str], str], count_tokens: Callable[[str], int],
        budget: int, min_rows: int = 1) -> Fitted:
    """The prompt with as much of the sheet as fits in `budget` tokens. Table rows go first (down
    to `min_rows`), then summary lines, lowest priority first, down to the essential ones; with
    fewer lines the rows that now fit come back. Raises ValueError when not even the minimal sheet
    (essential lines and `min_rows` rows) fits."""
    floor = min(max(min_rows, 0), len(sheet.rows))
    cache: dict[tuple[int, int], int] = {}

    def tokens(n_rows: int, n_summary: int) -> int:
        if (n_rows, n_summary) not in cache:
            cache[n_rows, n_summary] = count_tokens(render_prompt(sheet.render(n_rows, n_summary)))
        return cache[n_rows, n_summary]

    def done(n_rows: int, n_summary: int) -> Fitted:
        return Fitted(render_prompt(sheet.render(n_rows, n_summary)), n_rows, n_summary, tokens(n_rows, n_summary))

    n_lines, lowest = len(sheet.summary), min(sheet.n_essential, len(sheet.summary))
    if tokens(len(sheet.rows), n_lines) <= budget:
        return done(len(sheet.rows), n_lines)
    for k in range(n_lines, lowest - 1, -1):  # the most summary lines that leave room for `floor` rows
        if tokens(floor, k) <= budget:
            break
    else:
        raise ValueError(f"the minimal fact sheet ({lowest} headline line(s) and {floor} configuration row(s)) "
                         f"needs more than {budget} prompt tokens")
    lo, hi = floor, len(sheet.rows)
    while lo < hi:  # the largest n whose prompt fits (token count grows with n)
        mid = (lo + hi + 1) // 2
        if tokens(mid, k) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return done(lo, k)
