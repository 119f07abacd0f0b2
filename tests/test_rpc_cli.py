"""``fluidml-tvm rpc tracker|server``: a server started by the command registers at a tracker started by it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.script import relax as R

from fluidml_tvm.cli import main
from fluidml_tvm.tuning import open_database, tune
from fluidml_tvm.tuning.rpc import RemoteDevice

from farm import free_port, kill_group

ROOT = Path(__file__).resolve().parents[1]
KEY = "cli-test"
TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def _command(*args, log: Path) -> subprocess.Popen:
    """``fluidml-tvm ARGS`` in its own process group (killed whole by :func:`_kill`)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "fluidml_tvm.cli", *args], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _run(capsys, *args) -> tuple[int, str, str]:
    """``fluidml-tvm ARGS`` in this process (for what ends before a server starts): code, stdout, stderr."""
    try:
        code = main(list(args))
    except SystemExit as stop:  # --help
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def _wait(condition, what: str, proc: subprocess.Popen, log: Path, timeout=60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what}: {'exited ' + str(proc.returncode) if proc.poll() is not None else 'timed out'}\n"
                        f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)


def test_a_server_started_by_the_command_registers_at_the_commands_tracker(tmp_path):
    port, server_port = free_port(), free_port()
    started = []
    try:
        started.append(_command("rpc", "tracker", "--port", str(port), log=tmp_path / "tracker.log"))
        _wait(lambda: "RPC tracker listening on 127.0.0.1:" in (tmp_path / "tracker.log").read_text(),
              "the tracker", started[0], tmp_path / "tracker.log")
        assert f"RPC tracker listening on 127.0.0.1:{port}" in (tmp_path / "tracker.log").read_text()
        device = RemoteDevice("127.0.0.1", port, KEY)
        assert device.count_servers() == 0
        started.append(_command("rpc", "server", "--tracker", f"127.0.0.1:{port}", "--key", KEY,
                                "--port", str(server_port), log=tmp_path / "server.log"))
        _wait(lambda: device.count_servers() == 1, "the server", started[1], tmp_path / "server.log")

        summary = tvm.rpc.connect_tracker("127.0.0.1", port).summary()
        assert summary["server_info"] == [{"key": f"server:{KEY}", "addr": ["127.0.0.1", server_port]}]
        # The server runs code sent to it: a session through the tracker answers.
        remote = tvm.rpc.connect_tracker("127.0.0.1", port).request(KEY, session_timeout=60)
        assert remote.get_function("runtime.GetDeviceAttr") is not None
        # Loopback binding by default: nothing listens on the other interfaces.
        assert _listens_only_on_loopback(server_port)
    finally:
        for proc in started:
            kill_group(proc)


def _listens_only_on_loopback(port: int) -> bool:
    addresses = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {"127.0.0.1"}
    for address in addresses - {a for a in addresses if a.startswith("127.")}:
        try:
            socket.create_connection((address, port), timeout=2).close()
            return False
        except OSError:
            pass
    return True


def test_a_taken_port_range_is_one_line(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = _run(capsys, "rpc", "tracker", "--port", str(port), "--port-end", str(port + 1))
    assert code == 2
    assert err.strip().splitlines() == [
        f"fluidml-tvm: error: --host 127.0.0.1 --port {port}: no port in {port}..{port} can be bound "
        f"(last: Address already in use); choose another with --port/--port-end"]


@pytest.mark.parametrize(("args", "message"), [
    (["server", "--tracker", "localhost", "--key", KEY], "error: --tracker 'localhost': expected HOST:PORT"),
    (["tracker", "--port", "9300", "--port-end", "9300"], "--port 9300 --port-end 9300: need 0 < PORT < PORT-END"),
    (["tracker", "--host", "no.such.host.invalid"], "--host no.such.host.invalid --port 9190: not an address"),
])
def test_bad_arguments_are_one_line(capsys, args, message):
    code, _, err = _run(capsys, "rpc", *args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if not line.startswith("fluidml-tvm: note:")]
    assert len(lines) == 1 and message in lines[0]


def test_help_says_rpc_has_no_authentication(capsys):
    for kind in ("tracker", "server"):
        text = " ".join(_run(capsys, "rpc", kind, "--help")[1].split())
        assert "no authentication" in text and "default 127.0.0.1" in text


@tvm.script.ir_module
class Matmul:
    @R.function
    def main(x: R.Tensor((32, 64), "float32"), w: R.Tensor((64, 48), "float32")):
        with R.dataflow():
            y = R.nn.relu(R.matmul(x, w))
            R.output(y)
        return y


def test_tuning_measures_on_every_server_of_the_key_at_once(tmp_path):
    """Two servers started by the command; tuning keeps both busy at the same time (MetaSchedule alone: one)."""
    port = free_port()
    started = []
    try:
        started.append(_command("rpc", "tracker", "--port", str(port), "--silent", log=tmp_path / "tracker.log"))
        device = RemoteDevice("127.0.0.1", port, KEY, session_timeout_sec=60)
        _wait(lambda: "listening" in (tmp_path / "tracker.log").read_text(), "the tracker", started[0],
              tmp_path / "tracker.log")
        for i in range(2):
            log = tmp_path / f"server{i}.log"
            started.append(_command("rpc", "server", "--tracker", f"127.0.0.1:{port}", "--key", KEY,
                                    "--port", str(free_port()), "--silent", log=log))
        _wait(lambda: device.count_servers() == 2, "two servers", started[-1], tmp_path / "server1.log")

        # Each measurement holds its server for about a second: long enough to see both held at once.
        runner = device.runner(ms.runner.EvaluatorConfig(number=1, repeat=1, min_repeat_ms=1000))
        busy, stop = [], threading.Event()

        def sample():
            while not stop.is_set():
                registered, free = device.status()
                busy.append((time.monotonic(), registered - free))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            report = tune(Matmul, TARGET, tmp_path / "db", trials=4, trials_per_iter=4, runner=runner,
                          extra_callbacks=[device.watch()], search="replay-trace", progress=False, seed=0)
        finally:
            stop.set()
            sampler.join(timeout=10)
        assert report.measured_now == 4
        records = open_database(tmp_path / "db").get_all_tuning_records()
        assert len(records) == 4 and all(float(s) < 1e9 for r in records for s in r.run_secs)
        # Both servers held for half a second on end (a server between two sessions is out of the free
        # queue only for milliseconds, so one worker never shows this).
        both = [t for t, n in busy if n == 2]
        assert _longest_run(both, step=0.3) >= 0.5, busy
    finally:
        for proc in started:
            kill_group(proc)


def _longest_run(times: list[float], step: float) -> float:
    """The longest span of ``times`` with no gap over ``step`` s."""
    best, start = 0.0, None
    for prev, cur in zip([None, *times], times):
        start = cur if prev is None or cur - prev > step else start
        best = max(best, cur - start)
    return best


def test_after_a_timeout_a_session_waits_for_a_server_another_measurement_holds(tmp_path):
    """With parallel workers, "no server free" after a timed-out measurement means frozen servers only when no
    other measurement of the runner is in flight; otherwise the held server comes back and is waited for."""
    from fluidml_tvm.tuning.rpc import _make_create_session

    port, started = free_port(), []
    try:
        started.append(_command("rpc", "tracker", "--port", str(port), "--silent", log=tmp_path / "tracker.log"))
        _wait(lambda: "listening" in (tmp_path / "tracker.log").read_text(), "the tracker", started[0],
              tmp_path / "tracker.log")
        started.append(_command("rpc", "server", "--tracker", f"127.0.0.1:{port}", "--key", KEY, "--port",
                                str(free_port()), "--silent", log=tmp_path / "server.log"))
        device = RemoteDevice("127.0.0.1", port, KEY, session_timeout_sec=60)
        _wait(lambda: device.count_servers() == 1, "the server", started[1], tmp_path / "server.log")
        held = [tvm.rpc.connect_tracker("127.0.0.1", port).request(KEY, session_timeout=60)]  # another measurement
        _wait(lambda: device.status() == (1, 0), "the session", started[1], tmp_path / "server.log")

        alone = _make_create_session(2.0, {"end": "timeout", "running": 1})
        with pytest.raises(RuntimeError, match="skipped: no RPC server is free since a measurement timed out"):
            alone(device.config)

        # The other measurement ends after the answer timeout (1 s): its server comes back free then.
        threading.Timer(3.0, held.clear).start()
        beside = _make_create_session(1.0, {"end": "timeout", "running": 2})
        session = beside(device.config)
        assert session.get_function("runtime.GetDeviceAttr") is not None

        # A session waiting in the queue of a tracker that goes away fails at once (TVM alone would try to
        # reconnect for minutes, keeping the worker, and the process's exit, waiting).
        outcome = []

        def wait_in_queue():
            try:
                beside(device.config)
            except RuntimeError as err:
                outcome.append(err)

        waiting = threading.Thread(target=wait_in_queue, daemon=True)
        waiting.start()  # the server is held by ``session``
        _wait(lambda: device.status()[1] == 0, "the queued request", started[0], tmp_path / "tracker.log")
        time.sleep(1)  # the request is sent before the tracker dies
        kill_group(started[0])
        waiting.join(timeout=30)
        assert not waiting.is_alive() and outcome, "a session request outlived its tracker"
    finally:
        for proc in started:
            kill_group(proc)
