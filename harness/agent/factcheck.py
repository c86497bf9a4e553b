"""Fact check of generated text: every figure in it is matched against the facts it was given.

Pure: text and facts in, a CheckResult out. A figure is a number with the unit written after it
(or before it, for ratios like "x1.5"). It is verified when some fact, converted to the stated
unit, rounds to the stated value at the stated precision: "104 tok/s" and "104.1 tok/s" both match
a fact of 104.08 tok/s, "103 tok/s" does not. Accepted conversions:

  ms <-> s            "0.21 s" matches a fact of 212 ms
  fraction <-> %      "3.1%" matches a fraction of 0.031
  MiB <-> GiB         "1.5 GiB" matches 1536 MiB
  ratios              "1.5x" / "x1.5" / "1.5 times" match a ratio fact, or the ratio of two facts
                      of the same metric (either order)
  relative change     "2.3%" also matches the relative difference of two facts of the same metric

A figure stated with one unit never matches a fact of another ("61 tok/s" is not 61 ms).

Not figures, and so neither counted nor marked:
  - ordinals: a number that opens a line and is followed by "." or ")" ("1. Summary", "2) ...");
  - small counts: bare integers 0-10 without a unit ("three recommendations", "2 rows", "Gemma 3"):
    they are the text's own structure and cannot be told apart from it;
  - names: digits attached to letters or underscores ("p99", "Q4_K_M", "270M", "H100") and version
    strings ("0.3.36").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable

# Units as written -> canonical unit. Longest alternatives first (the regex takes the first match).
_UNIT_ALIASES: tuple[tuple[str, str], ...] = (
    (r"tokens?\s+per\s+second", "tok/s"),
    (r"tok(?:ens)?\s*/\s*s(?:ec)?", "tok/s"),
    (r"t/s", "tok/s"),
    (r"milliseconds?|msecs?|ms", "ms"),
    (r"seconds?|secs?|s", "s"),
    (r"percent|per\s+cent|%", "%"),
    (r"J\s*/\s*tok(?:en)?|joules?\s+per\s+token", "J/token"),
    (r"MiB|MB", "MiB"),
    (r"GiB|GB", "GiB"),
    (r"times|x|\u00d7", "x"),
)
_UNIT_RE = "|".join(f"(?:{a})" for a, _ in _UNIT_ALIASES)
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<prefix>[x\u00d7](?=\d))?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?![.,]\d)"
    rf"(?:(?P<space>[ \u00a0]?)(?P<unit>{_UNIT_RE})(?![\w/]))?"
    r"(?!\w)",
    re.IGNORECASE,
)
_ORDINAL_LINE_START = re.compile(r"(?:^|\n)[ \t>*#_]*$")
SMALL_COUNT_MAX = 10
MARK = "[unverified]"


def canonical_unit(written: str | None) -> str | None:
    if not written:
        return None
    for pattern, unit in _UNIT_ALIASES:
        if re.fullmatch(pattern, written, re.IGNORECASE):
            return unit
    return None


@dataclass(frozen=True)
class Fact:
    """A number the text may quote: its value at full precision, its unit, and which metric it
    belongs to (facts of one metric can be compared as ratios and relative changes)."""

    name: str
    value: float
    unit: str | None = None  # ms, s, tok/s, %, fraction, x, MiB, J/token, or None for plain numbers
    metric: str | None = None


@dataclass(frozen=True)
class Figure:
    start: int
    end: int
    text: str
    value: float
    decimals: int
    unit: str | None
    fact: str | None  # the fact it matched, or None when unverified

    @property
    def verified(self) -> bool:
        return self.fact is not None


@dataclass(frozen=True)
class CheckResult:
    figures: tuple[Figure, ...]
    ignored: tuple[str, ...] = field(default=())  # ordinals, small counts (for the record)

    @property
    def n(self) -> int:
        return len(self.figures)

    @property
    def k(self) -> int:
        return sum(f.verified for f in self.figures)

    @property
    def unverified(self) -> tuple[Figure, ...]:
        return tuple(f for f in self.figures if not f.verified)

    def header(self) -> str:
        return f"{self.k} of {self.n} {'figure' if self.n == 1 else 'figures'} verified"

    def to_dict(self) -> dict:
        return {"verified": self.k, "figures": self.n,
                "unverified": [f.text for f in self.unverified],
                "matches": [{"text": f.text, "fact": f.fact} for f in self.figures if f.verified]}


def _candidates(fact: Fact, unit: str | None) -> Iterable[float]:
    """The fact's value expressed in the stated unit (none when the units do not convert)."""
    v, fu = fact.value, fact.unit
    if fu == "fraction":
        if unit == "%":
            yield v * 100
        elif unit is None:  # shown as a percentage in the facts, quoted without the sign
            yield v
            yield v * 100
        return
    if unit is None or unit == fu:
        yield v
    elif (fu, unit) == ("ms", "s"):
        yield v / 1000
    elif (fu, unit) == ("s", "ms"):
        yield v * 1000
    elif (fu, unit) == ("MiB", "GiB"):
        yield v / 1024
    elif (fu, unit) == ("GiB", "MiB"):
        yield v * 1024


def _close(stated: float, decimals: int, value: float) -> bool:
    """`value` shown at the stated precision reads `stated` (half a unit of the last digit)."""
    return abs(value - stated) <= 0.5 * 10 ** -decimals + 1e-9 * max(1.0, abs(value))


def _derived(facts: list[Fact]) -> list[tuple[str, float, str]]:
    """Ratios (x) and relative changes (%) between facts of the same metric and unit."""
    by_metric: dict[tuple, list[Fact]] = {}
    for f in facts:
        if f.metric and f.value and f.unit not in (None, "x"):
            by_metric.setdefault((f.metric, f.unit), []).append(f)
    out = []
    for group in by_metric.values():
        for a in group:
            for b in group:
                if a is b or a.value == b.value:
                    continue
                out.append((f"{a.name} / {b.name}", a.value / b.value, "x"))
                out.append((f"{a.name} vs {b.name}", abs(a.value - b.value) / abs(b.value) * 100, "%"))
    return out


def extract(text: str) -> tuple[list[tuple[re.Match, float, int, str | None]], list[str]]:
    """Every figure in `text` as (match, value, decimals, unit), and the numbers skipped as
    ordinals or small counts."""
    figures, ignored = [], []
    for m in _NUMBER.finditer(text):
        raw = m.group("num")
        value = float(raw.replace(",", ""))
        decimals = len(raw.split(".", 1)[1]) if "." in raw else 0
        unit = "x" if m.group("prefix") else canonical_unit(m.group("unit"))
        after = text[m.end():m.end() + 2]
        if (unit is None and decimals == 0 and _ORDINAL_LINE_START.search(text[:m.start()])
                and re.match(r"[.)](?:\s|$)", after)):
            ignored.append(raw)
            continue
        if unit is None and "," not in raw and decimals == 0 and value <= SMALL_COUNT_MAX:
            ignored.append(raw)
            continue
        figures.append((m, value, decimals, unit))
    return figures, ignored


def check(text: str, facts: Iterable[Fact]) -> CheckResult:
    """Match every figure of `text` against `facts`."""
    facts = list(facts)
    derived = _derived(facts)
    found, ignored = extract(text)
    out = []
    for m, value, decimals, unit in found:
        hit = None
        for f in facts:
            if any(_close(value, decimals, c) for c in _candidates(f, unit)):
                hit = f.name
                break
        if hit is None and unit in ("x", "%"):
            hit = next((name for name, v, u in derived if u == unit and _close(value, decimals, v)), None)
        out.append(Figure(m.start(), m.end(), m.group(0), value, decimals, unit, hit))
    return CheckResult(tuple(out), tuple(ignored))


def mark(text: str, result: CheckResult, marker: str = MARK) -> str:
    """`text` with `marker` written right after every unverified figure."""
    out, pos = [], 0
    for f in result.unverified:
        out += [text[pos:f.end], marker]
        pos = f.end
    out.append(text[pos:])
    return "".join(out)
