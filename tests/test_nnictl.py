import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import REPO, free_port, port_in_use

VENV_BIN = Path(sys.executable).parent


def activated_venv_env() -> dict:
    """A fresh shell after ``. .venv/bin/activate``: the venv's scripts first on PATH, then the system's.
    (PYTHONPATH is passed through so that a checkout other than the installed one tests itself.)"""
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
           "VIRTUAL_ENV": str(VENV_BIN.parent), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def _trial_jobs(port: int) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/trial-jobs", timeout=10) as response:
        return json.load(response)


@pytest.mark.slow
def test_nnictl_experiment_from_the_shipped_digits_config(tmp_path):
    example = REPO / "examples" / "digits"
    shutil.copy(example / "search_space.json", tmp_path / "search_space.json")
    config = yaml.safe_load((example / "config.yml").read_text())
    assert config["trialCommand"].startswith("mpn-nas trial ")  # as the README shows it, no path
    config["trialCommand"] = config["trialCommand"].replace("--epochs 3", "--epochs 1")
    config["maxTrialNumber"] = 3
    config["experimentWorkingDirectory"] = str(tmp_path / "nni")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    # The shell the README asks for (the environment activated) and nothing else: NNI's local training
    # service runs the trial command with the manager's environment, so this is all a trial can rely on.
    env = {**activated_venv_env(), "NNI_EXP_DIR": str(tmp_path / "nni")}
    created = subprocess.run(["nnictl", "create", "--config", "config.yml", "--port", str(port)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    try:
        deadline, succeeded = time.time() + 420, []
        while time.time() < deadline:
            jobs = _trial_jobs(port)
            succeeded = [j for j in jobs if j["status"] == "SUCCEEDED" and j.get("finalMetricData")]
            assert not [j for j in jobs if j["status"] == "FAILED"], jobs
            if len(succeeded) >= 3:
                break
            time.sleep(3)
        assert len(succeeded) >= 3, _trial_jobs(port)
        for job in succeeded:
            final = json.loads(json.loads(job["finalMetricData"][0]["data"]))
            assert 0 <= final["default"] <= 1 and final["params"] <= 30_000  # the tuner's budget held
    finally:
        stopped = subprocess.run(["nnictl", "stop", "--port", str(port)], capture_output=True, text=True, timeout=120,
                                 env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    time.sleep(1)
    assert not port_in_use(port)


def test_example_configs_are_valid_nni_configs(tmp_path):
    from nni.experiment.config import ExperimentConfig

    key = tmp_path / "id_rsa"
    key.write_text("not a real key")
    for name in ("digits", "cifar10", "remote"):
        text = (REPO / "examples" / name / "config.yml").read_text().replace("~/.ssh/id_rsa", str(key))
        (tmp_path / "search_space.json").write_text((REPO / "examples" / name / "search_space.json").read_text())
        (tmp_path / "config.yml").write_text(text)
        config = ExperimentConfig.load(str(tmp_path / "config.yml")).canonical_copy()
        assert config.tuner.class_name.startswith("strategies.tuners.Budgeted")
        exported = json.loads((REPO / "examples" / name / "search_space.json").read_text())
        assert set(exported) == set(config.search_space)
