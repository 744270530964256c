"""The Debian FAQ built-in source: its HTML chapters (DocBook XSL output) parsed into rows.

Kept apart from :mod:`lmforge.data.sources` because it is the one source with a parser of its
own: the other sources are CSV, text or YAML files read in a few lines each.
"""

from __future__ import annotations

import functools
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

from lmforge.errors import DataError

__all__ = ["read_debian_faq"]

_APT_INSTALL = "apt-get install debian-faq debian-faq-zh-cn"


def _faq_files(root: Path) -> tuple[list[Path], list[Path]]:
    """The English and Chinese HTML chapters under ``root``.

    The plain ``*.html`` names are symlinks to the ``*.en.html`` files, so only the latter are
    read. The ``debian-faq*.txt.gz`` renderings are not used: the HTML marks sections,
    footnotes and navigation explicitly.
    """
    en = sorted(p for p in root.glob("*.en.html") if p.is_file())
    zh = sorted(p for p in (root / "zh-cn").glob("*.zh-cn.html") if p.is_file())
    missing = [pkg for pkg, files in (("debian-faq", en), ("debian-faq-zh-cn", zh)) if not files]
    if missing:
        raise DataError(
            f"the Debian FAQ HTML files are missing under {root} "
            f"({'packages' if len(missing) > 1 else 'package'} {' and '.join(missing)} "
            "not installed)",
            f"run: {_APT_INSTALL}",
        )
    return en, zh


@functools.lru_cache(maxsize=4)
def read_debian_faq(root: Path) -> pd.DataFrame:
    """One row per numbered section of the English and Chinese chapters under ``root``, cached
    per location (callers copy): ``section``, ``lang``, ``question``, ``answer``, ``text``."""
    en_files, zh_files = _faq_files(root)
    rows: list[tuple[tuple[int, ...], str, str, str, str]] = []
    for lang, files in (("en", en_files), ("zh", zh_files)):
        for path in files:
            for number, question, answer in _parse_faq_chapter(path.read_text(encoding="utf-8")):
                key = tuple(int(part) for part in number.split("."))
                rows.append((key, number, lang, question, answer))
    rows.sort(key=lambda row: (row[2], row[0]))
    return pd.DataFrame(
        {
            "section": [row[1] for row in rows],
            "lang": [row[2] for row in rows],
            "question": [row[3] for row in rows],
            "answer": [row[4] for row in rows],
            "text": [row[3] for row in rows],
        }
    )


# --- the Debian FAQ HTML (DocBook XSL output) ---------------------------------------------

_SECTION_TITLE = re.compile(r"^(\d+(?:\.\d+)+)\.?\s*(.*)$", re.DOTALL)
_WHITESPACE = re.compile(r"\s+")
_SKIPPED_DIVS = frozenset({"navheader", "navfooter", "toc", "footnotes"})
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "br", "hr", "pre", "li", "ul", "ol", "dl", "dt", "dd", "table", "tr", "td",
        "th", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6",
    }
)  # fmt: skip


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


class _FaqChapterParser(HTMLParser):
    """Split one chapter page into its ``<h2>`` sections, and collect its footnotes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # (title parts, body parts, ids of the footnotes it references) per section
        self.sections: list[tuple[list[str], list[str], list[str]]] = []
        self.footnotes: dict[str, list[str]] = {}
        self._divs: list[str] = []  # role of each open <div>: "skip", "note" or ""
        self._skipping = 0
        self._in_title = False
        self._in_marker = False
        self._note: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        classes = set((attr.get("class") or "").split())
        if tag == "div":
            role = ""
            if classes & _SKIPPED_DIVS:
                role = "skip"
            elif "footnote" in classes and self._skipping and (attr.get("id") or ""):
                role = "note"  # <div id="ftn.X" class="footnote"> inside the footnotes block
                self._note = self.footnotes.setdefault(attr.get("id") or "", [])
            self._divs.append(role)
            if role == "skip":
                self._skipping += 1
        if tag == "h2" and "title" in classes and not self._skipping:
            self.sections.append(([], [], []))
            self._in_title = True
            return
        if tag == "a" and "footnote" in classes:  # the "[5]" marker pointing at a footnote
            self._in_marker = True
            if self.sections and not self._skipping:
                self.sections[-1][2].append((attr.get("href") or "").lstrip("#"))
            return
        if tag == "a" and "para" in classes and self._note is not None:
            self._in_marker = True  # the "[5]" back-link opening a footnote's text
            return
        if tag in _BLOCK_TAGS:
            self._emit(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:  # <br />, <hr />; never opens a <div>
            self._emit(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._divs:
            role = self._divs.pop()
            if role == "skip":
                self._skipping -= 1
            elif role == "note":
                self._note = None
        if tag == "h2" and self._in_title:
            self._in_title = False
            return
        if tag == "a" and self._in_marker:
            self._in_marker = False
            return
        if tag in _BLOCK_TAGS:
            self._emit(" ")

    def handle_data(self, data: str) -> None:
        self._emit(data)

    def _emit(self, text: str) -> None:
        if self._in_marker:
            return
        if self._note is not None:
            self._note.append(text)
        elif self._skipping or not self.sections:
            return
        elif self._in_title:
            self.sections[-1][0].append(text)
        else:
            self.sections[-1][1].append(text)


def _parse_faq_chapter(html: str) -> list[tuple[str, str, str]]:
    """``(section number, question, answer)`` for each numbered ``<h2>`` section of a page."""
    parser = _FaqChapterParser()
    parser.feed(html)
    parser.close()
    entries: list[tuple[str, str, str]] = []
    for title_parts, body_parts, note_ids in parser.sections:
        match = _SECTION_TITLE.match(_collapse("".join(title_parts)))
        if match is None:
            continue  # an unnumbered heading is not a FAQ entry
        body = "".join(body_parts)
        notes = ["".join(parser.footnotes.get(note_id, [])) for note_id in note_ids]
        answer = _collapse(" ".join([body, *notes]))
        entries.append((match.group(1), _collapse(match.group(2)), answer))
    return entries
