import csv
import json

import pytest

from helpers import (NNI_MANAGER, assert_clean_error, figure_pixels, png_size, port_in_use, processes_in,
                     reserved_port, run_cli, tiny_space_config)
from mpn_nas import Arch, profile
from search_spaces.config import load_config, sample_to_arch

MAX_PARAMS = 12_000


def _check_artifacts(out, trials):
    assert png_size(out / "pareto.png") == figure_pixels(6, 4, 120)
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == trials and summary["trials_succeeded"] == trials
    config = load_config("resnet", summary["settings"]["space_config"], in_channels=1, input_size=8, num_classes=10)
    for row in rows:
        assert row["status"] == "succeeded" and 0 <= float(row["val_accuracy"]) <= 1
        sample = {label: json.loads(row[label]) if row[label][0] in "0123456789" else row[label]
                  for label in config.labels()}
        measured = profile(sample_to_arch(config, sample), latency=False)
        assert measured.params <= MAX_PARAMS and measured.params == int(row["params"])
        assert measured.flops == int(row["flops"])
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert summary["best"]["val_accuracy"] == pytest.approx(float(best["val_accuracy"]))
    printed = run_cli("profile", str(out / "best_arch.json"), "--json")
    assert json.loads(printed.stdout)["params"] == summary["best"]["params"] <= MAX_PARAMS
    return summary


@pytest.mark.slow
def test_sequential_search_writes_artifacts_within_budget(tmp_path):
    out = tmp_path / "search"
    result = run_cli("search", "--space-config", str(tiny_space_config(tmp_path / "space.json")), "--trials", "3",
                     "--epochs", "1", "--max-params", str(MAX_PARAMS), "--out", str(out), "--seed", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[trial 3/3]" in result.stdout and "best" in result.stdout
    summary = _check_artifacts(out, 3)
    assert summary["screened_out"] > 0  # the budget really cut samples
    again = run_cli("search", "--trials", "3", "--max-params", str(MAX_PARAMS), "--out", str(out))
    assert_clean_error(again, 2, "already holds", "--force")


@pytest.mark.slow
@NNI_MANAGER
def test_ts_engine_search_runs_trials_in_processes_and_stops_the_manager(tmp_path):
    out = tmp_path / "search"
    with reserved_port() as port:
        result = run_cli("search", "--engine", "ts", "--port", str(port), "--concurrency", "2", "--space-config",
                         str(tiny_space_config(tmp_path / "space.json")), "--trials", "3", "--epochs", "1",
                         "--max-params", str(MAX_PARAMS), "--out", str(out), "--seed", "2")
        assert result.returncode == 0, result.stderr[-3000:]
        _check_artifacts(out, 3)
        trial_jobs = {path.name for path in (out / "nni").glob("*/environments/local-env/trials/*")}
        assert len(trial_jobs) == 3  # trials ran as NNI trial jobs, each forked from the warm process:
        served = (out / "nni" / "warm_trials.log").read_text().splitlines()
        assert sorted(line.split()[-1] for line in served) == sorted(trial_jobs)
        assert not port_in_use(port) and not processes_in(tmp_path)  # the NNI manager and trials were stopped


def test_search_rejects_bad_input_before_work(tmp_path):
    out = str(tmp_path / "s")
    assert_clean_error(run_cli("search", "--strategy", "bayes", "--out", out), 2, "unknown strategy")
    assert_clean_error(run_cli("search", "--dataset", "mnist", "--out", out), 2, "unknown dataset")
    assert_clean_error(run_cli("search", "--max-params", "100", "--out", out), 2, "smallest")
    assert_clean_error(run_cli("search", "--engine", "cluster", "--out", out), 2, "unknown engine")
    assert not (tmp_path / "s").exists()


def _image_folder_that_fails_to_decode(root):
    """Two classes of JPEGs whose headers are sound (the check before training passes) but whose data is
    cut short, so that decoding fails inside the trial's training."""
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for index in range(4):
            path = root / label / f"{index}.jpg"
            Image.new("RGB", (16, 16), (index * 40, 80, 120)).save(path, quality=95)
            path.write_bytes(path.read_bytes()[:-2])  # no end-of-image marker: only decoding notices
    return root


@pytest.mark.slow
@NNI_MANAGER
def test_ts_engine_trials_report_why_they_failed(tmp_path):
    out = tmp_path / "search"
    folder = _image_folder_that_fails_to_decode(tmp_path / "images")
    with reserved_port() as port:
        result = run_cli("search", "--engine", "ts", "--port", str(port), "--space-config",
                         str(tiny_space_config(tmp_path / "space.json")), "--dataset", f"imagefolder:{folder}",
                         "--trials", "2", "--epochs", "1", "--out", str(out))
    assert result.returncode == 1 and "trials failed" in result.stderr, result.stderr[-3000:]
    rows = list(csv.DictReader(open(out / "trials.csv")))
    # NNI 3.0's manager can drop the events of the experiment's last trial at shutdown: the first is certain.
    assert rows and {row["status"] for row in rows} == {"failed"}
    assert "CorruptImageError: image" in rows[0]["reason"] and "cannot be read" in rows[0]["reason"], rows[0]
    assert not port_in_use(port) and not processes_in(tmp_path)


@pytest.mark.slow
def test_search_over_block_kinds_trains_the_adaptive_baselines(tmp_path):
    out = tmp_path / "search"
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"widths": [[4, 8], [8]], "blocks": [1], "path_counts": [1, 2],
                                 "block_kinds": ["selective_kernel", "split_attention"]}))
    result = run_cli("search", "--space-config", str(space), "--trials", "2", "--epochs", "1", "--out", str(out),
                     "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    best = Arch.from_json(out / "best_arch.json")
    assert {stage.block for stage in best.stages} <= {"selective_kernel", "split_attention"}
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert all(row["stage1.block"] in ("selective_kernel", "split_attention") for row in rows)
    assert profile(best, latency=False).params == json.loads((out / "summary.json").read_text())["best"]["params"]
    refused = run_cli("search", "--strategy", "spos", "--space-config", str(space), "--out", str(tmp_path / "s2"))
    assert_clean_error(refused, 2, "block_kinds", "multi-trial")
