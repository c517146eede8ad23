"""Epoch logs for watching long runs (Lightning's TensorBoard logger, or its CSV logger without tensorboard)."""
import math

import pytest

from helpers import EXAMPLE_ARCHS
from mpn_nas import Arch, build_model
from mpn_nas.routing_analysis import routing_points
from mpn_nas.run_logs import read_csv_logs, tensorboard_available


def _epoch_rows(directory):
    if tensorboard_available():  # event files: one scalar per epoch and tag
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(directory)).Reload()
        steps = sorted({event.step for tag in events.Tags()["scalars"] for event in events.Scalars(tag)})
        return [{"step": step, **{tag: next((e.value for e in events.Scalars(tag) if e.step == step), None)
                                  for tag in events.Tags()["scalars"]}} for step in steps]
    return read_csv_logs(directory)


@pytest.mark.slow
def test_a_retrain_logs_one_value_of_each_measure_per_epoch_and_keeps_them_on_resume(tmp_path, cli):
    out = tmp_path / "run"
    common = ("retrain", str(EXAMPLE_ARCHS / "digits_routed.json"), "--out", str(out), "--device", "cpu", "--quiet")
    assert cli(*common, "--epochs", "3") == (0, [])
    rows = _epoch_rows(out / "logs")
    assert [row["step"] for row in rows] == [1, 2, 3]
    routed = sorted(key for key in rows[0] if key.startswith("routing_spread/"))
    model = build_model(Arch.from_json(EXAMPLE_ARCHS / "digits_routed.json"))
    assert routed == sorted(f"routing_spread/{name}" for name, _ in routing_points(model)) and len(routed) == 2
    for row in rows:
        assert 0 <= row["accuracy/val"] <= 1 and 0 <= row["accuracy/train"] <= 1 and row["loss/train"] > 0
        assert all(row[key] >= 0 and math.isfinite(row[key]) for key in routed)
    assert rows[0]["lr"] > rows[2]["lr"]  # the cosine schedule, read at each epoch's start
    history = (out / "metrics.csv").read_text().splitlines()[1:]
    assert [round(row["accuracy/val"], 6) for row in rows] == [float(line.split(",")[3]) for line in history]
    assert rows[0][routed[0]] != rows[2][routed[0]]  # measured each epoch, not once

    # Extending the run from its last checkpoint logs epoch 4 and keeps the three epochs logged before
    # (Lightning's CSV logger empties its file when it starts).
    assert cli(*common, "--epochs", "4", "--resume") == (0, [])
    extended = _epoch_rows(out / "logs")
    assert [row["step"] for row in extended] == [1, 2, 3, 4] and extended[:3] == rows
