"""Warm trial processes: the client runs ``python -m MODULE`` in a child of the zygote, with the
client's environment, working directory, standard streams and exit status."""
import os
import subprocess

import pytest

from helpers import REPO
from strategies.warm_trials import SERVED_LOG, WarmTrials

TRIAL = ("import os, sys\n"
         "print('trial', os.environ['NNI_TRIAL_JOB_ID'], os.getcwd(), sys.argv[1:], 'torch' in sys.modules)\n"
         "print('to stderr', file=sys.stderr)\n"
         "sys.exit(int(sys.argv[1]))\n")


def _client(warm: WarmTrials, cwd, *args: str) -> subprocess.CompletedProcess:
    command = [*warm.python_command.split(), "-m", "fake_trial", *args]
    env = {**os.environ, "NNI_TRIAL_JOB_ID": "abc12", "PYTHONPATH": str(REPO)}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_trial_runs_forked_from_the_warm_process_with_its_own_environment(tmp_path):
    trial_dir = tmp_path / "trial"
    trial_dir.mkdir()
    (trial_dir / "fake_trial.py").write_text(TRIAL)
    with WarmTrials(tmp_path / "nni") as warm:
        assert warm.socket_path.exists()
        result = _client(warm, trial_dir, "3", "x")
        served = (tmp_path / "nni" / SERVED_LOG).read_text().splitlines()
    assert result.returncode == 3, result.stderr
    # torch was already imported: the trial ran in a child of the warm process, not in a fresh Python
    assert result.stdout == f"trial abc12 {trial_dir} ['3', 'x'] True\n" and result.stderr == "to stderr\n"
    assert len(served) == 1 and served[0].endswith("fake_trial abc12")
    assert not warm.socket_path.exists() and warm.process.poll() is not None  # the server was stopped


def test_without_the_server_the_client_runs_the_trial_itself(tmp_path):
    (tmp_path / "fake_trial.py").write_text(TRIAL)
    warm = WarmTrials(tmp_path / "nni")  # never started
    result = _client(warm, tmp_path, "0")
    assert result.returncode == 0 and result.stdout == f"trial abc12 {tmp_path} ['0'] False\n", result.stderr
