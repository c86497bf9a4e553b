"""The order a sweep is measured in: rounds, load groups, interleaved repetitions (pure).

A machine drifts while it measures (caches and pages warming, clocks, other work): measured in
declaration order, whatever varies slowest in the sweep is confounded with time. So `harness run -m`
measures in rounds. Every round visits every point once per repetition it owes that round, and
  - visits the load groups (points that share a loaded model) in a seeded shuffled order, a new
    one each round, so no group is always first or last;
  - within a group, cycles through its points (shuffled too) one repetition at a time, so the
    points of a group are interleaved rather than measured back to back;
  - warms the engine up on the group's first visit of the round (bench.warmup);
  - starts and ends with a repetition of the control point (the sweep's first point) when
    bench.control is on: the drift of the round, measured on one fixed configuration.
A point's repetitions are split over the rounds as evenly as they go (bench.rounds=auto: as many
rounds as the largest bench.repetitions, one repetition per point per round).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Hashable, Sequence


@dataclass(frozen=True)
class Visit:
    """One stop of the schedule: `point` (index in the declared order) measures repetitions
    `reps` in round `round`. `first`: the point's first visit (plan, load, prompt); `last`: its
    last (finish and write run.json); `warm`: warm up before measuring (the group's first visit of
    the round). A control visit (`control` "start" or "end") measures one extra repetition of the
    control point for the drift record and belongs to no point's record."""

    point: int
    round: int
    rounds: int
    reps: tuple[int, ...] = ()
    first: bool = False
    last: bool = False
    warm: bool = False
    control: str | None = None


def split(repetitions: int, rounds: int) -> list[int]:
    """How many repetitions each round gets: as even as possible, the earlier rounds one more."""
    base, extra = divmod(repetitions, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def n_rounds(setting: int | str, repetitions: int) -> int:
    """bench.rounds for a point with `repetitions`: auto is one repetition per round; never more
    rounds than repetitions."""
    return repetitions if setting == "auto" else max(1, min(int(setting), repetitions))


def plan_visits(groups: Sequence[Hashable], repetitions: Sequence[int], rounds: Sequence[int], *, seed: int = 0,
                control: bool = False) -> list[Visit]:
    """The visits of a sweep whose point i is in load group `groups[i]` with `repetitions[i]`
    repetitions over `rounds[i]` rounds. Seeded: the same inputs give the same order."""
    n = len(groups)
    total = max(rounds, default=0)
    per_round = [split(repetitions[i], rounds[i]) + [0] * (total - rounds[i]) for i in range(n)]
    done = [0] * n
    seen: set[int] = set()
    owed = list(repetitions)
    order: list[Hashable] = list(dict.fromkeys(groups))
    out: list[Visit] = []
    for r in range(total):
        rng = random.Random(f"{seed}:{r}")
        ordered = order[:]
        rng.shuffle(ordered)
        if control and n:
            out.append(Visit(point=0, round=r, rounds=total, control="start", warm=True))
        for g in ordered:
            members = [i for i in range(n) if groups[i] == g and per_round[i][r] > 0]
            rng.shuffle(members)
            warm = True
            for k in range(max((per_round[i][r] for i in members), default=0)):
                for i in members:
                    if k >= per_round[i][r]:
                        continue
                    owed[i] -= 1
                    out.append(Visit(point=i, round=r, rounds=total, reps=(done[i],), first=i not in seen,
                                     last=owed[i] == 0, warm=warm))
                    seen.add(i)
                    done[i] += 1
                    warm = False
        if control and n:
            out.append(Visit(point=0, round=r, rounds=total, control="end"))
    return out


def steady(rates: Sequence[float], tolerance: float, reference: float | None = None) -> bool:
    """Whether warm-up can stop: the last two warm-up rates agree within `tolerance` (relative),
    or the last agrees with `reference` (the point's rate measured in an earlier round)."""
    if not rates or rates[-1] is None or rates[-1] <= 0:
        return False
    last = rates[-1]
    if reference and abs(last / reference - 1) <= tolerance:
        return True
    return len(rates) >= 2 and rates[-2] is not None and rates[-2] > 0 and abs(last / rates[-2] - 1) <= tolerance
