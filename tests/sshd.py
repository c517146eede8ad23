"""An OpenSSH server on a reserved loopback port, for tests of NNI's remote training service: its own host
key, one user key, its own configuration and log, all in a temporary directory; stopped when the block ends."""
from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from helpers import poll_until, port_in_use, reserved_port, stop_process

SSHD = "/usr/sbin/sshd"


@dataclass
class LoopbackSshd:
    port: int
    user: str
    key_file: Path  # the client's private key, authorised on this server
    home: Path  # HOME of its sessions: where NNI's workers put ~/nni-experiments
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def require_sshd() -> None:
    """Skip where sshd is absent, except in CI, where its absence is a setup error (``.ci/run`` installs it)."""
    if Path(SSHD).is_file() and shutil.which("ssh-keygen"):
        return
    message = f"{SSHD} or ssh-keygen not found: install openssh-server (.ci/run does it with apt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _keygen(path: Path) -> None:
    # RSA in PEM form: the format every SSH client library reads (NNI's manager uses the node ssh2 module).
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", "", "-f", str(path)], check=True)


@contextlib.contextmanager
def loopback_sshd(directory: Path, session_env: dict[str, str]) -> Iterator[LoopbackSshd]:
    """Start sshd on 127.0.0.1 (public keys only, no PAM); ``session_env`` is set in every session."""
    require_sshd()
    directory.mkdir(parents=True, exist_ok=True)
    host_key, user_key, home = directory / "host_key", directory / "id_rsa", directory / "home"
    _keygen(host_key)
    _keygen(user_key)
    (directory / "authorized_keys").write_text((directory / "id_rsa.pub").read_text())
    home.mkdir(exist_ok=True)
    if os.geteuid() == 0:  # sshd started by root insists on its privilege-separation directory (systemd makes it)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    env_line = " ".join(f"{name}={value}" for name, value in {"HOME": str(home), **session_env}.items())
    log = directory / "sshd.log"
    with reserved_port() as port:
        (directory / "sshd_config").write_text("\n".join([
            f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {directory / 'authorized_keys'}", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "MaxStartups 100",
            "MaxSessions 100", f"SetEnv {env_line}", "LogLevel VERBOSE", ""]))
        with open(log, "w") as log_handle:
            server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")], stdout=log_handle,
                                      stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: port_in_use(port) or server.poll() is not None, timeout=30, what="sshd listening")
            assert server.poll() is None, log.read_text()
            yield LoopbackSshd(port, getpass.getuser(), user_key, home, log)
        finally:
            stop_process(server)
            poll_until(lambda: not port_in_use(port), timeout=30, what="sshd stopped")
