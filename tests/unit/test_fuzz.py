"""Fuzz: hundreds of seeded mutations of the shipped architecture documents, each one either accepted
and built within the limits or answered in one line with status 2 (never a traceback, kill or hang)."""
import collections
import json
import subprocess
import sys

from helpers import REPO

MUTATIONS = 300
SEED = 20261130


def test_mutated_documents_are_built_or_refused_in_one_line():
    # A subprocess: the worker caps its own address space (resource.setrlimit) and each document's
    # time (SIGALRM); the timeout here catches a hang of the worker itself.
    result = subprocess.run([sys.executable, str(REPO / "tests" / "fuzz_documents.py"), "--seed", str(SEED),
                             "--count", str(MUTATIONS)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]  # not killed (negative), no uncaught error
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == MUTATIONS
    failures = [row for row in rows if row["outcome"] not in ("accepted", "refused")]
    assert not failures, failures[:3]
    outcomes = collections.Counter(row["outcome"] for row in rows)
    # Both answers occur often: a validator refusing everything (or nothing) would not pass.
    assert outcomes["accepted"] >= MUTATIONS // 10 and outcomes["refused"] >= MUTATIONS // 2, outcomes
    refusals = " ".join(row["detail"] for row in rows if row["outcome"] == "refused")
    for reason in ("not valid JSON", "is above the limit", "must be"):  # parse errors, limits, types
        assert reason in refusals
