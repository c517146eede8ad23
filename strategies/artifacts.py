"""Search artifacts: ``trials.csv``, ``summary.json``, ``best_arch.json``, ``pareto.png`` and (one-shot)
``probabilities.png``."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Collection, Iterable, Mapping, Optional, Sequence

from mpn_nas.files import atomic_write, atomic_write_text

from .dominance import pareto_front

TRIAL_COLUMNS = ("trial", "status", "val_accuracy", "params", "flops", "seconds", "reason")
PARETO_COLUMN = "pareto"


def write_trials_csv(path: Path, rows: Iterable[dict], labels: Sequence[str],
                     front: Optional[Collection[int]] = None) -> None:
    """One row per trial: the fixed columns, then one column per choice label; with ``front`` (trial
    numbers), a ``pareto`` column after the fixed ones: 1 for front members, else 0."""
    marked = () if front is None else (PARETO_COLUMN,)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*TRIAL_COLUMNS, *marked, *labels], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        if front is not None:
            row = {**row, PARETO_COLUMN: int(row["trial"] not in (None, "") and int(row["trial"]) in front)}
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def read_trials_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_json(path: Path, document: dict) -> None:
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")


def plot_pareto(path: Path, rows: Sequence[dict], objective: str = "flops",
                front: Optional[Collection[int]] = None) -> None:
    """Validation accuracy against ``objective`` for succeeded trials, the Pareto front highlighted:
    the given ``front`` (trial numbers), or else the non-dominated trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "succeeded"]
    points = [(float(r["val_accuracy"]), float(r[objective])) for r in done]
    on_front = pareto_front(points) if front is None else [i for i, r in enumerate(done) if int(r["trial"]) in front]
    front_points = sorted(on_front, key=lambda i: points[i][1])
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter([p[1] for p in points], [p[0] for p in points], c="0.6", label="trials")
    axes.plot([points[i][1] for i in front_points], [points[i][0] for i in front_points], "o-", c="C3",
              label="Pareto front")
    for i in front_points:
        axes.annotate(str(done[i]["trial"]), (points[i][1], points[i][0]), fontsize=7, xytext=(3, 3),
                      textcoords="offset points")
    axes.set_xscale("log")
    axes.set_xlabel(f"{objective} (log scale)")
    axes.set_ylabel("validation accuracy")
    axes.legend(loc="lower right")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)


def plot_probabilities(path: Path, history: Sequence[Mapping[str, Mapping[str, float]]]) -> None:
    """One panel per label: the probability of each of its values after each supernet epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    labels = list(history[-1])
    columns = min(5, len(labels))
    rows = math.ceil(len(labels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    epochs = range(1, len(history) + 1)
    for axis, label in zip(axes.flat, labels):
        for value in history[-1][label]:
            axis.plot(epochs, [h[label][value] for h in history], marker="o", label=value)
        axis.set_title(label, fontsize=9)
        axis.set_ylim(0, 1)
        axis.set_xlabel("epoch", fontsize=8)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(labels):]:
        axis.axis("off")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
