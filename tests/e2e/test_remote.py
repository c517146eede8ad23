"""NNI's remote training service for real: trials of ``mpn-nas trial`` started over SSH on an OpenSSH server
on loopback (a worker machine that happens to be this one), from the shipped ``examples/remote/config.yml``."""
import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import REPO, assert_refused, poll_until, port_in_use, processes_in, reserved_port
from mpn_nas import Arch, profile
from mpn_nas.run_logs import read_csv_logs
from nnictl_helpers import VENV_BIN, activated_venv_env, final_metric, run_experiment, succeeded
from sshd import loopback_sshd

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
        jobs = run_experiment(tmp_path, env, TRIALS)
        for job in succeeded(jobs):
            final = final_metric(job)
            assert 0 <= final["default"] <= 1 and final["params"] <= 30_000  # the tuner's budget held
        # The trials ran on the worker's side of SSH: in its HOME, through sessions sshd logged.
        trial_dirs = list(server.home.glob("nni-experiments/*/environments/*/trials/*"))
        assert len(trial_dirs) == TRIALS, trial_dirs
        for trial_dir in trial_dirs:  # each trial's epoch logs, where NNI's TensorBoard button looks
            assert [row["step"] for row in read_csv_logs(trial_dir / "tensorboard")] == [1]
        log = server.log_text()
        assert log.count(f"Accepted publickey for {server.user} from 127.0.0.1") >= 1, log[-3000:]
        # NNI's worker runs its commands (python, the trial keeper) as SSH exec sessions, uploads by SFTP.
        assert "Starting session: command" in log and "Starting session: subsystem 'sftp'" in log, log[-3000:]
    poll_until(lambda: not processes_in(tmp_path), timeout=60, what="the trial keeper and trials stopped")


@pytest.mark.slow
def test_search_with_the_ts_engine_fans_trials_out_over_ssh(tmp_path):
    from helpers import run_cli, tiny_space_config

    work = tmp_path / "work"  # NNI uploads the current directory to every worker: keep it small (NNI 3.0's
    work.mkdir()              # upload fails on an empty one: "no files or directories specified")
    (work / "README").write_text("trial code directory of a remote search\n")
    with loopback_sshd(tmp_path / "sshd", worker_env()) as server, reserved_port() as port:
        hosts = tmp_path / "hosts.yml"
        hosts.write_text(yaml.safe_dump({"nniManagerIp": "127.0.0.1", "machineList": [
            {"host": "127.0.0.1", "port": server.port, "user": server.user, "sshKeyFile": str(server.key_file),
             "pythonPath": str(VENV_BIN)}]}))
        out = tmp_path / "search"
        result = run_cli("search", "--engine", "ts", "--training-service", "remote", "--remote-hosts", str(hosts),
                         "--space-config", str(tiny_space_config(tmp_path / "space.json")), "--trials", str(TRIALS),
                         "--epochs", "1", "--concurrency", str(TRIALS), "--max-params", "30000", "--port", str(port),
                         "--out", str(out), "--quiet", cwd=work, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        poll_until(lambda: not port_in_use(port), timeout=60, what="the NNI manager stopped")
        summary = json.loads((out / "summary.json").read_text())
        assert summary["trials_succeeded"] == TRIALS and summary["settings"]["training_service"] == "remote"
        rows = list(csv.DictReader(open(out / "trials.csv")))
        assert [row["status"] for row in rows] == ["succeeded"] * TRIALS and all(int(r["params"]) <= 30_000 for r in rows)
        top = max(float(row["val_accuracy"]) for row in rows)
        best_params = {int(row["params"]) for row in rows if float(row["val_accuracy"]) == top}
        assert profile(Arch.from_json(out / "best_arch.json"), latency=False).params in best_params
        trial_dirs = list(server.home.glob("nni-experiments/*/environments/*/trials/*"))
        assert len(trial_dirs) == TRIALS, trial_dirs  # trained on the worker, not in a local process
        for trial_dir in trial_dirs:  # each trial's epoch logs, where NNI's TensorBoard button looks
            assert [row["step"] for row in read_csv_logs(trial_dir / "tensorboard")] == [1]
        assert "Accepted publickey for" in server.log_text()
    poll_until(lambda: not processes_in(tmp_path), timeout=60, what="the trial keeper and trials stopped")


def test_remote_settings_are_refused_in_one_line(tmp_path, cli):
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump([{"host": "127.0.0.1", "user": "nni", "sshKeyFile": str(tmp_path / "absent"),
                                      "pythonPath": "/opt/venv/bin"}]))
    empty = tmp_path / "empty.yml"
    empty.write_text("machineList: []\n")
    cases = [
        (("--remote-hosts", str(hosts)), "--training-service remote needs --engine ts"),
        (("--engine", "ts"), "needs --remote-hosts HOSTS.yml"),
        (("--engine", "ts", "--remote-hosts", str(tmp_path / "none.yml")), "No such file or directory"),
        (("--engine", "ts", "--remote-hosts", str(hosts)), "valid SSH key file"),
        (("--engine", "ts", "--remote-hosts", str(empty)), "non-empty machineList"),
    ]
    for flags, fragment in cases:
        assert_refused(cli("search", "--out", "{tmp}/out", "--trials", "1", "--training-service", "remote", *flags),
                       fragment)
        assert not (tmp_path / "out").exists()
