"""The data a retraining round learns from and is judged on: a version's original splits plus
the feedback its users gave.

:func:`feedback_examples` turns stored feedback rows into labelled texts — ``{prediction_id,
label}`` joined to the text the prediction log kept, ``{prediction_id, correct: true}`` as the
label the model answered, ``{text, label}`` as written — and counts what it could not use.
:func:`assemble` merges them with the original splits: a later row on the same normalised text
overrides an earlier one and the original training row (a correction), every original
validation and test text stays out of training (the leakage check's key), and each feedback row
is placed by a seeded hash of its normalised text — held out for the gate, validation, or
training — so that it keeps its place in every round and a held-out row is never trained on.
:func:`weighted` gives the training data of one feedback weight: the feedback training rows
repeated, beside a sample of the original training rows (rehearsal).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from lmforge.data import PreparedData
from lmforge.data.text import clean_text, leakage_key
from lmforge.errors import DataError
from lmforge.monitor import Feedback, PredictionLogRow
from lmforge.monitor.tables import create_tables
from lmforge.recipe.schema import CleaningConfig, FeedbackConfig
from lmforge.registry import Registry

_CHUNK = 500  # prediction ids per IN (...) query: well under every database's parameter limit


@dataclass(frozen=True)
class Example:
    """One labelled text from feedback, with when it was last changed (the later one wins)."""

    text: str
    label: str
    updated_at: datetime


@dataclass
class FeedbackExamples:
    """The usable labelled texts of a model's feedback, and why the other rows were not used."""

    examples: list[Example]
    rows: int  # feedback rows of the model that carry a label (or a verdict)
    skipped: dict[str, int] = field(default_factory=dict)
    latest: datetime | None = None  # the newest update among the rows used

    @property
    def unknown_labels(self) -> list[str]:
        return sorted(k.removeprefix("label:") for k in self.skipped if k.startswith("label:"))


def feedback_examples(
    rows: Iterable[Feedback], labels: Sequence[str], registry: Registry
) -> FeedbackExamples:
    """The labelled texts among ``rows`` (one model's feedback) for a model with ``labels``."""
    skipped: dict[str, int] = {}

    def skip(reason: str) -> None:
        skipped[reason] = skipped.get(reason, 0) + 1

    wanted: list[tuple[Feedback, str]] = []  # (row, its label) still needing a text
    examples: list[Example] = []
    count = 0
    for row in rows:
        if row.kind == "interaction":
            continue
        count += 1
        label = row.label  # the store sets it to the answered label for correct: true
        if label is None:
            skip("no_label")  # correct: false without the right label
        elif label not in labels:
            skip(f"label:{label}")
        elif row.text is not None:
            examples.append(Example(row.text, label, row.updated_at))
        else:
            wanted.append((row, label))
    texts = _logged_texts(registry, [r.prediction_id for r, _ in wanted if r.prediction_id])
    for row, label in wanted:
        text = texts.get(row.prediction_id) if row.prediction_id is not None else None
        if text is None:
            skip("no_text")  # the log kept no text (prediction_log.include_text) or expired
        else:
            examples.append(Example(text, label, row.updated_at))
    latest = max((e.updated_at for e in examples), default=None)
    return FeedbackExamples(examples, count, {k: skipped[k] for k in sorted(skipped)}, latest)


def _logged_texts(registry: Registry, ids: list[str]) -> dict[str, str]:
    """The text the prediction log kept for each of ``ids`` (absent where it kept none)."""
    create_tables(registry.engine)
    found: dict[str, str] = {}
    with Session(registry.engine) as session:
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            query = select(PredictionLogRow.prediction_id, PredictionLogRow.text).where(
                PredictionLogRow.prediction_id.in_(chunk)
            )
            for prediction_id, text in session.execute(query):
                if prediction_id is not None and text is not None:
                    found[prediction_id] = text
    return found


def placement(key: str, config: FeedbackConfig) -> str:
    """``holdout``, ``validation`` or ``train``: where a feedback text goes, from a seeded hash
    of its normalised text alone — the same in every round, whatever else arrived."""
    digest = hashlib.sha256(f"{config.seed}\0{key}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") / 2**64
    if share < config.holdout_share:
        return "holdout"
    if share < config.holdout_share + config.validation_share:
        return "validation"
    return "train"


@dataclass
class RetrainData:
    """The splits of a retraining round: ``data`` (original train with the feedback training
    rows, original validation with the feedback validation rows, the original test split) and
    the held-out feedback slice the gate judges on; ``counts`` says where every row went."""

    data: PreparedData
    holdout: pd.DataFrame  # columns: text, label
    counts: dict[str, Any]
    original_train: pd.DataFrame  # the original training rows no feedback text replaced
    feedback_train: pd.DataFrame  # the feedback rows placed in training
    feedback_validation: pd.DataFrame  # the feedback rows placed in validation


def assemble(
    original: PreparedData,
    feedback: FeedbackExamples,
    config: FeedbackConfig,
    cleaning: CleaningConfig,
) -> RetrainData:
    """Merge ``feedback`` into ``original`` (see the module docstring)."""
    counts: dict[str, Any] = {"feedback_rows": feedback.rows, "skipped": dict(feedback.skipped)}
    latest: dict[str, Example] = {}  # normalised text -> its latest labelled example
    unusable = 0
    for example in sorted(feedback.examples, key=lambda e: e.updated_at):
        text = clean_text(example.text, cleaning)
        if not max(cleaning.min_chars, 1) <= len(text) <= cleaning.max_chars:
            unusable += 1
            continue
        key = leakage_key(text)
        latest[key] = Example(text, example.label, example.updated_at)
    counts["usable"] = len(latest)
    counts["duplicates"] = len(feedback.examples) - unusable - len(latest)
    if unusable:
        counts["skipped"]["length"] = unusable

    held_out_keys = set(original.validation["text"].map(leakage_key))
    held_out_keys |= set(original.test["text"].map(leakage_key))
    parts: dict[str, list[Example]] = {"holdout": [], "validation": [], "train": []}
    leaked = 0
    for key, example in latest.items():
        place = placement(key, config)
        if place != "holdout" and key in held_out_keys:
            leaked += 1  # an original validation or test text is never trained on
            continue
        parts[place].append(example)
    counts["leakage"] = leaked

    # A feedback text overrides the original training row with the same normalised text: it is
    # a correction (or a repeat); held out, it must not be trained on either.
    feedback_keys = {leakage_key(e.text) for part in parts.values() for e in part}
    train_keys = original.train["text"].map(leakage_key)
    replaced = train_keys.isin(feedback_keys)
    labels_before = dict(zip(train_keys[replaced], original.train["label"][replaced], strict=True))
    counts["corrected"] = sum(
        labels_before[leakage_key(e.text)] != e.label
        for part in parts.values()
        for e in part
        if leakage_key(e.text) in labels_before
    )
    counts["original_train_replaced"] = int(replaced.sum())

    def frame(examples: list[Example]) -> pd.DataFrame:
        return pd.DataFrame(
            {"text": [e.text for e in examples], "label": [e.label for e in examples]}
        )

    kept = original.train[~replaced.to_numpy()].reset_index(drop=True)
    train = pd.concat([kept, frame(parts["train"])])
    validation = pd.concat([original.validation, frame(parts["validation"])])
    counts.update({f"{place}_rows": len(part) for place, part in parts.items()})
    data = PreparedData(
        train.reset_index(drop=True),
        validation.reset_index(drop=True),
        original.test,
        original.labels,
        original.card,
    )
    return RetrainData(
        data,
        frame(parts["holdout"]),
        counts,
        kept,
        frame(parts["train"]),
        frame(parts["validation"]),
    )


def weighted(assembled: RetrainData, weight: float, replay: int | None, seed: int) -> PreparedData:
    """The round's data with the feedback training rows used ``weight`` times (the whole part
    of it as repeats; the fraction as a seeded share of the rows once more) and, with
    ``replay``, only a seeded sample of that many original training rows beside them
    (rehearsal: enough to keep what the model knew, a fraction of the cost of the whole set).
    Validation and test are unchanged."""
    rng = np.random.default_rng(seed)
    original = assembled.original_train
    if replay is not None and replay < len(original):
        original = original.iloc[np.sort(rng.choice(len(original), replay, replace=False))]
    feedback = assembled.feedback_train
    whole, fraction = int(weight), weight - int(weight)
    extra = round(fraction * len(feedback))
    parts = [original, *([feedback] * whole)]
    if extra:
        parts.append(feedback.iloc[np.sort(rng.choice(len(feedback), extra, replace=False))])
    train = pd.concat(parts).reset_index(drop=True)
    data = assembled.data
    return PreparedData(train, data.validation, data.test, data.labels, data.card)


def check_usable(name: str, feedback: FeedbackExamples, labels: Sequence[str]) -> None:
    """A one-line DataError when ``feedback`` holds nothing to retrain ``name`` on."""
    if feedback.examples:
        return
    if not feedback.rows:
        raise DataError(
            f"no labelled feedback for '{name}'",
            "send feedback (POST /v1/feedback) or import labels with `lmforge feedback import`",
        )
    unknown = feedback.unknown_labels
    if unknown and sum(feedback.skipped.values()) == sum(
        n for k, n in feedback.skipped.items() if k.startswith("label:")
    ):
        raise DataError(
            f"the feedback for '{name}' names only labels the model lacks ({', '.join(unknown)})",
            f"label with one of: {', '.join(labels)}",
        )
    reasons = ", ".join(f"{n} {k}" for k, n in feedback.skipped.items())
    raise DataError(
        f"none of the {feedback.rows} feedback rows for '{name}' is a usable labelled text "
        f"({reasons})",
        "send {text, label} rows, or serve with prediction_log.include_text so that feedback on "
        "a prediction_id finds its text",
    )
