import csv
import json

import pytest

from helpers import assert_refused, check_search_artifacts, run_cli, tiny_space_config
from mpn_nas import Arch, profile

MAX_PARAMS = 12_000


@pytest.mark.slow
def test_sequential_search_writes_artifacts_within_budget(tmp_path, cli):
    out = tmp_path / "search"
    result = run_cli("search", "--space-config", str(tiny_space_config(tmp_path / "space.json")), "--trials", "3",
                     "--epochs", "1", "--max-params", str(MAX_PARAMS), "--out", str(out), "--seed", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[trial 3/3]" in result.stdout and "best" in result.stdout
    summary = check_search_artifacts(out, 3, MAX_PARAMS)
    assert summary["screened_out"] > 0  # the budget really cut samples
    assert_refused(cli("search", "--trials", "3", "--max-params", MAX_PARAMS, "--out", out), "already holds", "--force")


@pytest.mark.slow
def test_search_over_block_kinds_trains_the_adaptive_baselines(tmp_path, cli):
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
    assert_refused(cli("search", "--strategy", "spos", "--space-config", space, "--out", "{tmp}/s2"), "block_kinds",
                   "multi-trial")
