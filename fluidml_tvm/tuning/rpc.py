"""Measure candidates on a device behind a TVM RPC tracker: each measurement bounded, stop when the device is lost."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from tvm import rpc
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor

from .failures import TuningInterrupted

# Longest wait for the tracker to answer a status query (connect, handshake, summary).
TRACKER_ANSWER_SEC = 5.0


class RemoteDeviceLost(TuningInterrupted):
    """No usable RPC server with the tuning key is left at the tracker; tuning stopped, records kept."""


class TrackerUnreachable(ConnectionError):
    """The RPC tracker does not answer at its address."""


@dataclass(frozen=True)
class RemoteDevice:
    """The RPC servers registered at ``host:port`` under ``key``.

    ``session_timeout_sec`` bounds one measurement (waiting for a free
    server, connect, upload, run): a measurement that takes longer fails and
    its worker process is killed. Raise it for slow or emulated boards.
    """

    host: str
    port: int
    key: str
    session_timeout_sec: int = 60

    @classmethod
    def parse(cls, tracker: str, key: str, **kwargs) -> RemoteDevice:
        """From ``"HOST:PORT"`` and a key, as the command line gives them."""
        host, sep, port = tracker.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--rpc-tracker {tracker!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
        if not key:
            raise ValueError("an RPC tracker needs a device key (--rpc-key)")
        return cls(host, int(port), key, **kwargs)

    def __str__(self) -> str:
        return f"'{self.key}' at tracker {self.host}:{self.port}"

    @property
    def answer_timeout(self) -> float:
        return min(TRACKER_ANSWER_SEC, float(self.session_timeout_sec))

    @property
    def config(self) -> ms.runner.RPCConfig:
        return ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port, tracker_key=self.key,
                                   session_timeout_sec=self.session_timeout_sec)

    def status(self) -> tuple[int, int]:
        """``(registered, free)``: servers connected to the tracker under the key, and those waiting for a session.

        Raises :class:`TrackerUnreachable` when the tracker does not answer
        within a few seconds (nothing listening, a black-holed port, a frozen
        tracker).
        """
        try:
            return _tracker_status(self.host, self.port, self.key, self.answer_timeout)
        except OSError as err:
            why = _why(err, self.answer_timeout)
            raise TrackerUnreachable(
                f"--rpc-tracker {self.host}:{self.port}: no RPC tracker answers there ({why}); "
                f"start one with: python -m tvm.exec.rpc_tracker --host {self.host} --port {self.port}") from None

    def connect(self) -> rpc.RPCSession:
        """A session on one server under the key (queued at the tracker up to the session timeout)."""
        return rpc.connect_tracker(self.host, self.port).request(self.key, session_timeout=self.session_timeout_sec)

    def count_servers(self) -> int:
        """Servers registered under the key (raises :class:`TrackerUnreachable` as :meth:`status`)."""
        return self.status()[0]

    def runner(self, evaluator_config: ms.runner.EvaluatorConfig | None = None) -> ms.runner.RPCRunner:
        """An ``RPCRunner`` for the device whose measurements time out; a clear error now if none can run.

        It measures on every server registered under the key now, in
        parallel: one worker per server (MetaSchedule's default is one in
        all), so no measurement waits in the tracker's queue for a server
        that another worker holds.
        """
        servers = self.count_servers()
        if servers == 0:
            raise RemoteDeviceLost(
                f"no RPC server {self} (check with: python -m tvm.exec.query_rpc_tracker "
                f"--host {self.host} --port {self.port})")
        pool = _BoundedPool(self.session_timeout_sec, workers=servers)
        runner = ms.runner.RPCRunner(rpc_config=self.config, evaluator_config=evaluator_config, max_workers=servers,
                                     f_create_session=_make_create_session(self.answer_timeout, pool.last))
        # RPCRunner's own pool waits for a measurement without limit: a stopped server hangs tuning.
        unbounded, runner.pool = runner.pool, pool
        unbounded.shutdown(wait=False)
        return runner

    def watch(self) -> ms.measure_callback.PyMeasureCallback:
        """A measure callback that stops tuning when the device is gone or frozen (put it before the database one)."""
        return _WatchDevice(self)


def remote_measurement(tracker: str, key: str, **kwargs) -> tuple[ms.runner.RPCRunner, list]:
    """``(runner, callbacks)`` for :func:`fluidml_tvm.tuning.tune` to measure on ``key`` at ``tracker``."""
    device = RemoteDevice.parse(tracker, key, **kwargs)
    return device.runner(), [device.watch()]


@derived_object
class _WatchDevice(ms.measure_callback.PyMeasureCallback):
    """After a batch with failed measurements, stop tuning unless a server with the key is free again.

    A killed server leaves the tracker; a stopped (SIGSTOP) or hung one stays
    registered but never comes back free once a session was handed to it, and
    its measurement times out. Either way, when no server is free within one
    session timeout, :class:`RemoteDeviceLost` is raised. This runs before
    MetaSchedule's AddToDatabase: the batch's successful measurements are
    committed here first, its failures (caused by the device) are not recorded
    as slow candidates; every earlier batch is already in the database.
    """

    def __init__(self, device: RemoteDevice):
        super().__init__()
        self.device = device
        self.stopped: RemoteDeviceLost | None = None  # what tune() re-raises: the FFI turns it into RuntimeError

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        failed = [i for i, r in enumerate(runner_results) if r.error_msg]
        if not failed:
            return
        why = self._unusable()
        if why is None:
            return
        error = str(runner_results[failed[0]].error_msg)
        first = next((line for line in error.splitlines()[::-1] if line.strip()), error).strip()
        self.stopped = RemoteDeviceLost(
            f"the RPC device {self.device} {why}: {len(failed)} of {len(runner_results)} measurements "
            f"in the last batch failed (first: {first[:200]})")
        ok = [i for i in range(len(runner_results)) if i not in failed]
        if ok:
            ms.measure_callback.AddToDatabase().apply(
                task_scheduler, task_id, [measure_candidates[i] for i in ok], [builder_results[i] for i in ok],
                [runner_results[i] for i in ok])
        raise self.stopped

    def _unusable(self) -> str | None:
        """Why no server can measure now, or None when one is (or becomes) free in time."""
        deadline = time.monotonic() + self.device.session_timeout_sec
        while True:
            try:
                registered, free = self.device.status()
            except TrackerUnreachable as err:
                return f"cannot be reached any more: {err}"
            if registered == 0:
                return "went away (no server is registered under the key)"
            if free:
                return None
            if time.monotonic() > deadline:  # a server just done with a session re-registers in well under that
                return (f"stopped answering ({registered} server(s) registered, none free again within "
                        f"{self.device.session_timeout_sec} s: stopped, frozen or busy)")
            time.sleep(0.5)


class _BoundedPool(PopenPoolExecutor):
    """Workers whose calls answer TimeoutError after ``timeout`` s (the RPC calls release the GIL), then die.

    ``last`` says how the measurement that ended last ended ("timeout",
    "skipped" or None), for the next session to skip at once when no server
    is free again.
    """

    def __init__(self, timeout: float, workers: int = 1):
        super().__init__(max_workers=max(1, workers), timeout=timeout)
        # "running": calls being sent or run now, this one included (shipped with each call)
        self.last: dict = {"end": None, "running": 0}
        self._running = threading.Lock()

    def _worker_run(self, fn, args, kwargs):
        with self._running:
            self.last["running"] += 1
        try:
            return super()._worker_run(fn, args, kwargs)  # pickles fn, and with it ``last``, first
        finally:
            with self._running:
                self.last["running"] -= 1

    def submit(self, fn, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._note)  # runs before the next call is sent, which ships ``last``
        return future

    def _note(self, future) -> None:
        err = future.exception()
        skipped = err is not None and _SKIPPED in str(err)
        self.last["end"] = "timeout" if isinstance(err, TimeoutError) else "skipped" if skipped else None


_SKIPPED = "skipped: no RPC server is free since a measurement timed out"


def _why(err: OSError, timeout: float) -> str:
    if isinstance(err, ConnectionRefusedError):
        return "connection refused: nothing listens on that port"
    if isinstance(err, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(err) or type(err).__name__


def _make_tracker_status():
    # Built in a function so cloudpickle ships it by value to the runner's popen workers.
    def tracker_status(host: str, port: int, key: str, timeout: float) -> tuple[int, int]:
        """``(registered, free)`` servers for ``key``; OSError when the tracker does not answer in ``timeout`` s."""
        import socket
        import struct

        from tvm.rpc import base

        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)  # every later read and write too: a frozen tracker never answers
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(sock, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise ConnectionError("it is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, summary = base.recvjson(sock)
        if code != base.TrackerCode.SUCCESS:
            raise ConnectionError(f"the tracker refused a status query ({code})")
        registered = sum(1 for s in summary["server_info"] if s.get("key", "").split(":", 1)[-1] == key)
        free = summary["queue_info"].get(key, {}).get("free", 0)
        return registered, free

    return tracker_status


_tracker_status = _make_tracker_status()


def _make_create_session(answer_timeout: float, last: dict):
    # Fail at once when the tracker has no server for the key, and after a timed-out
    # measurement when none is free again within answer_timeout (a server back from a
    # session re-registers in well under that), instead of each candidate of the batch
    # waiting in the tracker's queue for the whole session timeout. Built in a function
    # so cloudpickle ships it, and ``last`` as it is at the call, by value to the popen
    # worker; the pool's timeout bounds the rest.
    status = _make_tracker_status()
    skipped = _SKIPPED

    def create_session(rpc_config):
        import time

        from tvm import rpc

        host, port, key = rpc_config.tracker_host, rpc_config.tracker_port, rpc_config.tracker_key
        deadline = time.monotonic() + (answer_timeout if last["end"] == "timeout" else 0)
        # Another measurement of this runner in flight holds a server that comes back when it ends: wait for
        # it in the tracker's queue (the pool's timeout bounds that). Only with none in flight does "no server
        # free" after a timeout mean frozen ones.
        others = last["running"] > 1
        while True:
            registered, free = status(host, port, key, answer_timeout)
            if registered == 0:
                raise RuntimeError(f"no RPC server with key '{key}' at tracker {host}:{port}")
            if free or last["end"] is None or others:
                break
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{skipped} (key '{key}' at tracker {host}:{port})")
            time.sleep(0.5)
        # One try: TVM's retries reconnect to a lost tracker for 60 s each, holding the worker (and the
        # process's exit) long after tuning stopped; a failed session is the device watch's to judge.
        return rpc.connect_tracker(host, port).request(key, priority=rpc_config.session_priority,
                                                       session_timeout=rpc_config.session_timeout_sec,
                                                       max_retry=1)

    return create_session
