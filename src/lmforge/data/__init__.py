"""Data: sources, cleaning, leakage checks, splits and the data card.

Names are imported on first use: the runtime needs only :mod:`lmforge.data.text`, and pandas
should not be part of its start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmforge.data.prepare import PreparedData, data_card_markdown, load_source, prepare_data

__all__ = ["PreparedData", "data_card_markdown", "load_source", "prepare_data"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("lmforge.data.prepare"), name)
    raise AttributeError(f"module 'lmforge.data' has no attribute {name!r}")
