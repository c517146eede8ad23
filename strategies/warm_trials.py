"""Warm trial processes for ``--engine ts`` on this machine.

NNI's local training service starts every trial as a fresh ``python -m
nni.nas.execution.training_service trial``, which spends seconds importing torch, Lightning,
torchmetrics and torchvision before a trial of about a second trains (``benchmarks/trial_startup.py``
measures it). A zygote server imports them once; NNI's trial command then runs a small client in
place of the interpreter (NNI lets the ``python`` of its trial command be set), which hands the
server its command line, environment, working directory and standard streams (file descriptors over
a Unix socket); the server forks a child that runs the trial module as ``python -m`` would, and the
client exits with the child's status. NNI sees an ordinary trial process with its usual output files.

nni itself is *not* preloaded: it reads the trial's environment (``NNI_PLATFORM``, the trial's ids and
channel) when imported, so each child imports it with its own environment. A client that cannot
reach the server runs the module itself (a cold trial), so a trial never fails for want of the server.
"""
from __future__ import annotations

import array
import json
import os
import runpy
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

# What every trial imports and nni does not need to see first. sklearn: the bundled digits and the split.
PRELOAD = ("torch", "pytorch_lightning", "torchmetrics", "torchvision", "sklearn.datasets", "sklearn.model_selection")
SERVED_LOG = "warm_trials.log"  # one line per trial the server forked, next to its socket
_STATUS_BYTES = 4


def _send_fds(connection: socket.socket, payload: bytes, fds: Sequence[int]) -> None:
    connection.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


def _receive_fds(connection: socket.socket, size: int, count: int) -> tuple[bytes, list[int]]:
    fds = array.array("i")
    message, ancillary, _, _ = connection.recvmsg(size, socket.CMSG_LEN(count * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    return message, list(fds)


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the trial process NNI asked for, then exit with its status."""
    code = 1
    try:
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            os.close(fd)
        sys.stdin, sys.stdout, sys.stderr = (open(0, closefd=False), open(1, "w", closefd=False),
                                             open(2, "w", closefd=False))
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        sys.path[0] = request["cwd"]  # as `python -m` puts the working directory first
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _attend(connection: socket.socket, pid: int) -> None:
    """Forward the client's stop request (or its disappearance) to the child; report the child's status."""
    def watch_client() -> None:
        try:
            request = connection.recv(1)
        except OSError:
            request = b""
        try:
            os.kill(pid, signal.SIGTERM if request else signal.SIGKILL)
        except ProcessLookupError:
            pass

    threading.Thread(target=watch_client, daemon=True).start()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    try:
        connection.sendall((code % 256).to_bytes(_STATUS_BYTES, "little"))
    except OSError:
        pass
    finally:
        connection.close()


def _stop_children(children: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still there after ``grace`` seconds."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in children:
            try:
                os.kill(pid, signum)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while alive and time.time() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _running(pid)]
        if not alive:
            return
        children = alive


def _running(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:  # already reaped by its attendant thread
        return False


def serve(socket_path: Path) -> None:
    """Preload, then fork one child per client until SIGTERM or until the search that started it is
    gone (children still running are stopped)."""
    import importlib

    search = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the search's to handle; it stops us
    for name in PRELOAD:
        importlib.import_module(name)
    children: list[int] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(socket_path))
    server.listen(64)
    server.settimeout(1.0)

    def stop(signum, frame) -> None:
        _stop_children(children)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log = open(socket_path.parent / SERVED_LOG, "a", buffering=1)
    while True:
        try:
            connection, _ = server.accept()
        except socket.timeout:
            if os.getppid() != search:  # the search died without stopping us (e.g. SIGKILL)
                stop(signal.SIGTERM, None)
            continue
        connection.settimeout(None)
        message, fds = _receive_fds(connection, 1 << 20, 3)
        request = json.loads(message)
        pid = os.fork()
        if pid == 0:
            server.close()
            connection.close()
            _run_child(request, fds)
        for fd in fds:
            os.close(fd)
        children.append(pid)
        log.write(f"{time.time():.3f} pid {pid} {request['module']} {request['env'].get('NNI_TRIAL_JOB_ID', '')}\n")
        threading.Thread(target=_attend, args=(connection, pid), daemon=True).start()


def client(socket_path: str, argv: Sequence[str]) -> int:
    """Run ``python -m MODULE ARGS`` (``argv``) in a child of the server, or here when it is not there."""
    if len(argv) < 2 or argv[0] != "-m":
        print(f"warm trial client: expected -m MODULE ..., got {list(argv)}", file=sys.stderr)
        return 2
    module, args = argv[1], list(argv[2:])
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(socket_path)
    except OSError:  # no server: a cold trial
        os.execv(sys.executable, [sys.executable, "-m", module, *args])
    request = {"module": module, "args": args, "env": dict(os.environ), "cwd": os.getcwd()}
    _send_fds(connection, json.dumps(request).encode(), [0, 1, 2])

    def forward(signum, frame) -> None:
        try:
            connection.sendall(b"T")
        except OSError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    status = b""
    while len(status) < _STATUS_BYTES:
        try:
            chunk = connection.recv(_STATUS_BYTES - len(status))
        except InterruptedError:
            continue
        if not chunk:
            return 1  # the server went away mid-trial
        status += chunk
    return int.from_bytes(status, "little")


class WarmTrials:
    """The zygote server of one search: ``python_command`` is what NNI's trial command runs instead
    of the interpreter. Used as a context manager; stops the server (and its children) on exit."""

    def __init__(self, directory: Path, timeout: float = 120.0) -> None:
        self.directory, self.timeout = Path(directory), timeout
        self.socket_path = self.directory / "warm_trials.sock"
        self.process: Optional[subprocess.Popen] = None

    @property
    def python_command(self) -> str:
        return f"{sys.executable} -m strategies.warm_trials client {self.socket_path} --"

    def __enter__(self) -> "WarmTrials":
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        repo = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
        # Its own session: a Ctrl-C at the terminal reaches the search, which stops it.
        self.process = subprocess.Popen([sys.executable, "-m", "strategies.warm_trials", "serve", str(self.socket_path)],
                                        env=env, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + self.timeout
        while not self.socket_path.exists():  # trials before it is up run cold: waiting only saves time
            if self.process.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.1)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.socket_path.unlink(missing_ok=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(Path(argv[1]))
        return 0
    if argv[:1] == ["client"] and len(argv) >= 3 and argv[2] == "--":
        return client(argv[1], argv[3:])
    print("usage: python -m strategies.warm_trials serve SOCKET | client SOCKET -- -m MODULE ARGS...", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
