"""One lock around everything that builds transformers models in this process.

While ``from_pretrained`` runs, transformers replaces ``torch.nn.init``'s functions (and
``PreTrainedModel.init_weights``) with no-ops process-wide and afterwards puts back what it
found (``transformers.initialization.no_init_weights``). So a model built in one thread while
another thread loads starts from uninitialised memory; and two loads that overlap can restore
each other's no-ops, leaving every model built later in the process uninitialised — a LoRA
adapter, a new classifier head, a test's random model. The server loads models in background
threads, so every load and every model construction in lmforge takes this lock.
"""

from __future__ import annotations

import threading
from typing import Any, TypeVar

T = TypeVar("T")

MODEL_BUILD_LOCK = threading.RLock()


def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``cls.from_pretrained(*args, **kwargs)``, one at a time in the process."""
    with MODEL_BUILD_LOCK:
        return cls.from_pretrained(*args, **kwargs)
