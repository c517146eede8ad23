"""Shared test helpers: architecture documents and running the command line in-process or as a process."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ARCHS = REPO / "examples" / "archs"


def arch_doc(**changes) -> dict:
    """A small valid digits resnet document with top-level fields changed."""
    doc = {
        "format": "mpn-nas/arch", "version": 1, "family": "resnet", "in_channels": 1, "input_size": 8,
        "num_classes": 10, "stem_width": 8,
        "stages": [{"blocks": 1, "width": 4, "paths": 3, "routing": "feature_dependent", "density": 1.0, "stride": 1,
                    "se": False},
                   {"blocks": 1, "width": 8, "paths": 2, "routing": "cross_prediction", "density": 0.5, "stride": 2,
                    "se": True}],
    }
    doc.update(copy.deepcopy(changes))
    return doc


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd: Path | None = None):
    """Run ``mpn-nas`` as a separate process, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mpn_nas.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or REPO)


def assert_clean_error(result, status: int = 2, *fragments: str) -> None:
    """One line on stderr naming the problem, the given exit status, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def tiny_space_config(path: Path) -> Path:
    """A small resnet space (quick trials) written as a --space-config file."""
    import json

    path.write_text(json.dumps({"widths": [[4, 8], [8, 16]], "blocks": [1], "path_counts": [1, 2, 4]}))
    return path
