"""Long-form input for batch synthesis: a book (.txt, .md, .epub) as chapters, or a dataset (.csv, .jsonl) as rows.

A book's chapters start at headings (Markdown `#` headings; in plain text, lines such as "Chapter 3" or
"PART ONE" that stand alone) or, when there are none, at runs of two or more blank lines. An EPUB's chapters
are the documents of its spine in reading order (the table of contents, pages outside the reading order
and pages with no text, such as a cover image, are left out). Paragraphs become one line each (the lines of
hard-wrapped text are joined), so that no sentence is cut at a line break.

A dataset's rows are `id,text[,voice,lang]`: a CSV with a header naming those columns (or without a header,
in that order), or JSON Lines with those keys. A row that can't be spoken as it stands (no text, unreadable
JSON) becomes a unit with its error, so the rest of the dataset still runs.
"""

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import MlxTtsError

BOOK_SUFFIXES = (".txt", ".md", ".markdown", ".epub")
DATASET_SUFFIXES = (".csv", ".jsonl")
SUFFIXES = BOOK_SUFFIXES + DATASET_SUFFIXES
DATASET_COLUMNS = ("id", "text", "voice", "lang")
TITLE_CHARS = 80

MD_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(?P<title>.+?)[ \t#]*$", re.M)
_NUMBER = (r"(?:\d+|[ivxlcdm]+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|"
           r"fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|first|second|third|"
           r"fourth|fifth|sixth|seventh|eighth|ninth|tenth|last)")
# A plain-text heading: "Chapter 3", "PART ONE: The Sea", "Prologue", "第三章 ..."; a line of its own after a
# blank line (see `split_chapters`), so "Part of the plan..." in a paragraph is not one.
TEXT_HEADING = re.compile(
    rf"^[ \t]*(?:(?:chapter|part|book)[ \t]+{_NUMBER}\b|(?:prologue|epilogue|preface|introduction|afterword)\b"
    r"|第[0-9〇一二三四五六七八九十百千]+[章回節节部])[^\n]{0,60}$",
    re.I | re.M,
)
BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
HTML_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "br", "tr", "section",
               "article", "header", "footer", "pre", "dd", "dt", "figcaption", "aside", "hr", "td", "th"}
HTML_HEADINGS = ("h1", "h2", "h3")


class InputError(MlxTtsError, ValueError):
    pass


@dataclass(frozen=True)
class Unit:
    """One work unit: a chapter or a dataset row. `voice`/`lang` None means the run's defaults."""

    id: str
    text: str
    voice: Optional[str] = None
    lang: Optional[str] = None
    title: Optional[str] = None
    error: Optional[str] = None  # set when the row can't be spoken as read; the unit is recorded as failed


@dataclass
class LongformInput:
    kind: str  # "book" or "dataset"
    title: str
    units: list


def read_input(path) -> LongformInput:
    """The units of a .txt/.md/.epub book or a .csv/.jsonl dataset."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"{path}: can't read {suffix or 'files without a suffix'}; give one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if suffix == ".epub":
        title, chapters = read_epub(path)
    elif suffix in BOOK_SUFFIXES:
        text = _read_text(path)
        title, chapters = path.stem, split_chapters(markdown_to_text(text) if suffix != ".txt" else text,
                                                    markdown=suffix != ".txt")
    else:
        units = read_csv(path) if suffix == ".csv" else read_jsonl(path)
        _check_unique(path, units)
        if not units:
            raise InputError(f"{path}: no rows")
        return LongformInput("dataset", path.stem, units)
    if not chapters:
        raise InputError(f"{path}: no text to speak")
    units = [Unit(f"ch{i:03d}", text, title=chapter_title) for i, (chapter_title, text) in enumerate(chapters, 1)]
    return LongformInput("book", title, units)


def file_stem(unit_id: str) -> str:
    """A file name for a unit id: the id itself when it is safe, else a cleaned id plus a hash of the original
    (so that two ids never share a file)."""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", unit_id):
        return unit_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", unit_id).strip("._")[:80]
    return f"{cleaned}-{hashlib.sha256(unit_id.encode()).hexdigest()[:10]}"


# ---- books ---------------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e}); convert it to UTF-8 first") from None


def _title_of(text: str) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"


def split_chapters(text: str, markdown: bool = False) -> list:
    """[(title, text)]: cut at headings when there are any, else at runs of blank lines. Each chapter keeps its
    heading as its first line, so the title is spoken; text before the first heading is a chapter of its own."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    heading = MD_HEADING if markdown else TEXT_HEADING
    starts = [m.start() for m in heading.finditer(text) if _after_blank_line(text, m.start())]
    if starts:
        bounds = [0] + starts if text[: starts[0]].strip() else starts
        pieces = [text[a:b] for a, b in zip(bounds, bounds[1:] + [len(text)])]
    else:
        pieces = BLANK_RUN.split(text)
    chapters = []
    for piece in pieces:
        # The heading is a paragraph of its own, spoken (and cut into chunks) apart from the text after it.
        piece = MD_HEADING.sub(lambda m: m["title"] + "\n", piece) if markdown else TEXT_HEADING.sub(
            lambda m: m[0] + "\n", piece, count=1)
        piece = _tidy(piece)
        if piece:
            chapters.append((_title_of(piece), piece))
    return chapters


def _after_blank_line(text: str, start: int) -> bool:
    before = text[:start]
    return not before.strip() or re.search(r"\n[ \t]*\n[ \t]*$", before) is not None


def _tidy(text: str) -> str:
    """One paragraph per line: paragraphs end at blank lines, and the lines of one paragraph (hard-wrapped
    text) are joined, so that a sentence is never cut at a line break."""
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n[ \t]*\n", text))
    return "\n".join(p for p in paragraphs if p)


def markdown_to_text(text: str) -> str:
    """What a reader would say of Markdown: no code blocks, images, link targets, emphasis marks, list
    bullets, quote marks or front matter. Headings keep their `#` marks so that chapters can be found."""
    text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # YAML front matter
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.S | re.M)  # fenced code
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text)  # images
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)  # links: their text
    text = re.sub(r"<[^>\n]+>", "", text)  # inline HTML
    text = re.sub(r"`([^`\n]+)`", r"\1", text)
    text = re.sub(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1", r"\2", text)
    text = re.sub(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])", r"\2", text)
    text = re.sub(r"^ {0,3}([-*_])( ?\1){2,}[ \t]*$", "", text, flags=re.M)  # horizontal rules
    text = re.sub(r"^[ \t]*>[ \t]?", "", text, flags=re.M)
    text = re.sub(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+", "\n", text, flags=re.M)  # each item a paragraph
    return text


def html_to_text(content: bytes) -> tuple:
    """(first heading or None, text with one paragraph per line) of an (X)HTML document."""
    import lxml.html

    root = lxml.html.document_fromstring(content)
    for element in root.xpath("//script|//style|//head"):
        element.drop_tree()
    heading = next((" ".join(h.text_content().split()) for h in root.iter(*HTML_HEADINGS)), None)
    for element in root.iter():
        # Line breaks in the markup's text are only wraps; blocks are what makes paragraphs.
        element.text, element.tail = (re.sub(r"\s+", " ", t) if t else t for t in (element.text, element.tail))
        if isinstance(element.tag, str) and element.tag.lower() in HTML_BLOCKS:
            element.text = "\n\n" + (element.text or "")
            element.tail = "\n\n" + (element.tail or "")
    return heading or None, _tidy(root.text_content())


def read_epub(path: Path) -> tuple:
    """(book title, [(chapter title, text)]) from the spine of an EPUB 2 or 3."""
    try:
        import ebooklib
        from ebooklib import epub
    except ImportError:
        raise InputError("reading EPUB needs ebooklib: pip install -r requirements.txt") from None
    try:
        book = epub.read_epub(str(path), options={"ignore_ncx": True})
    except Exception as e:  # ebooklib raises zipfile, lxml and its own errors for broken books
        raise InputError(f"{path}: not a readable EPUB ({type(e).__name__}: {e})") from None
    titles = book.get_metadata("DC", "title")
    chapters = []
    for idref, linear in (entry if isinstance(entry, tuple) else (entry, "yes") for entry in book.spine):
        item = book.get_item_with_id(idref)
        if (item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or isinstance(item, epub.EpubNav)
                or linear == "no"):
            continue  # a broken entry, the table of contents, or a page outside the reading order (notes)
        heading, text = html_to_text(item.get_content())
        if text:
            chapters.append((heading or _title_of(text), text))
    return (titles[0][0] if titles else path.stem), chapters


# ---- datasets ------------------------------------------------------------------------------------------


def _row_unit(where: str, row: dict) -> Unit:
    values = {k: (str(row.get(k) or "").strip() or None) for k in DATASET_COLUMNS}
    unit_id = values["id"] or where.replace(" ", "")
    error = None if values["text"] else f"{where}: the text is empty"
    return Unit(unit_id, values["text"] or "", values["voice"], values["lang"], error=error)


def read_csv(path: Path) -> list:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(reader.line_num, row) for reader in [csv.reader(f)] for row in reader]
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if not rows:
        return []
    header = [cell.strip().lower() for cell in rows[0][1]]
    if "text" in header:
        missing = {"id"} - set(header)
        if missing:
            raise InputError(f"{path}: the header has no 'id' column (columns: {', '.join(header)})")
        columns, rows = header, rows[1:]
    else:
        columns = list(DATASET_COLUMNS)
    units = []
    for line, row in rows:
        unit = _row_unit(f"row {line}", dict(zip(columns, row)))
        if len(row) > len(columns):  # most often a text with commas that isn't quoted
            unit = Unit(unit.id, unit.text, error=f"row {line}: {len(row)} fields, expected at most "
                        f"{len(columns)} ({', '.join(columns)}); put a text with commas in double quotes")
        units.append(unit)
    return units


def read_jsonl(path: Path) -> list:
    units = []
    for line, raw in enumerate(_read_text(path).splitlines(), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
            if not isinstance(row, dict):
                raise ValueError(f"expected an object with id and text, got {type(row).__name__}")
        except ValueError as e:
            units.append(Unit(f"line{line}", "", error=f"line {line}: not a JSON object ({e})"))
            continue
        units.append(_row_unit(f"line {line}", row))
    return units


def _check_unique(path: Path, units: list):
    seen, duplicates = set(), []
    for unit in units:
        if unit.id in seen:
            duplicates.append(unit.id)
        seen.add(unit.id)
    if duplicates:
        shown = ", ".join(repr(d) for d in sorted(set(duplicates))[:10])
        raise InputError(f"{path}: ids must be unique (each names an output file); repeated: {shown}")
