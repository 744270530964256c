"""What the steps around the training loop need under torchrun: which process speaks, one
value agreed by all, and waiting for all.

The loop itself runs under torchrun through Accelerate (train/loop.py). Around it, a recipe's
run must have one run folder for all processes (the main one writes checkpoints there, the
others read the best one back) and only the main process may register the version. In one
process (no ``WORLD_SIZE`` above 1) these are no-ops, and no process group is started.
"""

from __future__ import annotations

import os
from typing import TypeVar

import torch
from accelerate import PartialState

T = TypeVar("T")


def world_size() -> int:
    """The processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Whether this process writes shared files and registers (rank 0; True without torchrun)."""
    return int(os.environ.get("RANK", "0")) == 0


def _state() -> PartialState:
    # the process group Accelerate starts (gloo on CPUs), shared with the loop's Accelerator
    return PartialState(cpu=not torch.cuda.is_available())


def agree(value: T) -> T:
    """The main process's ``value``, on every process."""
    if world_size() == 1:
        return value
    _state()
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def wait_for_everyone() -> None:
    """Block until every process reaches this point."""
    if world_size() > 1:
        _state().wait_for_everyone()
