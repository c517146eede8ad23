import json
import shutil

import pytest
import yaml

from helpers import REPO, poll_until, processes_in
from nnictl_helpers import activated_venv_env, final_metric, run_experiment, succeeded


@pytest.mark.slow
def test_nnictl_experiment_from_the_shipped_digits_config(tmp_path):
    example = REPO / "examples" / "digits"
    shutil.copy(example / "search_space.json", tmp_path / "search_space.json")
    config = yaml.safe_load((example / "config.yml").read_text())
    assert config["trialCommand"].startswith("mpn-nas trial ")  # as the README shows it, no path
    config["trialCommand"] = config["trialCommand"].replace("--epochs 3", "--epochs 1")
    config["maxTrialNumber"] = config["trialConcurrency"] = 2  # both at once: one round of trial start-ups
    config["experimentWorkingDirectory"] = str(tmp_path / "nni")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    # The shell the README asks for (the environment activated) and nothing else: NNI's local training
    # service runs the trial command with the manager's environment, so this is all a trial can rely on.
    env = {**activated_venv_env(), "NNI_EXP_DIR": str(tmp_path / "nni")}
    jobs = run_experiment(tmp_path, env, trials=2)
    for job in succeeded(jobs):
        final = final_metric(job)
        assert 0 <= final["default"] <= 1 and final["params"] <= 30_000  # the tuner's budget held
    poll_until(lambda: not processes_in(tmp_path), timeout=60, what="the NNI manager's trials stopped")


def test_example_configs_are_valid_nni_configs(tmp_path):
    from nni.experiment.config import ExperimentConfig

    from mpn_nas.datasets import fixed_shapes
    from search_spaces.config import load_config
    from search_spaces.hpo import hpo_search_space

    key = tmp_path / "id_rsa"
    key.write_text("not a real key")
    for name in ("digits", "cifar10", "remote"):
        text = (REPO / "examples" / name / "config.yml").read_text().replace("~/.ssh/id_rsa", str(key))
        (tmp_path / "search_space.json").write_text((REPO / "examples" / name / "search_space.json").read_text())
        (tmp_path / "config.yml").write_text(text)
        config = ExperimentConfig.load(str(tmp_path / "config.yml")).canonical_copy()
        assert config.tuner.class_name.startswith("strategies.tuners.Budgeted")
        exported = json.loads((REPO / "examples" / name / "search_space.json").read_text())
        assert exported == config.search_space
        # The shipped space is, candidate for candidate, the one the config's tuner (and trial) map from.
        args = config.tuner.class_args
        shape = fixed_shapes()[args["shape"]]
        in_channels, input_size, num_classes = shape.in_channels, shape.input_size, shape.num_classes
        tuner_config = load_config(args["space"], args.get("space_config"), in_channels=in_channels,
                                   input_size=input_size, num_classes=num_classes)  # as BudgetedTuner loads it
        assert exported == hpo_search_space(tuner_config)
        trial_args = config.trial_command.split()
        assert trial_args[trial_args.index("--space") + 1] == config.tuner.class_args["space"]
