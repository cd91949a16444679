"""Loopback hosts for multi-node tests: an sshd of the test's own on 127.0.0.1 and 127.0.0.2 (a free port picked at
run time, torn down after the module), so `--launcher ssh` reaches "another node" on this machine."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_server(proc: subprocess.Popen, base: str, headers: dict | None = None, timeout: float = 240) -> dict:
    """Wait until an OpenAI-compatible server started as `proc` answers GET {base}/models; return that answer. Fails
    with the server's own output when it exits first."""
    deadline = time.time() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline, f"the server at {base} did not come up in {timeout:.0f} s"
        try:
            req = urllib.request.Request(f"{base}/models", headers=headers or {})
            return json.loads(urllib.request.urlopen(req, timeout=5).read())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)


def sshd_server(tmp_path_factory):
    """Generator for a module-scoped fixture: yields {"port", "config" (ssh client config), "log", "dir"}."""
    if not Path(SSHD).exists() or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        reason = f"needs OpenSSH ({SSHD}, ssh, ssh-keygen): apt-get install openssh-server openssh-client"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copyfile(d / "user_key.pub", d / "authorized_keys")
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {d / 'host_key'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nPermitRootLogin yes\nUsePAM no\n"
        f"PasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile {d / 'sshd.pid'}\n"
    )
    client = d / "ssh_config"
    client.write_text(
        f"Host *\n  Port {port}\n  IdentityFile {d / 'user_key'}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {d / 'known_hosts'}\n  StrictHostKeyChecking accept-new\n"
    )
    try:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    except OSError as exc:
        print(f"SKIP: cannot create /run/sshd for sshd: {exc}")
        pytest.skip(f"cannot create /run/sshd for sshd: {exc}")
    check = subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], check=False, capture_output=True, text=True)
    if check.returncode != 0:
        print(f"SKIP: sshd cannot run here: {check.stderr.strip()}")
        pytest.skip(f"sshd cannot run here: {check.stderr.strip()}")
    with open(d / "sshd.log", "w") as log:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=subprocess.STDOUT)
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            def answers(host=host):
                with socket.socket() as s:
                    return s.connect_ex((host, port)) == 0
            wait_for(answers, 10, f"sshd on {host}:{port}")
        yield {"port": port, "config": client, "log": d / "sshd.log", "dir": d}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


