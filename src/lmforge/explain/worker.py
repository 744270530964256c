"""Explanations in a worker process: what the server runs beside its models.

Integrated gradients cost dozens of forward and backward passes; run in the server's process
they would take its cores from ``/v1/predict``, and torch's thread count is process-wide, so a
budget for explanations could not be set apart from the served model's. A worker process has
its own thread count (``threads``) and the idle scheduling class (Linux ``SCHED_IDLE``; nice 15
where that is refused), so a stream of explanations takes at most that many cores, and only
what predictions leave idle. Each worker keeps the last few versions it explained loaded.

Why SCHED_IDLE and not only nice: Linux groups a session's processes (autogroup) and shares the
CPU fairly between groups, so nice orders threads only inside the server's group — where nice
15 against the inference threads' 10 still takes a quarter of a contended core. Measured in
docs/benchmarks.md (explanations): at nice 15 a stream of explanations nearly doubled the
predict p50; an idle-class thread runs only when no other thread of the group wants the core.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

from lmforge.explain.explainer import Explainer
from lmforge.explain.explanation import Explanation, Method

#: A worker's CPU priority (Linux nice): below the server's inference threads (10); it
#: matters where the idle scheduling class is refused.
WORKER_NICE = 15
#: Versions a worker keeps loaded.
KEEP_LOADED = 2

_loaded: OrderedDict[tuple[str, str | None], Explainer] = OrderedDict()
_threads = 1


@dataclass(frozen=True)
class ExplainJob:
    """One explanation to compute: the version's files, the text and the method's settings."""

    ref: str
    folder: Path
    backend: str | None
    torch_ref: str | None
    torch_folder: Path | None
    text: str
    method: Method
    steps: int | None
    target: str | None
    max_tokens: int | None


def init_worker(threads: int) -> None:
    """The worker process's start: its thread budget and its lower priority."""
    global _threads
    _threads = threads
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    if hasattr(os, "setpriority") and sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            # Per thread on Linux, and inherited by the threads torch and ONNX Runtime start
            # later from this one: the whole worker runs in the idle class.
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        with contextlib.suppress(OSError):
            # Never above the server's own priority: a server started at nice 19 (or by root,
            # who may raise priorities) must not get explanation workers at 15.
            current = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, max(current, WORKER_NICE))


def run_job(job: ExplainJob) -> Explanation:
    """The job's explanation (attention maps left out: an HTTP answer does not carry them)."""
    key = (str(job.folder), job.backend)
    explainer = _loaded.get(key)
    if explainer is None:
        explainer = Explainer(
            job.folder,
            job.ref,
            backend=job.backend,
            torch_folder=job.torch_folder,
            torch_ref=job.torch_ref,
            threads=_threads,
        )
        _loaded[key] = explainer
        while len(_loaded) > KEEP_LOADED:
            _loaded.popitem(last=False)
    _loaded.move_to_end(key)
    result = explainer.explain(
        job.text, job.method, steps=job.steps, target=job.target, max_tokens=job.max_tokens
    )
    return replace(result, attention=None)
