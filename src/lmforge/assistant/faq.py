"""FAQ entries for the assistant, from the built-in sources or a user's file, and the
retrieval tasks measured on them.

An entry is a question, its answer and a citation (where it comes from, e.g. "Debian FAQ §4.2").
Built in: ``debian_faq`` (English and Simplified Chinese, matched by section number) and
``chatterbot_support`` (English tech-support pairs). A file is CSV, JSON or JSONL with
``question`` and ``answer`` columns (``citation`` and ``lang`` optional).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import DataError


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str
    citation: str
    lang: str = "en"
    key: str = ""  # what matches an entry across languages (the Debian FAQ's section number)

    @property
    def passage(self) -> str:
        """What is indexed: the question and its answer together."""
        return f"{self.question}\n{self.answer}"


BUILTIN_FAQS = ("debian_faq", "chatterbot_support")


def load_faq(
    source: str | Path, question_column: str = "question", answer_column: str = "answer"
) -> list[FaqEntry]:
    """Entries of a built-in source or of a file; a one-line error if there are none."""
    if source == "debian_faq":
        entries = _debian_faq()
    elif source == "chatterbot_support":
        entries = _chatterbot_support()
    else:
        entries = _faq_file(Path(source), question_column, answer_column)
    if not entries:
        raise DataError(f"the FAQ {source} has no entries", "give a file with question/answer rows")
    return entries


def _debian_faq() -> list[FaqEntry]:
    from lmforge.data.sources import load_builtin

    frame = load_builtin("debian_faq")
    names = {"en": "Debian FAQ", "zh": "Debian FAQ (简体中文)"}
    return [
        FaqEntry(
            question=row.question,
            answer=row.answer,
            citation=f"{names[row.lang]} §{row.section}",
            lang=row.lang,
            key=row.section,
        )
        for row in frame.itertuples()
    ]


def _chatterbot_support() -> list[FaqEntry]:
    from lmforge.data.sources import load_builtin

    frame = load_builtin("chatterbot_support").drop_duplicates(["text", "answer"])
    return [
        FaqEntry(row.text, row.answer, f"chatterbot-corpus tech support #{i + 1}", "en", str(i))
        for i, row in enumerate(frame.itertuples())
    ]


def _faq_file(path: Path, question: str, answer: str) -> list[FaqEntry]:
    import pandas as pd

    if not path.is_file():
        raise DataError(
            f"FAQ source '{path}' is neither a built-in source nor a file",
            f"give {' or '.join(BUILTIN_FAQS)} or a CSV/JSON/JSONL/Parquet file",
        )
    try:
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
        elif path.suffix in (".json", ".jsonl"):
            frame = pd.read_json(path, lines=path.suffix == ".jsonl", dtype=False)
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"cannot read {path.name}", "use a .csv, .json, .jsonl or .parquet")
    except (ValueError, OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path} ({type(exc).__name__})", "fix the file") from exc
    missing = [c for c in (question, answer) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path.name} lacks the column(s) {', '.join(missing)} "
            f"(it has {', '.join(map(str, frame.columns)) or 'none'})",
            "name the question and answer columns (question_column/pair_column in a recipe)",
        )
    frame = frame.dropna(subset=[question, answer])
    entries = []
    for i, (_, row) in enumerate(frame.iterrows()):
        q, a = str(row[question]).strip(), str(row[answer]).strip()
        if q and a:
            entries.append(
                FaqEntry(
                    question=q,
                    answer=a,
                    citation=str(_optional(row, "citation") or f"{path.name} row {i + 1}"),
                    lang=str(_optional(row, "lang") or "en"),
                    key=str(_optional(row, "key") or i),
                )
            )
    return entries


def _optional(row: object, column: str) -> object:
    """A row's value in an optional column, None where the column is absent or empty."""
    value = getattr(row, "get", lambda _c: None)(column)
    return None if value is None or value != value else value  # NaN != NaN


def save_faq(entries: list[FaqEntry], path: Path) -> None:
    """The entries as JSONL that `load_faq` reads back unchanged (a registered assistant's
    snapshot of its FAQ)."""
    with path.open("w", encoding="utf-8") as f:
        for e in entries:
            row = {"question": e.question, "answer": e.answer, "citation": e.citation}
            f.write(json.dumps({**row, "lang": e.lang, "key": e.key}, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class RetrievalTask:
    """Queries, the documents they search, and the index of each query's one right document."""

    name: str
    queries: list[str]
    documents: list[str]
    relevant: list[int]
    query_lang: str
    document_lang: str


def debian_tasks(entries: list[FaqEntry]) -> list[RetrievalTask]:
    """Cross-lingual (a Chinese question → the English entry with its section number, and the
    reverse) and monolingual (a question → its own answer, among all answers) on the Debian FAQ."""
    by_lang = {lang: [e for e in entries if e.lang == lang] for lang in ("en", "zh")}
    tasks = []
    for src, dst in (("zh", "en"), ("en", "zh")):
        position = {e.key: i for i, e in enumerate(by_lang[dst])}
        pairs = [(e.question, position[e.key]) for e in by_lang[src] if e.key in position]
        tasks.append(
            RetrievalTask(
                f"debian-faq {src}→{dst} (question → entry)",
                [q for q, _ in pairs],
                [e.passage for e in by_lang[dst]],
                [i for _, i in pairs],
                src,
                dst,
            )
        )
    for lang in ("en", "zh"):
        group = by_lang[lang]
        tasks.append(
            RetrievalTask(
                f"debian-faq {lang} (question → answer)",
                [e.question for e in group],
                [e.answer for e in group],
                list(range(len(group))),
                lang,
                lang,
            )
        )
    return tasks


def support_task(entries: list[FaqEntry]) -> RetrievalTask:
    """A support question → its answer among all the answers."""
    return RetrievalTask(
        "chatterbot support (question → answer)",
        [e.question for e in entries],
        [e.answer for e in entries],
        list(range(len(entries))),
        "en",
        "en",
    )


OFF_TOPIC_CATEGORIES = (
    "food", "history", "sports", "movies", "literature", "humor", "gossip", "money", "emotion",
    "psychology", "politics",
)  # fmt: skip


OFF_TOPIC_FOLDERS = {"en": "english", "zh": "chinese"}  # chatterbot-corpus has small talk in these


def off_topic_questions(lang: str, fallback: str | None = None) -> list[str]:
    """Real questions an FAQ about software should refuse: chatterbot-corpus small talk
    (food, history, sports, ...), in English or Chinese (another language: ``fallback``'s)."""
    from lmforge.data.sources import chatterbot_category

    folder = OFF_TOPIC_FOLDERS.get(lang) or OFF_TOPIC_FOLDERS[fallback or lang]
    questions: list[str] = []
    for category in OFF_TOPIC_CATEGORIES:
        try:
            questions += chatterbot_category(folder, category)["text"].tolist()
        except DataError:
            continue  # not every category exists in every language
    return sorted(set(questions))
