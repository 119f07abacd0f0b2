"""``fluidml-tvm rpc tracker|server``: TVM's own RPC tracker and server, with loopback as the default binding.

TVM's RPC has no authentication: whoever reaches a server can upload and run
code on it. Bind an address other than loopback only on a trusted network.
"""

from __future__ import annotations

import sys

NO_AUTH = ("TVM's RPC has no authentication: whoever reaches the port can run code on the machine; "
           "bind anything but loopback only on a trusted network")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_rpc_parser(subparsers):
    """Add ``rpc tracker`` and ``rpc server`` to ``fluidml-tvm``'s subparsers."""
    rpc = subparsers.add_parser(
        "rpc", help="run a TVM RPC tracker (host) or server (board) for tuning and bench",
        description=f"A device farm: one tracker on the host, an RPC server on each board under a key. {NO_AUTH}.")
    kinds = rpc.add_subparsers(dest="rpc_command", required=True)
    tracker = kinds.add_parser(
        "tracker", help="the tracker the boards register with and tune/bench ask for a board",
        description=f"TVM's RPC tracker (tvm.rpc.tracker.Tracker). {NO_AUTH}.")
    _bind_options(tracker, port=9190, what="the tracker")
    server = kinds.add_parser(
        "server", help="an RPC server for this machine, registered at a tracker under a key",
        description="TVM's RPC server (tvm.rpc.server.Server), run on the board: it loads and times what the "
                    "host sends. The host connects to it at the address the tracker saw, so a board's server "
                    f"takes --host 0.0.0.0 (or the board's address). {NO_AUTH}.")
    server.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the tracker to register with")
    server.add_argument("--key", required=True, help="the device key, e.g. rpi4 (what --rpc-key names)")
    _bind_options(server, port=9090, what="the server")
    rpc.set_defaults(func=run_rpc)
    return rpc


def _bind_options(p, port: int, what: str) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help=f"address {what} binds (default 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    p.add_argument("--port", type=int, default=port, help=f"first port to try ({port})")
    p.add_argument("--port-end", type=int, metavar="PORT",
                   help="try ports up to (not including) this one (default: --port + 10)")
    p.add_argument("--silent", action="store_true", help="log errors only")


def run_rpc(args) -> int:
    """Run until killed; 2 on bad input or when no port in the range can be bound."""
    from .rpc import RemoteDevice

    port_end = args.port_end if args.port_end is not None else args.port + 10
    try:
        if not 0 < args.port < port_end <= 65536:
            raise ValueError(f"--port {args.port} --port-end {port_end}: need 0 < PORT < PORT-END <= 65536")
        tracker = RemoteDevice.parse(args.tracker, args.key) if args.rpc_command == "server" else None
    except ValueError as err:  # RemoteDevice names tune's flag; this command's is --tracker
        print(f"fluidml-tvm: error: {str(err).replace('--rpc-tracker', '--tracker')}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"fluidml-tvm: note: binding {args.host}: {NO_AUTH}", file=sys.stderr, flush=True)
    try:
        port = _first_free_port(args.host, args.port, port_end)
    except OSError as err:
        print(f"fluidml-tvm: error: --host {args.host} --port {args.port}: {err}", file=sys.stderr)
        return 2
    import logging

    from tvm.rpc.server import Server
    from tvm.rpc.tracker import Tracker

    logging.basicConfig(level=logging.INFO)
    if tracker is None:
        proc = Tracker(args.host, port=port, port_end=port + 1, silent=args.silent)
        print(f"RPC tracker listening on {args.host}:{proc.port}", flush=True)
    else:
        proc = Server(args.host, port=port, port_end=port + 1, key=args.key,
                      tracker_addr=(tracker.host, tracker.port), silent=args.silent)
        print(f"RPC server on {args.host}:{proc.port}, key '{args.key}', registering at tracker "
              f"{tracker.host}:{tracker.port}", flush=True)
    try:
        proc.proc.join()
    except KeyboardInterrupt:
        proc.terminate()
        return 130
    return 0


def _first_free_port(host: str, port: int, port_end: int) -> int:
    """The first port in ``[port, port_end)`` that ``host`` can bind (as TVM binds: SO_REUSEADDR).

    Checked here so that a taken range or a bad address is one line, not a
    traceback from TVM's worker process.
    """
    import socket

    last = None
    for candidate in range(port, port_end):
        try:
            family = socket.getaddrinfo(host, candidate, type=socket.SOCK_STREAM)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, candidate))
            return candidate
        except socket.gaierror as err:
            raise OSError(f"not an address of this machine ({err.strerror})") from None
        except OSError as err:
            last = err
    raise OSError(f"no port in {port}..{port_end - 1} can be bound (last: {last.strerror or last}); "
                  "choose another with --port/--port-end")
