"""A pronunciation lexicon, `{"word": "phonemes"}`, applied before G2P: each listed word in the text is spoken
with the given phonemes, the text around it goes through the language's G2P as usual.

Words match whole (not inside a longer word) and regardless of case; a word of CJK script matches anywhere,
since those scripts put no spaces between words. Lexicons come as a dict, JSON text (`{"word": "phonemes"}`)
or CSV text (`word,phonemes` rows, an optional `word,phonemes` header).
"""

import csv
import io
import json
import re
from pathlib import Path
from typing import Callable

from .errors import MlxTtsError

MAX_ENTRIES = 1000
MAX_FILE_BYTES = 1 << 20


class LexiconError(MlxTtsError, ValueError):
    pass


def _spaced(char: str) -> bool:
    """Whether `char` belongs to a script that separates words with spaces (Latin, Cyrillic, ... not CJK)."""
    return char.isalnum() and ord(char) < 0x2E80


def parse_lexicon(data) -> dict:
    """A dict, JSON text or CSV text -> {word: phonemes}, checked (non-empty strings, at most MAX_ENTRIES)."""
    if isinstance(data, dict):
        entries = data
    elif isinstance(data, str):
        text = data.strip()
        if text.startswith("{"):
            try:
                entries = json.loads(text)
            except json.JSONDecodeError as e:
                raise LexiconError(f"the lexicon is not valid JSON: {e}") from None
            if not isinstance(entries, dict):
                raise LexiconError('a JSON lexicon must be an object: {"word": "phonemes", ...}')
        else:
            rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
            if rows and [cell.strip().lower() for cell in rows[0]] == ["word", "phonemes"]:
                rows = rows[1:]
            bad = next((i for i, row in enumerate(rows, 1) if len(row) != 2), None)
            if bad is not None:
                raise LexiconError(f"CSV lexicon row {bad} must have two columns, word,phonemes: {rows[bad - 1]}")
            entries = {word: phonemes for word, phonemes in rows}
    else:
        raise LexiconError(f"a lexicon is a dict, JSON or CSV text, got {type(data).__name__}")
    if len(entries) > MAX_ENTRIES:
        raise LexiconError(f"the lexicon has {len(entries)} entries; at most {MAX_ENTRIES} are taken")
    lexicon = {}
    for word, phonemes in entries.items():
        if not isinstance(word, str) or not isinstance(phonemes, str) or not word.strip() or not phonemes.strip():
            raise LexiconError(f"lexicon entry {word!r}: {phonemes!r}: word and phonemes must be non-empty text")
        lexicon[word.strip()] = phonemes.strip()
    return lexicon


def load_lexicon(path) -> dict:
    """A .json or .csv lexicon file -> {word: phonemes}."""
    path = Path(path)
    if not path.is_file():
        raise LexiconError(f"{path}: no such lexicon file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise LexiconError(f"{path}: a lexicon file may be at most {MAX_FILE_BYTES // 1024} KB")
    try:
        return parse_lexicon(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise LexiconError(f"{path}: a lexicon file must be UTF-8 text (JSON or CSV)") from None


class Lexicon:
    """Finds the lexicon's words in text and phonemizes text with them in place."""

    def __init__(self, entries: dict):
        self.entries = {word.casefold(): phonemes for word, phonemes in parse_lexicon(entries).items()}
        alternatives = []
        for word in sorted(self.entries, key=len, reverse=True):  # longest first: "New York" before "New"
            left = r"(?<!\w)" if _spaced(word[0]) else ""
            right = r"(?!\w)" if _spaced(word[-1]) else ""
            alternatives.append(left + re.escape(word) + right)
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None

    def __bool__(self):
        return bool(self.entries)

    def matches(self, text: str) -> list:
        """The lexicon's words as they occur in `text`, in order."""
        return [m.group(0) for m in self._pattern.finditer(text)] if self._pattern else []

    def phonemize(self, text: str, g2p: Callable[[str], str]) -> str:
        """Phonemes for `text`: the lexicon's words from the lexicon, each stretch between them from `g2p`.
        Pieces are joined with a space where the text has whitespace between them."""
        pieces, position = [], 0
        for m in (self._pattern.finditer(text) if self._pattern else ()):
            pieces.append((text[position:m.start()], None))
            pieces.append((m.group(0), self.entries[m.group(0).casefold()]))
            position = m.end()
        pieces.append((text[position:], None))
        out = ""
        for graphemes, phonemes in pieces:
            if phonemes is None:
                phonemes = g2p(graphemes.strip()).strip() if graphemes.strip() else ""
            if not phonemes:
                out += " " if graphemes and graphemes[-1].isspace() and out and not out.endswith(" ") else ""
                continue
            if out and not out.endswith(" ") and (graphemes[:1].isspace() or not out[-1].isalnum()):
                out += " "  # the text's space, or one after punctuation (as G2Ps write "a, b")
            out += phonemes
            if graphemes[-1:].isspace():
                out += " "
        return out.strip()
