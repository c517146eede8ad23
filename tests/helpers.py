"""Shared test helpers: architecture documents and running the command line in-process or as a process."""
from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

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


def assert_refused(outcome: tuple[int, list[str]], *fragments: str) -> None:
    """The in-process ``cli`` fixture's outcome (conftest.py) is a refusal: status 2, one line naming the problem."""
    status, lines = outcome
    assert status == 2 and len(lines) == 1, (status, lines)
    assert all(fragment in lines[0] for fragment in fragments), lines[0]


def poll_until(condition: Callable[[], object], timeout: float, interval: float = 0.2, what: str = "condition"):
    """Call ``condition`` until it returns something truthy (returned) or ``timeout`` seconds pass
    (AssertionError): a deadline instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def ctrl_c_answered() -> None:
    """``preexec_fn`` of a process a test will interrupt: SIGINT at its default, as in a terminal. A test run
    started in the background of a non-interactive shell inherits SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_process(process: subprocess.Popen) -> None:
    """Kill ``process`` and every process it started, if any are still running (a test stops what it started)."""
    import psutil

    if process.poll() is not None:  # exited and reaped: its pid may belong to someone else by now
        return
    try:
        family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait(timeout=60)


def alive(process) -> bool:
    """Whether a ``psutil.Process`` still runs (a zombie waiting for its parent to reap it does not)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list:
    """The processes ``pid`` started, directly or not, that are still alive."""
    import psutil

    try:
        return [child for child in psutil.Process(pid).children(recursive=True) if alive(child)]
    except psutil.NoSuchProcess:
        return []


def processes_in(directory: Path) -> list:
    """Live processes whose command line names ``directory`` or whose working directory is inside it: with a
    test's own temporary directory, processes that test started and nothing else on the machine."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline, cwd = " ".join(process.info["cmdline"] or []), process.info["cwd"] or ""
        if (str(directory) in cmdline or cwd.startswith(str(directory))) and alive(process):
            found.append(process)
    return found


# Ports for servers a test starts (NNI's manager) come from below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range starts at 32768), where bind(0) and outgoing connections never
# land, and each is held under a file lock for the whole test, so concurrent test sessions on this machine
# never pick the same one. NNI's manager takes a port number, not a listening socket, so a port cannot be
# handed over bound; this is the next best thing to it.
RESERVED_PORTS = range(23_000, 24_000)
PORT_LOCKS = Path(tempfile.gettempdir()) / "mpn-nas-test-ports"


@contextlib.contextmanager
def reserved_port() -> Iterator[int]:
    """A TCP port that is free now and that no other test on this machine gets until the block ends."""
    import fcntl
    import random
    import socket

    PORT_LOCKS.mkdir(exist_ok=True)
    for port in random.sample(RESERVED_PORTS, len(RESERVED_PORTS)):
        lock = open(PORT_LOCKS / f"{port}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", port))
            except OSError:  # held by something that is not a test
                lock.close()
                continue
        try:
            yield port
        finally:
            lock.close()
        return
    raise RuntimeError(f"no free port in {RESERVED_PORTS}")


def port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels from a PNG file's header; fails unless the file is a PNG."""
    import struct

    header = Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def figure_pixels(width_inches: float, height_inches: float, dpi: int) -> tuple[int, int]:
    """The PNG size matplotlib writes for a figure of this size (it truncates to whole pixels)."""
    return int(width_inches * dpi), int(height_inches * dpi)


TINY_SPACE = {"widths": [[4, 8], [8, 16]], "blocks": [1], "path_counts": [1, 2, 4]}  # 2,304 samples


def tiny_space_config(path: Path) -> Path:
    """:data:`TINY_SPACE`, a small resnet space (quick trials), written as a --space-config file."""
    import json

    path.write_text(json.dumps(TINY_SPACE))
    return path


def load_benchmark(name: str):
    """The module of ``benchmarks/NAME.py`` (benchmarks are scripts, not a package)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def block_nni(tmp_path):
    """A PYTHONPATH entry whose ``nni`` package fails to import, as if nni were not installed."""
    fake = tmp_path / "no_nni" / "nni"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('nni is not installed here')\n")
    return {"PYTHONPATH": str(fake.parent)}


def recorded_arch(dataset="digits-contexts", **recipe_changes):
    """``digits_single.json`` with a search's training record (a non-default recipe) in its document."""
    from mpn_nas import Arch
    from mpn_nas.recipe import TrainConfig, training_record, with_training_record

    arch = Arch.from_json(EXAMPLE_ARCHS / "digits_single.json")
    config = TrainConfig(lr=0.02, batch_size=32, seed=7, weight_decay=1e-3, **recipe_changes)
    return with_training_record(arch, training_record(dataset, None, config, arch))


def digits_routed_as(routing: str):
    """``digits_routed.json`` with every stage's routing set to ``routing``."""
    from mpn_nas import Arch

    doc = Arch.from_json(EXAMPLE_ARCHS / "digits_routed.json").to_dict()
    for stage in doc["stages"]:
        stage["routing"] = routing
    return Arch.from_dict(doc)


def class_scores(model, dataset) -> list:
    """Each routed layer's class-specialisation score (bits) of ``model`` on ``dataset`` (10 classes)."""
    from mpn_nas.routing_analysis import analyse_routing

    return [layer.class_score for layer in analyse_routing(model, dataset, 10).layers]


def check_search_artifacts(out: Path, trials: int, max_params: int) -> dict:
    """A finished search's artifacts agree with each other and with a re-measure of every trial's network:
    pareto.png's size, summary.json's best, trials.csv's rows (within ``max_params``), best_arch.json."""
    import csv
    import json

    from mpn_nas import Arch, profile
    from search_spaces.config import load_config, sample_to_arch

    assert png_size(out / "pareto.png") == figure_pixels(6, 4, 120)
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "trials.csv")))
    assert len(rows) == trials and summary["trials_succeeded"] == trials
    config = load_config("resnet", summary["settings"]["space_config"], in_channels=1, input_size=8, num_classes=10)
    for row in rows:
        assert row["status"] == "succeeded" and 0 <= float(row["val_accuracy"]) <= 1
        sample = {label: json.loads(row[label]) if row[label][0] in "0123456789" else row[label]
                  for label in config.labels()}
        measured = profile(sample_to_arch(config, sample), latency=False)
        assert measured.params <= max_params and measured.params == int(row["params"])
        assert measured.flops == int(row["flops"])
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    assert abs(summary["best"]["val_accuracy"] - float(best["val_accuracy"])) < 1e-9
    assert profile(Arch.from_json(out / "best_arch.json"), latency=False).params == summary["best"]["params"]
    return summary
