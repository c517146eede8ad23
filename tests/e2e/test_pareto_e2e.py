"""Multi-objective search: dominance functions, the NSGA-II strategy, and the front's artifacts."""
import json

import pytest

from mpn_nas import Arch, profile
from helpers import figure_pixels, png_size
from strategies.dominance import dominates


@pytest.mark.slow
def test_pareto_search_command_writes_and_marks_the_front(tmp_path):
    import csv

    from helpers import run_cli, tiny_space_config

    out = tmp_path / "search"
    result = run_cli("search", "--strategy", "pareto", "--objective", "params", "--space-config",
                     str(tiny_space_config(tmp_path / "space.json")), "--trials", "4", "--epochs", "1",
                     "--max-params", "12000", "--seed", "0", "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [r for r in csv.DictReader(open(out / "trials.csv")) if r["status"] != "duplicate"]  # networks trained
    assert len(rows) == 4 and all(r["status"] == "succeeded" for r in rows)
    front = sorted(int(r["trial"]) for r in rows if r["pareto"] == "1")
    points = {int(r["trial"]): (float(r["val_accuracy"]), int(r["params"])) for r in rows}
    for trial in front:
        assert not any(dominates(p, points[trial]) for p in points.values())
    best = max(points.values(), key=lambda p: (p[0], -p[1]))
    cheapest = min(points.values(), key=lambda p: (p[1], -p[0]))
    assert best in [points[t] for t in front] and cheapest in [points[t] for t in front]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pareto_front"]["trials"] == front and summary["pareto_front"]["objective"] == "params"
    assert sorted(p.name for p in (out / "pareto").iterdir()) == [f"trial{t:03d}.json" for t in front]
    for trial in front:
        member = Arch.from_json(out / "pareto" / f"trial{trial:03d}.json")
        assert profile(member, latency=False).params == points[trial][1] <= 12_000
        # retrain follows the search for any member of the front, not only the best
        assert member.extra["trained_with"]["dataset"] == "digits" and member.extra["trained_with"]["epochs"] == 1
    assert png_size(out / "pareto.png") == figure_pixels(6, 4, 120)
