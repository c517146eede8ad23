"""Pareto dominance for two objectives: accuracy (maximised) against cost (minimised).

Pure Python (no nni): NSGA-II's non-dominated sorting and crowding distance, shared by the Pareto
strategy, the search artifacts and the benchmarks. A point is ``(accuracy, cost)``.
"""
from __future__ import annotations

import math
from typing import Sequence

Point = tuple[float, float]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as accurate and at most as costly as ``b``, and strictly better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Indices of ``points`` in fronts: front 0 is dominated by nobody, front ``k`` only by earlier fronts
    (Deb et al. 2002, fast non-dominated sort)."""
    dominated_by_me: list[list[int]] = [[] for _ in points]
    domination_count = [0] * len(points)
    for i, p in enumerate(points):
        for j, q in enumerate(points):
            if dominates(p, q):
                dominated_by_me[i].append(j)
            elif dominates(q, p):
                domination_count[i] += 1
    fronts: list[list[int]] = []
    current = [i for i, count in enumerate(domination_count) if count == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominated_by_me[i]:
                domination_count[j] -= 1
                if domination_count[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates (ascending)."""
    return non_dominated_sort(points)[0] if points else []


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """Crowding distance of each index of ``front``: the normalised perimeter of the box its two
    neighbours span, per objective; the extremes of each objective get infinity so they always survive."""
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for objective in (0, 1):
        ordered = sorted(front, key=lambda i: points[i][objective])
        low, high = points[ordered[0]][objective], points[ordered[-1]][objective]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, middle, after in zip(ordered, ordered[1:], ordered[2:]):
            distance[middle] += (points[after][objective] - points[before][objective]) / (high - low)
    return distance


def nsga2_ranking(points: Sequence[Point]) -> list[tuple[int, float]]:
    """``(front number, crowding distance)`` of every point: lower front first, then larger distance
    (NSGA-II's crowded-comparison order)."""
    ranking: list[tuple[int, float]] = [(0, 0.0)] * len(points)
    for rank, front in enumerate(non_dominated_sort(points)):
        for i, distance in crowding_distance(points, front).items():
            ranking[i] = (rank, distance)
    return ranking


def nsga2_survivors(points: Sequence[Point], size: int) -> list[int]:
    """Indices of the ``size`` points NSGA-II keeps: whole fronts in order, the last one cut by crowding
    distance (ties keep the earlier index, so the selection is deterministic)."""
    ranking = nsga2_ranking(points)
    order = sorted(range(len(points)), key=lambda i: (ranking[i][0], -ranking[i][1], i))
    return sorted(order[:size])
