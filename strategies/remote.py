"""``mpn-nas search --engine ts --training-service remote --remote-hosts HOSTS.yml``: trials fanned out over
SSH by NNI's remote training service.

HOSTS.yml holds the machines as NNI's ``machineList`` does, either as the list itself or under
``machineList:`` with the manager's address the workers call back (``nniManagerIp``)::

    nniManagerIp: 10.0.0.1          # this machine, as the workers reach it (default: NNI's guess)
    machineList:
      - host: 10.0.0.2
        user: nni
        sshKeyFile: ~/.ssh/id_rsa
        pythonPath: /opt/mpn-nas/.venv/bin   # directory holding python, with mpn-nas and nni installed

A worker needs the package installed at ``pythonPath`` (NNI runs the trial there with that directory first
on PATH) and the data at the search's ``--data-dir``. NNI 3.0 also runs ``python -m pip install nni
--upgrade`` on each worker as it connects: a worker without a package index needs ``PIP_NO_INDEX=1`` in its
SSH sessions' environment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from mpn_nas.errors import UserError

TRAINING_SERVICES = ("local", "remote")


def check_training_service(training_service: str, remote_hosts: Optional[str], engine: str) -> None:
    """One line for settings that cannot run: an unknown service, remote without hosts or without the ts engine,
    a hosts file NNI's own schema refuses."""
    if training_service not in TRAINING_SERVICES:
        raise UserError(f"unknown training service {training_service!r}; allowed: {', '.join(TRAINING_SERVICES)}")
    if training_service == "local":
        if remote_hosts:
            raise UserError("--remote-hosts goes with --training-service remote")
        return
    if engine != "ts":
        raise UserError("--training-service remote needs --engine ts (NNI's manager starts the trials over SSH)")
    if not remote_hosts:
        raise UserError("--training-service remote needs --remote-hosts HOSTS.yml (the machines, as NNI's machineList)")
    remote_config(remote_hosts)


def read_hosts(path: str) -> dict[str, Any]:
    """``{"machineList": [...], "nniManagerIp": ...}`` from HOSTS.yml (a bare list is the machine list)."""
    import yaml

    file = Path(path).expanduser()
    try:
        doc = yaml.safe_load(file.read_text())
    except OSError as err:
        raise UserError(f"--remote-hosts {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UserError(f"--remote-hosts {path} is not YAML ({str(err).splitlines()[0]})") from None
    if isinstance(doc, list):
        doc = {"machineList": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("machineList"), list) or not doc["machineList"]:
        raise UserError(f"--remote-hosts {path} must hold a non-empty machineList (host, user, sshKeyFile or "
                        "password, pythonPath per machine)")
    unknown = sorted(set(doc) - {"machineList", "nniManagerIp"})
    if unknown:
        raise UserError(f"--remote-hosts {path}: unknown key {unknown[0]!r}; allowed: machineList, nniManagerIp")
    return doc


def remote_config(path: str):
    """NNI's ``RemoteConfig`` for the machines in HOSTS.yml, checked by NNI's own schema."""
    from nni.experiment.config import ExperimentConfig, RemoteConfig

    doc = read_hosts(path)
    try:
        config = RemoteConfig(machine_list=doc["machineList"])
        # A training service is validated inside an experiment (it inherits the trial settings).
        ExperimentConfig(training_service=config, trial_command="true", trial_concurrency=1, search_space={},
                         tuner={"name": "Random"}, nni_manager_ip=doc.get("nniManagerIp")).validate()
    except (ValueError, TypeError, AttributeError, AssertionError) as err:
        raise UserError(f"--remote-hosts {path}: {str(err).strip().splitlines()[0] or type(err).__name__}") from None
    return config


def use_remote_training_service(config, remote_hosts: str) -> None:
    """Point a ``NasExperimentConfig`` at the machines of HOSTS.yml.

    NNI's NAS trial command names this machine's interpreter (``sys.executable``); on a worker the trial
    must run the ``python`` its ``pythonPath`` puts first on PATH, which NNI's ``_trial_command_params``
    (the documented override of that template) selects. NNI uploads the current directory to every worker
    as the trial code directory (a NAS experiment allows no other), so start remote searches from a small one.
    """
    config.training_service = remote_config(remote_hosts)
    manager_ip = read_hosts(remote_hosts).get("nniManagerIp")
    if manager_ip:
        config.nni_manager_ip = manager_ip
    config._trial_command_params = {"python": "python"}
