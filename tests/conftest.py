import os
import sys
from pathlib import Path

import pytest
import torch

# The shared helpers (helpers.py, strategy_helpers.py, ...) sit beside this file; the tests below it, in
# unit/ (one module's tests in-process, fast) and e2e/ (commands, servers, training runs).
sys.path.insert(0, str(Path(__file__).parent))

# Two CI cores: keep PyTorch from oversubscribing them when pytest and trainers share the machine. `make test`
# runs two pytest workers and sets OMP_NUM_THREADS=1, which PyTorch (here and in every subprocess) follows.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
