"""Measure candidates on a remote device through a TVM RPC tracker; stop cleanly when the device goes away."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from .failures import TuningInterrupted


class RemoteDeviceLost(TuningInterrupted):
    """No RPC server with the tuning key is left at the tracker; tuning stopped, records kept."""


@dataclass(frozen=True)
class RemoteDevice:
    """The RPC servers registered at ``host:port`` under ``key``.

    ``session_timeout_sec`` bounds one measurement (connect, upload, run):
    raise it for slow or emulated boards.
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
    def config(self) -> ms.runner.RPCConfig:
        return ms.runner.RPCConfig(tracker_host=self.host, tracker_port=self.port, tracker_key=self.key,
                                   session_timeout_sec=self.session_timeout_sec)

    def count_servers(self) -> int:
        """Servers registered under the key; 0 when the tracker itself does not answer."""
        try:
            return self.config.count_num_servers(allow_missing=True)
        except Exception:  # noqa: BLE001 - an unreachable tracker means no device either
            return 0

    def runner(self, evaluator_config: ms.runner.EvaluatorConfig | None = None) -> ms.runner.RPCRunner:
        """An ``RPCRunner`` for the device; a clear error now if no server is registered."""
        if self.count_servers() == 0:
            raise RemoteDeviceLost(
                f"no RPC server {self} (check with: python -m tvm.exec.query_rpc_tracker "
                f"--host {self.host} --port {self.port})")
        return ms.runner.RPCRunner(rpc_config=self.config, evaluator_config=evaluator_config,
                                   f_create_session=_make_create_session())

    def watch(self) -> ms.measure_callback.PyMeasureCallback:
        """A measure callback that stops tuning when the device is gone (put it before the database one)."""
        return _WatchDevice(self)


def remote_measurement(tracker: str, key: str, **kwargs) -> tuple[ms.runner.RPCRunner, list]:
    """``(runner, callbacks)`` for :func:`fluidml_tvm.tuning.tune` to measure on ``key`` at ``tracker``."""
    device = RemoteDevice.parse(tracker, key, **kwargs)
    return device.runner(), [device.watch()]


@derived_object
class _WatchDevice(ms.measure_callback.PyMeasureCallback):
    """Raise :class:`RemoteDeviceLost` when a batch has failures and the tracker lists no server for the key.

    Runs before MetaSchedule's AddToDatabase, so the batch that failed
    because the device vanished is not recorded as slow candidates; every
    earlier batch is already in the database.
    """

    def __init__(self, device: RemoteDevice):
        super().__init__()
        self.device = device
        self.stopped: RemoteDeviceLost | None = None  # what tune() re-raises: the FFI turns it into RuntimeError

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        errors = [str(r.error_msg) for r in runner_results if r.error_msg]
        if not errors or self.device.count_servers() > 0:
            return
        first = next((line for line in errors[0].splitlines()[::-1] if line.strip()), errors[0])
        self.stopped = RemoteDeviceLost(
            f"the RPC device {self.device} went away during tuning: {len(errors)} of "
            f"{len(runner_results)} measurements in the last batch failed (first: {first.strip()[:200]})")
        raise self.stopped


def _make_create_session():
    # Fail at once when the tracker has no server for the key, instead of waiting in the
    # tracker's queue for the whole session timeout. Built in a function so cloudpickle
    # ships it by value to the runner's popen workers.
    def create_session(rpc_config):
        if rpc_config.count_num_servers(allow_missing=True) == 0:
            raise RuntimeError(f"no RPC server with key '{rpc_config.tracker_key}' at tracker "
                               f"{rpc_config.tracker_host}:{rpc_config.tracker_port}")
        return rpc_config.connect_server()

    return create_session
