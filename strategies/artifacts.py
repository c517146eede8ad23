"""Search artifacts: ``trials.csv``, ``summary.json``, ``best_arch.json`` and ``pareto.png``."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

from mpn_nas.files import atomic_write, atomic_write_text

TRIAL_COLUMNS = ("trial", "status", "val_accuracy", "params", "flops", "seconds", "reason")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(accuracy, cost)`` no other point dominates (higher-or-equal accuracy and
    lower-or-equal cost, one strictly)."""
    front = []
    for i, (acc_i, cost_i) in enumerate(points):
        dominated = any((acc_j >= acc_i and cost_j <= cost_i) and (acc_j > acc_i or cost_j < cost_i)
                        for j, (acc_j, cost_j) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def write_trials_csv(path: Path, rows: Iterable[dict], labels: Sequence[str]) -> None:
    """One row per trial: the fixed columns, then one column per choice label."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*TRIAL_COLUMNS, *labels], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def read_trials_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_json(path: Path, document: dict) -> None:
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")


def plot_pareto(path: Path, rows: Sequence[dict], objective: str = "flops") -> None:
    """Validation accuracy against ``objective`` for succeeded trials, the Pareto front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "succeeded"]
    points = [(float(r["val_accuracy"]), float(r[objective])) for r in done]
    front = sorted(pareto_front(points), key=lambda i: points[i][1])
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter([p[1] for p in points], [p[0] for p in points], c="0.6", label="trials")
    axes.plot([points[i][1] for i in front], [points[i][0] for i in front], "o-", c="C3", label="Pareto front")
    for i in front:
        axes.annotate(str(done[i]["trial"]), (points[i][1], points[i][0]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel(f"{objective} (log scale)")
    axes.set_ylabel("validation accuracy")
    axes.legend(loc="lower right")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
