import os
import sys
from pathlib import Path

import pytest
import torch

# The shared helpers (helpers.py, strategy_helpers.py, ...) sit beside this file; the tests below it, in
# unit/ (one module's tests in-process, fast) and e2e/ (commands, servers, training runs).
sys.path.insert(0, str(Path(__file__).parent))

# Two CI cores: keep PyTorch from oversubscribing them when pytest and trainers share the machine. `make test`
# runs several pytest workers and sets OMP_NUM_THREADS=1, which PyTorch (here and in every subprocess) follows.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


# `make test` runs pytest-xdist workers, each taking the next test when it is free, except that the tests of each
# group of files below run one after another on one worker. NNI's manager gives a starting tuner 10 s to connect,
# which several managers starting at once on two busy cores can miss: the local ones form one group and the SSH
# ones another, so at most two start at once (and tests/nnictl_helpers.py restarts an experiment whose tuner
# missed it). test_distributed's module fixture trains once.
SERIAL_FILES = {"test_ts_engine.py": "nni manager", "test_nnictl.py": "nni manager", "test_remote.py": "nni over ssh",
                "test_distributed.py": "distributed"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class SerialFilesScheduling(LoadScopeScheduling):
        """Every test its own unit of work, the files above one unit each (the largest units start first)."""

        def _split_scope(self, nodeid: str) -> str:
            return SERIAL_FILES.get(Path(nodeid.split("::")[0]).name, nodeid)

    return SerialFilesScheduling(config, log)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    yield
    # A trial evaluator or benchmark run in-process sets its own thread count; the next test must not inherit
    # it: two PyTorch threads on a core the other pytest worker is using make training 10-40x slower.
    torch.set_num_threads(threads)


@pytest.fixture
def cli(capsys, tmp_path):
    """``mpn-nas ARGV`` in this process: (exit status, stderr lines); ``{tmp}`` in ARGV is ``tmp_path``. What a
    real process prints on bad input (one line, no traceback) is checked in tests/e2e/test_reliability.py."""
    from mpn_nas.cli import main

    def run(*argv: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        status = main([str(a).format(tmp=tmp_path) for a in argv])
        return status, capsys.readouterr().err.strip().splitlines()

    return run
