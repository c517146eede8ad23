"""Running an ``nnictl`` experiment the way a user does, for the local and the remote e2e tests."""
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from helpers import poll_until, port_in_use, reserved_port

VENV_BIN = Path(sys.executable).parent
# NNI's manager gives the tuner process 10 s (hard-coded) to connect; on an overloaded machine its imports
# can take longer. Not the experiment's fault: it is started again, at most this many times in all.
TUNER_START_ATTEMPTS = 3


def activated_venv_env() -> dict:
    """A fresh shell after ``. .venv/bin/activate``: the venv's scripts first on PATH, then the system's.
    (PYTHONPATH is passed through so that a checkout other than the installed one tests itself.)"""
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/"),
           "VIRTUAL_ENV": str(VENV_BIN.parent), "LANG": "C.UTF-8"}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def trial_jobs(port: int) -> list:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/trial-jobs", timeout=10) as response:
        return json.load(response)


def succeeded(jobs: list) -> list:
    return [j for j in jobs if j["status"] == "SUCCEEDED" and j.get("finalMetricData")]


def final_metric(job: dict) -> dict:
    """The final metric a trial reported (NNI stores it JSON-encoded twice)."""
    return json.loads(json.loads(job["finalMetricData"][0]["data"]))


class TunerDidNotStart(AssertionError):
    """The experiment stopped because its tuner missed NNI's 10 s window to connect."""


def _assert_manager_running(port: int) -> None:
    """Fail at once, with NNI's reason, when the experiment stopped with an error, instead of waiting for trials."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/nni/check-status", timeout=10) as response:
        status = json.load(response)
    if status["status"] == "ERROR" and any("Tuner did not connect" in error for error in status.get("errors", [])):
        raise TunerDidNotStart(status)
    assert status["status"] != "ERROR", status


def _run_once(directory: Path, env: dict, trials: int) -> list:
    with reserved_port() as port:
        created = subprocess.run(["nnictl", "create", "--config", "config.yml", "--port", str(port)], cwd=directory,
                                 capture_output=True, text=True, timeout=120, env=env)
        assert created.returncode == 0, created.stdout + created.stderr
        try:
            def jobs_once_all_succeeded():
                _assert_manager_running(port)
                jobs = trial_jobs(port)
                assert not [j for j in jobs if j["status"] in ("FAILED", "SYS_CANCELED")], jobs
                return jobs if len(succeeded(jobs)) >= trials else None

            return poll_until(jobs_once_all_succeeded, timeout=420, interval=2, what=f"{trials} succeeded trials")
        finally:
            stopped = subprocess.run(["nnictl", "stop", "--port", str(port)], capture_output=True, text=True,
                                     timeout=120, env=env)
            assert stopped.returncode == 0, stopped.stdout + stopped.stderr
            poll_until(lambda: not port_in_use(port), timeout=60, what="the NNI manager stopped")


def run_experiment(directory: Path, env: dict, trials: int) -> list:
    """``nnictl create`` the experiment of ``directory/config.yml``, wait until ``trials`` trials succeeded
    (failing at once on a failed trial or a manager error), ``nnictl stop`` it; returns the trial jobs."""
    for _ in range(TUNER_START_ATTEMPTS - 1):
        try:
            return _run_once(directory, env, trials)
        except TunerDidNotStart:
            pass
    return _run_once(directory, env, trials)
