"""A device farm on loopback for tests: a TVM RPC tracker and emulated aarch64 board servers, each in its own process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluidml_tvm.tuning.rpc import RemoteDevice, TrackerUnreachable

KEY = "emulated-aarch64"
STARTUP_SEC = 600  # QEMU Pythons importing all of tvm on a loaded 2-core machine
SESSION_SEC = 300  # one measurement under QEMU, queueing included


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s process group (a server, its popen worker, its session processes) and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


class Farm:
    """A tracker on the host and emulated board servers, each process in its own process group."""

    def __init__(self, board: Path, logs: Path, session_timeout_sec: int = SESSION_SEC):
        self.board, self.logs, self.procs, self.killed = board, logs, {}, set()
        self.port = free_port()
        self.device = RemoteDevice("127.0.0.1", self.port, KEY, session_timeout_sec=session_timeout_sec)

    @property
    def tracker(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, name: str, argv: list[str], env: dict) -> None:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - the process writes to it until killed
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        log.close()

    def start_all(self, servers: int) -> None:
        tracker = ["-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(self.port),
                   "--port-end", str(self.port + 1)]
        self.start("tracker", [sys.executable, *tracker], dict(os.environ))
        # The board's Python must not see host paths (x86 extension modules).
        board_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for i in range(servers):
            port = free_port()
            self.start(f"board{i}", [str(self.board / "python"), "-m", "tvm.exec.rpc_server",
                                     "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1),
                                     "--tracker", self.tracker, "--key", KEY], board_env)
        self.wait_for(servers, STARTUP_SEC)

    def servers(self) -> int:
        """Boards the tracker lists; 0 while the tracker itself is still starting."""
        try:
            return self.device.count_servers()
        except TrackerUnreachable:
            return 0

    def wait_for(self, servers: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.servers() != servers:
            dead = [n for n, p in self.procs.items() if p.poll() is not None and n not in self.killed]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n)[-1500:]}" for n in self.procs)
                pytest.fail(f"tracker lists {self.servers()} of {servers} boards "
                            f"(exited: {dead})\n{logs}")
            time.sleep(1)

    def kill(self, name: str) -> None:
        self.killed.add(name)
        kill_group(self.procs[name])

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def served(self, name: str) -> int:
        """Libraries the board loaded (its server logs each load)."""
        return self.log(name).count("load_module")
