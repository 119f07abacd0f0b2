"""Where layout candidates and kernels are timed: this machine, or a device behind an RPC tracker.

A timer turns a compiled module (a Relax executable or a PrimFunc library)
and its arguments into ``run() -> [seconds per repeat]``, which
:func:`fluidml_tvm.tuning.measure_layouts.best_round_medians` calls in rounds.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import numpy as np
import tvm
from tvm import relax

from ..runtime.threads import use_all_cores
from ..targets import cross_compiler, describe
from .rpc import RemoteDevice, RemoteDeviceLost


def _is_relax(executable) -> bool:
    return isinstance(executable, relax.VMExecutable)


class LocalTimer:
    """Runs each module on this machine's CPU (``target`` must run here)."""

    def __init__(self, target, *, number: int = 3, repeat: int = 5, min_repeat_ms: int = 20):
        target = describe(target)
        if target.linker is not None:
            raise ValueError(f"layout costs are timed on this machine; {target} does not run here "
                             "(give an RPC device: --rpc-tracker and --rpc-key)")
        self.options = {"number": number, "repeat": repeat, "min_repeat_ms": min_repeat_ms}
        use_all_cores()

    def runs(self, executable, args: list[np.ndarray]):
        dev = tvm.cpu()
        module = relax.VirtualMachine(executable, dev) if _is_relax(executable) else executable.jit()
        tensors = [tvm.runtime.tensor(a, dev) for a in args]
        timer = module.time_evaluator("main", dev, **self.options)
        return lambda: timer(*tensors).results


class RemoteTimer:
    """Runs each module on a server of ``device``: linked here with ``target``'s cross compiler, uploaded, timed there.

    One RPC session serves every module. Each remote call (connect, upload,
    load, one timing) is bounded by the device's session timeout: a killed
    or frozen server raises :class:`~fluidml_tvm.tuning.rpc.RemoteDeviceLost`
    instead of hanging. The board times with its own ``time_evaluator``;
    ``number=1`` suits slow boards. Call :meth:`close` when done.
    """

    def __init__(self, target, device: RemoteDevice, *, number: int = 1, repeat: int = 3,
                 min_repeat_ms: int = 0):
        self.device = device
        self.fcompile = cross_compiler(describe(target))
        self.options = {"number": number, "repeat": repeat, "min_repeat_ms": min_repeat_ms}
        self._dir = tempfile.TemporaryDirectory(prefix="fluidml-remote-")
        # Every remote handle (session, modules, tensors, timers) is held here until close():
        # freeing one is an RPC call, which on a frozen board would block the caller for ever.
        self._held: list = []
        self._lost: RemoteDeviceLost | None = None
        self._session = None
        self._count = 0

    def runs(self, executable, args: list[np.ndarray]):
        self._count += 1
        name = f"kernel{self._count}.so"
        path = Path(self._dir.name) / name
        executable.export_library(str(path), fcompile=self.fcompile)
        remote = self.session()

        def load():
            remote.upload(str(path))
            module, dev = remote.load_module(name), remote.cpu()
            tensors = [tvm.runtime.tensor(a, dev) for a in args]
            if _is_relax(executable):
                module = relax.VirtualMachine(module, dev)
            return module, module.time_evaluator("main", dev, **self.options), tensors

        loaded = self._call("loading a kernel", load)
        self._held.append(loaded)
        _, timer, tensors = loaded
        return lambda: self._call("timing a kernel", lambda: timer(*tensors).results)

    def session(self):
        if self._session is None:
            self._session = self._call("connecting", self.device.connect)
            self._held.append(self._session)
        return self._session

    def close(self) -> None:
        """Free the remote handles and end the session (the server goes back to the tracker's pool).

        After a lost device they are never freed: each free would wait for it.
        """
        held, self._held, self._session = self._held, [], None
        if self._lost is None:
            try:
                self._call("closing the session", held.clear)
            except RemoteDeviceLost:
                pass  # the stuck call's thread keeps them
        else:
            threading.Thread(target=_keep, args=(held,), daemon=True).start()
        self._dir.cleanup()

    def _call(self, what: str, fn):
        """``fn()`` in a daemon thread, waited for at most the session timeout (RPC calls release the GIL)."""
        if self._lost is not None:
            raise self._lost
        result: dict = {}

        def run():
            try:
                result["value"] = fn()
            except Exception as err:  # noqa: BLE001 - handed to the caller below
                result["error"] = err

        thread = threading.Thread(target=run, daemon=True)  # a frozen server never returns: not joined at exit
        thread.start()
        thread.join(self.device.session_timeout_sec)
        if thread.is_alive():
            self._lost = RemoteDeviceLost(f"the RPC device {self.device} did not answer within "
                                          f"{self.device.session_timeout_sec} s while {what} (frozen, killed or busy)")
            raise self._lost
        if "error" in result:
            err = result.pop("error")
            self._held.append(err)  # its frames hold remote handles: freed with the others, or never
            first = next((line for line in str(err).splitlines()[::-1] if line.strip()), str(err)).strip()
            self._lost = RemoteDeviceLost(f"the RPC device {self.device} failed while {what}: {first[:200]}")
            raise self._lost from None
        return result.pop("value")


def _keep(objects: list) -> None:
    """Hold ``objects`` until the process exits (a daemon thread's frame is never cleaned up)."""
    threading.Event().wait()
