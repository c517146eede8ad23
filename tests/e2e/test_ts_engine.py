"""Searches with the ts engine: NNI's manager, its trial processes (forked from the warm process), Ctrl-C and
resume. Under pytest-xdist these tests and nnictl's run one after another on one worker (conftest.py)."""
import contextlib
import csv
import signal
import subprocess
import sys

import psutil
import pytest

from helpers import (REPO, alive, check_search_artifacts, ctrl_c_answered, descendants, poll_until, port_in_use,
                     processes_in, reserved_port, run_cli, stop_process, tiny_space_config)

MAX_PARAMS = 12_000


@pytest.mark.slow
def test_ts_engine_search_runs_trials_in_processes_and_stops_the_manager(tmp_path):
    out = tmp_path / "search"
    with reserved_port() as port:
        result = run_cli("search", "--engine", "ts", "--port", str(port), "--concurrency", "2", "--space-config",
                         str(tiny_space_config(tmp_path / "space.json")), "--trials", "3", "--epochs", "1",
                         "--max-params", str(MAX_PARAMS), "--out", str(out), "--seed", "2")
        assert result.returncode == 0, result.stderr[-3000:]
        check_search_artifacts(out, 3, MAX_PARAMS)
        trial_jobs = {path.name for path in (out / "nni").glob("*/environments/local-env/trials/*")}
        assert len(trial_jobs) == 3  # trials ran as NNI trial jobs, each forked from the warm process:
        served = (out / "nni" / "warm_trials.log").read_text().splitlines()
        assert sorted(line.split()[-1] for line in served) == sorted(trial_jobs)
        assert not port_in_use(port) and not processes_in(tmp_path)  # the NNI manager and trials were stopped


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
def test_sigint_stops_everything_and_resume_keeps_finished_trials(tmp_path):
    out = tmp_path / "search"
    with reserved_port() as port:
        command = [sys.executable, "-m", "mpn_nas.cli", "search", "--engine", "ts", "--port", str(port),
                   "--space-config", str(tiny_space_config(tmp_path / "space.json")), "--trials", "3", "--epochs", "1",
                   "--max-params", str(MAX_PARAMS), "--out", str(out), "--seed", "4"]
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=ctrl_c_answered)
        started = []
        try:
            poll_until(lambda: (out / "trials.csv").exists() or process.poll() is not None, timeout=300,
                       what="a first finished trial")
            assert (out / "trials.csv").exists(), process.communicate(timeout=60)
            started = descendants(process.pid)  # NNI's manager and the trial processes running now
            assert started
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 130, stderr[-2000:]
            poll_until(lambda: not port_in_use(port) and not [p for p in started if alive(p)]
                       and not processes_in(tmp_path), timeout=60, what="NNI's manager and trials stopped")
        finally:
            stop_process(process)
            for leftover in [*started, *processes_in(tmp_path)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    leftover.kill()
        kept = list(csv.DictReader(open(out / "trials.csv")))
        assert 1 <= len(kept) < 3
        resumed = run_cli("search", "--resume", str(out))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        rows = list(csv.DictReader(open(out / "trials.csv")))
        assert len(rows) == 3 and rows[:len(kept)] == kept  # finished trials kept, not re-run
        assert f"{3 - len(kept)} of 3 trials" in resumed.stdout
        assert not port_in_use(port) and not processes_in(tmp_path)
