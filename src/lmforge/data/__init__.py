"""Data: sources, cleaning, leakage checks, splits and the data card."""

from lmforge.data.prepare import PreparedData, data_card_markdown, load_source, prepare_data

__all__ = ["PreparedData", "data_card_markdown", "load_source", "prepare_data"]
