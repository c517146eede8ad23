"""NNI's remote training service for real: trials of ``mpn-nas trial`` started over SSH on an OpenSSH server
on loopback (a worker machine that happens to be this one), from the shipped ``examples/remote/config.yml``."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, poll_until, port_in_use, processes_in, reserved_port
from sshd import loopback_sshd
from test_nnictl import _succeeded, _trial_jobs, activated_venv_env

VENV_BIN = Path(sys.executable).parent
TRIALS = 2


def worker_env() -> dict:
    """What every SSH session on the worker gets. NNI 3.0's remote service runs ``python -m pip install nni
    --upgrade`` on each worker when it starts: PIP_NO_INDEX keeps that to the installed nni (a worker without
    a package index otherwise fails). PYTHONPATH lets a checkout other than the installed one test itself."""
    env = {"PIP_NO_INDEX": "1"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def remote_config(tmp_path: Path, server) -> dict:
    """The shipped remote config, its first machine pointed at ``server``, with the digits example's quick
    trials (the remote example trains CIFAR-10 for 30 epochs)."""
    config = yaml.safe_load((REPO / "examples" / "remote" / "config.yml").read_text())
    digits = yaml.safe_load((REPO / "examples" / "digits" / "config.yml").read_text())
    machine = config["trainingService"]["machineList"][0]
    assert {"host", "port", "user", "sshKeyFile", "pythonPath"} <= set(machine)  # what the README says to fill in
    machine.update(host="127.0.0.1", port=server.port, user=server.user, sshKeyFile=str(server.key_file),
                   pythonPath=str(VENV_BIN))
    config["trainingService"]["machineList"] = [machine]
    config["trainingService"]["nniManagerIp"] = "127.0.0.1"  # the worker calls the manager back on loopback
    config.update(trialCommand=digits["trialCommand"].replace("--epochs 3", "--epochs 1"), tuner=digits["tuner"],
                  trialGpuNumber=0, trialConcurrency=TRIALS, maxTrialNumber=TRIALS,
                  experimentWorkingDirectory=str(tmp_path / "nni"))
    machine.pop("maxTrialNumberPerGpu", None)  # GPU sharing: nothing to share without trialGpuNumber
    shutil.copy(REPO / "examples" / "digits" / "search_space.json", tmp_path / "search_space.json")
    return config


@pytest.mark.slow
def test_nnictl_remote_experiment_runs_trials_over_ssh(tmp_path):
    with loopback_sshd(tmp_path / "sshd", worker_env()) as server:
        (tmp_path / "config.yml").write_text(yaml.safe_dump(remote_config(tmp_path, server)))
        env = {**activated_venv_env(), "NNI_EXP_DIR": str(tmp_path / "nni")}
        with reserved_port() as port:
            created = subprocess.run(["nnictl", "create", "--config", "config.yml", "--port", str(port)], cwd=tmp_path,
                                     capture_output=True, text=True, timeout=120, env=env)
            assert created.returncode == 0, created.stdout + created.stderr
            try:
                def jobs_once_all_succeeded():
                    jobs = _trial_jobs(port)
                    assert not [j for j in jobs if j["status"] in ("FAILED", "SYS_CANCELED")], jobs
                    return jobs if len(_succeeded(jobs)) >= TRIALS else None

                succeeded = _succeeded(poll_until(jobs_once_all_succeeded, timeout=420, interval=2,
                                                  what=f"{TRIALS} trials succeeded over SSH"))
                for job in succeeded:
                    final = json.loads(json.loads(job["finalMetricData"][0]["data"]))
                    assert 0 <= final["default"] <= 1 and final["params"] <= 30_000  # the tuner's budget held
            finally:
                stopped = subprocess.run(["nnictl", "stop", "--port", str(port)], capture_output=True, text=True,
                                         timeout=120, env=env)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            poll_until(lambda: not port_in_use(port), timeout=60, what="the NNI manager stopped")
        # The trials ran on the worker's side of SSH: in its HOME, through sessions sshd logged.
        trial_dirs = list(server.home.glob("nni-experiments/*/environments/*/trials/*"))
        assert len(trial_dirs) >= TRIALS, trial_dirs
        log = server.log_text()
        assert log.count(f"Accepted publickey for {server.user} from 127.0.0.1") >= 1, log[-3000:]
        assert "Starting session: command" in log and "subsystem request for sftp" in log, log[-3000:]
    poll_until(lambda: not processes_in(tmp_path), timeout=60, what="the trial keeper and trials stopped")
