"""A search as a new user runs it: what it prints, networks trained once, extending a finished search,
and retraining the best on the search's data set with the search's recipe."""
import csv
import json

import pytest

from helpers import assert_refused, run_cli, tiny_space_config

OUR_LINES = ("searching ", "resuming ", "[trial ", "best: ", "wrote ", "stopped after ")


def _one_network_space(path):
    """64 samples, one network: with one path everywhere, routing and density are repaired away."""
    path.write_text(json.dumps({"widths": [[4], [8]], "blocks": [1], "path_counts": [1]}))
    return str(path)


def _rows(out):
    return list(csv.DictReader(open(out / "trials.csv")))


@pytest.mark.slow
def test_quiet_search_of_one_network_trains_it_once_and_retrain_follows_its_data_and_recipe(tmp_path, cli):
    out = tmp_path / "search"
    result = run_cli("search", "--space-config", _one_network_space(tmp_path / "one.json"), "--dataset",
                     "digits-contexts", "--trials", "3", "--epochs", "1", "--lr", "0.03", "--batch-size", "32",
                     "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("stopped after 1 of 3 trials"), result.stdout
    assert lines[1].startswith("best: trial 1") and lines[2].startswith("wrote "), result.stdout
    assert not result.stderr.strip(), result.stderr
    rows = _rows(out)
    trained = [r for r in rows if r["status"] != "duplicate"]
    duplicates = [r for r in rows if r["status"] == "duplicate"]
    assert [r["trial"] for r in trained] == ["1"] and len(duplicates) == 63
    assert {r["reason"] for r in duplicates} == {"duplicate of trial 1"} and not {r["trial"] for r in duplicates} - {""}
    assert {r["val_accuracy"] for r in duplicates} == {trained[0]["val_accuracy"]}  # the strategy got the result
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duplicates"] == 63 and summary["trials_succeeded"] == 1
    assert "`training_service` will be ignored" in (out / "nni.log").read_text()  # NNI's full log is kept

    assert_refused(cli("search", "--resume", out, "--epochs", "3", "--seed", "0"), "--resume keeps", "epochs 1",
                   "dataset digits-contexts", "drop --epochs, --seed")

    record = json.loads((out / "best_arch.json").read_text())["extra"]["trained_with"]
    assert record["dataset"] == "digits-contexts" and record["recipe"]["lr"] == 0.03
    retrained = run_cli("retrain", str(out / "best_arch.json"), "--epochs", "2", "--out", str(tmp_path / "rt"),
                        "--device", "cpu")
    assert retrained.returncode == 0, retrained.stderr[-3000:]
    printed = retrained.stdout.splitlines()
    assert "on digits-contexts with sgd, lr 0.03" in printed[0] and "batch-size 32" in printed[0], printed[0]
    assert [line.split()[0] for line in printed[1:3]] == ["epoch", "epoch"]  # redirected: a line per epoch, no bar
    assert "metrics.csv" in printed[-1] and len(retrained.stdout) < 2000
    metrics = json.loads((tmp_path / "rt" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits-contexts" and metrics["lr"] == 0.03 and metrics["batch_size"] == 32
    history = list(csv.DictReader(open(tmp_path / "rt" / "metrics.csv")))
    assert [row["epoch"] for row in history] == ["1", "2"]
    assert float(history[-1]["val_accuracy"]) == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert float(history[0]["lr"]) == pytest.approx(0.03)


@pytest.mark.slow
def test_default_output_is_our_lines_and_resume_extends_a_finished_search(tmp_path):
    out, space = tmp_path / "search", str(tiny_space_config(tmp_path / "space.json"))
    first = run_cli("search", "--space-config", space, "--strategy", "evolution", "--trials", "2", "--epochs", "1",
                    "--max-params", "12000", "--out", str(out), "--seed", "3")
    assert first.returncode == 0, first.stderr[-3000:]
    assert all(line.startswith(OUR_LINES) for line in first.stdout.splitlines()), first.stdout
    assert "[trial 2/2]" in first.stdout and "over-budget samples skipped" in first.stdout
    before = _rows(out)

    extended = run_cli("search", "--resume", str(out), "--trials", "3", "--verbose")
    assert extended.returncode == 0, extended.stderr[-3000:]
    assert "[trial 3/3]" in extended.stdout and "[trial 1/" not in extended.stdout
    assert "Experiment initialized" in extended.stdout  # --verbose shows NNI's log
    after = _rows(out)
    assert after[:2] == before and [r["trial"] for r in after] == ["1", "2", "3"]  # not trained again
    assert json.loads((out / "search.json").read_text())["settings"]["trials"] == 3
    assert json.loads((out / "summary.json").read_text())["trials_succeeded"] == 3


@pytest.mark.slow
def test_the_readmes_nas_experiment_example_runs_as_written(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import REPO
    from mpn_nas import Arch, profile

    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- nas-experiment-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(block)
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    arch = Arch.from_json(tmp_path / "best_arch.json")
    assert profile(arch, latency=False).params <= 30_000
    assert (tmp_path / "nni-experiments").is_dir()  # NNI wrote under the example's folder, not HOME
