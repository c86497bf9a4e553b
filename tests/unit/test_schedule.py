"""The order a sweep is measured in: every repetition exactly once, rounds in a seeded shuffled
order of load groups, a group's points interleaved, warm-up and control visits where they belong."""

from __future__ import annotations

from collections import Counter

import pytest

from harness.schedule import n_rounds, plan_visits, split, steady


def _measured(visits):
    return [(v.point, r) for v in visits if not v.control for r in v.reps]


def test_split_and_rounds():
    assert split(5, 2) == [3, 2] and split(3, 3) == [1, 1, 1] and split(4, 1) == [4]
    assert n_rounds("auto", 5) == 5 and n_rounds(3, 5) == 3 and n_rounds(9, 2) == 2


@pytest.mark.parametrize("reps,rounds", [([3, 3, 3, 3], [3, 3, 3, 3]), ([5, 2, 4, 1], [5, 2, 2, 1])])
def test_every_repetition_once_first_and_last_marked(reps, rounds):
    visits = plan_visits(["a", "a", "b", "b"], reps, rounds, seed=1)
    got = _measured(visits)
    assert sorted(got) == sorted((i, r) for i in range(4) for r in range(reps[i]))
    for i in range(4):
        mine = [v for v in visits if v.point == i and not v.control]
        assert mine[0].first and not any(v.first for v in mine[1:])
        assert mine[-1].last and not any(v.last for v in mine[:-1])
        assert [r for v in mine for r in v.reps] == list(range(reps[i]))  # in order within a point


def test_groups_are_visited_whole_and_interleaved_within():
    visits = [v for v in plan_visits(["a", "a", "b", "b"], [2] * 4, [2] * 4, seed=3) if not v.control]
    for r in range(2):
        pts = [v.point for v in visits if v.round == r]
        groups = ["a" if p < 2 else "b" for p in pts]
        assert groups in (["a", "a", "b", "b"], ["b", "b", "a", "a"])  # a group is not split within a round
        warm = [v for v in visits if v.round == r and v.warm]
        assert len(warm) == 2 and {w.point < 2 for w in warm} == {True, False}  # one warm-up per group and round
    # with 3 repetitions in one round, a group's points alternate (round-robin), never back to back
    visits = plan_visits(["a", "a"], [3, 3], [1, 1], seed=0)
    assert [v.point for v in visits] in ([0, 1] * 3, [1, 0] * 3)


def test_order_is_seeded_and_differs_between_rounds_and_seeds():
    groups = [f"g{i}" for i in range(6)]
    a = plan_visits(groups, [4] * 6, [4] * 6, seed=7)
    assert a == plan_visits(groups, [4] * 6, [4] * 6, seed=7)
    firsts = {tuple(v.point for v in a if v.round == r) for r in range(4)}
    assert len(firsts) > 1  # not the same order every round
    assert a != plan_visits(groups, [4] * 6, [4] * 6, seed=8)
    # over many seeds every group is first in some round: no group is always first
    first_of_round = Counter(next(v.point for v in plan_visits(groups, [1] * 6, [1] * 6, seed=s)) for s in range(60))
    assert set(first_of_round) == set(range(6))


def test_control_visits_open_and_close_every_round():
    visits = plan_visits(["a", "b"], [2, 2], [2, 2], control=True)
    for r in range(2):
        mine = [v for v in visits if v.round == r]
        assert mine[0].control == "start" and mine[-1].control == "end"
        assert all(v.control is None for v in mine[1:-1])
    assert sum(v.control is not None for v in visits) == 4


def test_steady():
    assert not steady([], 0.05) and not steady([50.0], 0.05)
    assert steady([40.0, 41.0], 0.05) and not steady([30.0, 45.0], 0.05)
    assert steady([47.0], 0.05, reference=48.0) and not steady([30.0], 0.05, reference=48.0)
    assert not steady([None], 0.05, reference=48.0) and not steady([50.0, None], 0.05)
