"""The command line as a new user meets it: --debug anywhere, unmet GPU requests answered before any
work, retrain following the training record of a search."""
from helpers import EXAMPLE_ARCHS, assert_clean_error, recorded_arch, run_cli

SINGLE = str(EXAMPLE_ARCHS / "digits_single.json")


def test_debug_is_accepted_after_the_subcommand(tmp_path):
    after = run_cli("profile", SINGLE, "--debug")
    assert after.returncode == 0 and "params" in after.stdout, after.stderr[-2000:]
    # With --debug a bad input shows its traceback (after the subcommand as before it), not a parse error.
    for argv in (["retrain", str(tmp_path / "none.json"), "--out", str(tmp_path / "o"), "--debug"],
                 ["--debug", "retrain", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")]):
        shown = run_cli(*argv)
        assert shown.returncode == 1 and "Traceback" in shown.stderr and "not found" in shown.stderr
        assert "unrecognized arguments" not in shown.stderr
    assert_clean_error(run_cli("retrain", str(tmp_path / "none.json"), "--out", str(tmp_path / "o")), 2,
                       "not found")


def test_retrain_refuses_a_dataset_of_another_shape_than_the_recorded_one(tmp_path):
    path = tmp_path / "best_arch.json"
    recorded_arch().to_json(path)
    result = run_cli("retrain", str(path), "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out",
                     str(tmp_path / "o"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
