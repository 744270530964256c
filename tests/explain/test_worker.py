"""The explanation worker's start: the idle scheduling class and a lower CPU priority than the
server's, never a higher one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lmforge.explain.worker import WORKER_NICE

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux nice levels")

PROBE = "import os; from lmforge.explain.worker import init_worker; init_worker(1); " + (
    "print(os.getpriority(os.PRIO_PROCESS, 0), os.sched_getscheduler(0))"
)


def worker_priority(start_nice: int) -> tuple[int, int]:
    """The nice level and scheduling policy a worker ends with when its process starts at
    ``start_nice``."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        preexec_fn=lambda: os.nice(start_nice - os.nice(0)),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    nice, policy = result.stdout.split()
    return int(nice), int(policy)


def test_a_worker_runs_below_the_server() -> None:
    assert worker_priority(os.nice(0)) == (max(os.nice(0), WORKER_NICE), os.SCHED_IDLE)


def test_a_worker_never_raises_its_priority() -> None:
    assert worker_priority(18) == (18, os.SCHED_IDLE)
