"""``fluidml-tvm tune``: tune a model's kernels into a database directory (resumable, local or over RPC)."""

from __future__ import annotations

import argparse
import sys
import warnings


def add_tune_parser(subparsers):
    """Add the ``tune`` subcommand to ``fluidml-tvm``'s subparsers."""
    p = subparsers.add_parser(
        "tune", help="tune MODEL.onnx's kernels with MetaSchedule into a database directory",
        description="Tune the fused kernels of MODEL.onnx with MetaSchedule (XGBoost cost model). "
                    "Records go to --db as they are measured: interrupt at any time and run the same "
                    "command again to continue.")
    p.add_argument("model", help="path of an ONNX model with static input shapes")
    p.add_argument("--db", required=True, metavar="DIR", help="tuning database directory (created if missing)")
    p.add_argument("--trials", type=int_at_least(1), required=True, metavar="N",
                   help="measured candidates wanted in DIR over all kernels, records already there included")
    p.add_argument("--trials-per-task", type=int_at_least(1), metavar="N", help="stop tuning a kernel at N records")
    p.add_argument("--trials-per-iter", type=int_at_least(1), default=16, metavar="N", help="candidates per batch (16)")
    p.add_argument("--target", default="host",
                   help="TVM target: JSON with num-cores, or a preset (host = this CPU, x86-64 = AVX2, aarch64); "
                        "default host, as for optimize")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D0,D1,...",
                   help="static shape for an input with symbolic dimensions (repeatable)")
    p.add_argument("--op", action="append", default=[], metavar="NAME",
                   help="tune only kernels whose name contains NAME (repeatable), e.g. --op matmul")
    p.add_argument("--packed", action="store_true",
                   help="tune the kernels over packed weight layouts (what builds with FluidML kernels use)")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="measure on a device behind this TVM RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the device key registered at the tracker")
    p.add_argument("--rpc-timeout", type=int_at_least(1), default=60, metavar="SEC",
                   help="seconds one remote measurement may take (60)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_tune)
    return p


def run_tune(args) -> int:
    """Run ``fluidml-tvm tune``; 0 when done, 2 on bad input, 3 when tuning stopped early, 130 on Ctrl-C."""
    from ..frontend import ModelImportError, parse_input_shapes
    from ..targets import UnknownTargetError
    from ..schedule.database import CorruptDatabaseError
    from .rpc import TrackerUnreachable, remote_measurement
    from .tune import TuningInterrupted, tune

    try:
        input_shapes = parse_input_shapes(args.input_shape)
        runner = callbacks = None
        if args.rpc_tracker or args.rpc_key:
            runner, callbacks = remote_measurement(args.rpc_tracker or "", args.rpc_key or "",
                                                   session_timeout_sec=args.rpc_timeout)
        where = f"RPC device '{args.rpc_key}'" if runner else "this machine"
        print(f"tuning {args.model} for {args.target} on {where}: {args.trials} trials into {args.db}",
              flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = _show_warning
            report = tune(args.model, args.target, args.db, args.trials, trials_per_task=args.trials_per_task,
                          trials_per_iter=args.trials_per_iter, input_shapes=input_shapes,
                          op_names=args.op or None, packed=args.packed, runner=runner, extra_callbacks=callbacks,
                          progress=not args.quiet)
    except KeyboardInterrupt:
        return 130  # tune() already said how many records are kept
    except TuningInterrupted as err:
        print(f"fluidml-tvm: tuning stopped: {err}", file=sys.stderr)
        return 3
    except (ModelImportError, UnknownTargetError, CorruptDatabaseError, TrackerUnreachable, ImportError,
            ValueError) as err:
        print(f"fluidml-tvm: error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print("done" if report.complete else "budget left: run again to continue")
    return 0


def int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (the counts and timeouts of ``tune`` and ``bench``)."""
    wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
        return value

    return parse


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"fluidml-tvm: warning: {message}", file=sys.stderr)
