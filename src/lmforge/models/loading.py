"""One lock around everything that builds transformers models in this process.

While ``from_pretrained`` runs, transformers replaces ``torch.nn.init``'s functions (and
``PreTrainedModel.init_weights``) with no-ops process-wide and afterwards puts back what it
found (``transformers.initialization.no_init_weights``). So a model built in one thread while
another thread loads starts from uninitialised memory; and two loads that overlap can restore
each other's no-ops, leaving every model built later in the process uninitialised — a LoRA
adapter, a new classifier head, a test's random model. The server loads models in background
threads, so every load and every model construction in lmforge takes this lock.

A folder that exists but cannot be loaded (damaged weights, an architecture transformers does
not know) is reported as :class:`ModelUnavailableError` by :func:`unavailable_on_failure`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from safetensors import SafetensorError

from lmforge.errors import ModelUnavailableError, first_line

T = TypeVar("T")

MODEL_BUILD_LOCK = threading.RLock()


def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``cls.from_pretrained(*args, **kwargs)``, one at a time in the process."""
    with MODEL_BUILD_LOCK:
        return cls.from_pretrained(*args, **kwargs)


# What transformers, safetensors and tokenizers raise for a damaged or unsupported folder.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    SafetensorError,
)


@contextmanager
def unavailable_on_failure(
    what: str, fix: str, errors: tuple[type[BaseException], ...] = LOAD_ERRORS
) -> Iterator[None]:
    """Turn a load failure inside the block into one line: ``cannot load {what}: {reason}``,
    raised as :class:`ModelUnavailableError` (the model exists but cannot be used)."""
    try:
        yield
    except errors as exc:
        raise ModelUnavailableError(f"cannot load {what}: {first_line(exc, 160)}", fix) from exc
