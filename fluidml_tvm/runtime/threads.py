"""How many threads TVM's kernels run on: every CPU this process may use.

Unless ``TVM_NUM_THREADS`` says otherwise, TVM's thread pool takes half the
logical CPUs on x86, assuming two hyper-threads per core.  On a VM or board
whose CPUs are real cores that leaves half the machine idle: on this 2-CPU
machine every TVM kernel ran on one thread (the BERT FFN matmul: 158 GFLOP/s
on one thread, 210-320 on two).  The pool reads the variable once, when it
starts, so :func:`use_all_cores` must run before the first parallel kernel.
"""

from __future__ import annotations

import os

ENV = "TVM_NUM_THREADS"


def usable_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def use_all_cores() -> int:
    """Set ``TVM_NUM_THREADS`` to the usable CPUs unless it is set; return the thread count."""
    if not os.environ.get(ENV):
        os.environ[ENV] = str(usable_cpus())
    return int(os.environ[ENV])
