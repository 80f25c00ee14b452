"""Reading policy documents from disk into cleaned, sectioned `Document`s.

Readers turn a .txt / .md / .pdf / .docx file into raw text; the catalogue says which
document(s) a file holds and their metadata; `load_file` cleans and sections each part;
`load_corpus` does that for a whole folder and collects what failed instead of stopping.
Every error names the file, in Chinese first, because staff read it in the admin view.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corpus.cleaning import Cleaner, CleanedText, shows_markdown
from pydantic import ValidationError

from corpus.models import CatalogueEntry, Document, DocumentInfo, metadata_problem
from corpus.sections import SectionParser
from corpus.settings import CorpusSettings, Settings
from corpus.text import fold, slugify

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".txt", ".md", ".pdf", ".docx")
_TEXT_ENCODINGS = ("utf-8-sig", "gb18030")
_TITLE_CHARS = 80
# A .docx of a policy document has a few dozen parts; a zip of many thousands is not one.
_MAX_DOCX_PARTS = 5_000
DEFAULT_MAX_UNPACKED_BYTES: int = CorpusSettings.model_fields["max_unpacked_document_bytes"].default


class DocumentLoadError(ValueError):
    """A file that cannot be loaded. `str(error)` is a Chinese message naming the file."""

    def __init__(self, source_file: str, reason: str) -> None:
        self.source_file = source_file
        self.reason = reason
        super().__init__(f"无法读取文件 {source_file}：{reason}")


class DocumentTooLargeError(DocumentLoadError):
    """A file that would unpack to more than the uncompressed size limit (a decompression
    bomb, or simply too big to parse)."""


class CatalogueError(ValueError):
    """corpus/catalogue.json (or another catalogue) is unreadable or malformed."""


@dataclass(frozen=True)
class LoadError:
    """One file that could not be loaded."""

    source_file: str
    message: str  # Chinese first, names the file


@dataclass(frozen=True)
class CorpusLoad:
    documents: list[Document]
    errors: list[LoadError]


# --- readers: file -> raw text ------------------------------------------------------------------


def decode_text(data: bytes, source_file: str) -> str:
    """Text of a .txt / .md file: UTF-8 (with or without BOM), UTF-16 with BOM, or GB18030.

    :raises DocumentLoadError: for binary data or an encoding it cannot read.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise DocumentLoadError(source_file, "UTF-16 编码有误，无法解码") from None
    if b"\x00" in data[:8192]:
        raise DocumentLoadError(source_file, "不是文本文件（含二进制内容）")
    for encoding in _TEXT_ENCODINGS:
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise DocumentLoadError(source_file, "无法识别文字编码（支持 UTF-8、GB18030）")


def read_text_file(path: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> str:
    """Text files are not compressed: `max_document_bytes` bounds them already."""
    return decode_text(path.read_bytes(), path.name)


def _megabytes(size: int) -> str:
    return f"{size / 1024 / 1024:g} MB"


def read_pdf(path: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> str:
    """The text layer of a PDF, pages separated by form feeds (cleaning drops running
    headers and page numbers with their help). No stream is inflated beyond
    `max_unpacked_bytes` (pypdf's own decompression limits, set for this call), and a page
    whose content would be is refused.

    :raises DocumentTooLargeError: a stream would inflate beyond `max_unpacked_bytes`.
    :raises DocumentLoadError: for a corrupt or encrypted PDF, or one without text
        (a scan).
    """
    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import LimitReachedError

    limits = {
        name: max_unpacked_bytes
        for name in (
            "zlib_maximum_output_length", "lzw_maximum_output_length",
            "run_length_maximum_output_length", "brotli_maximum_output_length",
            "jbig2_maximum_output_length", "array_based_stream_maximum_output_length",
            "image_maximum_buffer_size",
        )
    }
    try:
        with apply_configuration(**limits):
            reader = PdfReader(path)
            if reader.is_encrypted and not reader.decrypt(""):
                raise DocumentLoadError(path.name, "PDF 已加密，无法读取")
            pages = []
            for page in reader.pages:
                # Inflated here so that a bomb is refused: extract_text would skip it quietly.
                contents = page.get_contents()
                if contents is not None:
                    contents.get_data()
                pages.append(page.extract_text() or "")
    except DocumentLoadError:
        raise
    except LimitReachedError:
        raise DocumentTooLargeError(
            path.name, f"PDF 解压后超过大小上限（{_megabytes(max_unpacked_bytes)}）"
        ) from None
    except Exception as error:  # pypdf raises many types on malformed files
        logger.info("pypdf failed on %s: %r", path, error)
        raise DocumentLoadError(path.name, "PDF 文件已损坏或格式无法解析") from None
    if not "".join(pages).strip():
        raise DocumentLoadError(path.name, "PDF 没有可提取的文字（可能是扫描件）")
    return "\f".join(pages)


def check_docx_size(path: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> None:
    """Refuses a .docx whose zip parts together would unpack to more than
    `max_unpacked_bytes`, from the sizes its central directory declares, before any part is
    inflated. zipfile never inflates a part beyond its declared size (it stops and fails the
    CRC check), so the declared sizes bound what python-docx can read.

    :raises DocumentTooLargeError: over the limit, or too many parts.
    :raises DocumentLoadError: not a zip file.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError):
        raise DocumentLoadError(path.name, "Word 文件已损坏或不是 .docx 格式") from None
    if len(parts) > _MAX_DOCX_PARTS:
        raise DocumentTooLargeError(path.name, f"Word 文件包含的部件过多（超过 {_MAX_DOCX_PARTS} 个）")
    if sum(part.file_size for part in parts) > max_unpacked_bytes:
        raise DocumentTooLargeError(
            path.name, f"Word 文件解压后超过大小上限（{_megabytes(max_unpacked_bytes)}）"
        )


def read_docx(path: Path, max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES) -> str:
    """Paragraphs and tables of a .docx in document order. Word heading styles become
    markdown heading marks (Title "#", Heading N "#" * (N + 1)) so sectioning sees them;
    table rows become tab-separated lines.

    :raises DocumentTooLargeError: it would unpack to more than `max_unpacked_bytes`.
    :raises DocumentLoadError: for a corrupt file (broken zip or XML) or one that is not
        .docx.
    """
    import docx
    from docx.opc.exceptions import PackageNotFoundError
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph
    from lxml.etree import LxmlError

    check_docx_size(path, max_unpacked_bytes)
    corrupt = DocumentLoadError(path.name, "Word 文件已损坏或不是 .docx 格式")
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError, LxmlError):
        raise corrupt from None
    lines = []
    try:
        for block in document.element.body.iterchildren():
            if block.tag == qn("w:p"):
                paragraph = Paragraph(block, document)
                style_name = paragraph.style.name if paragraph.style is not None else ""
                lines.append(_markdown_heading_mark(style_name) + paragraph.text)
            elif block.tag == qn("w:tbl"):
                for row in Table(block, document).rows:
                    cells, seen = [], set()
                    for cell in row.cells:  # merged cells repeat: keep each once
                        if id(cell._tc) not in seen:
                            seen.add(id(cell._tc))
                            cells.append(cell.text.replace("\n", " ").strip())
                    lines.append("\t".join(cells))
    except (KeyError, ValueError, AttributeError, LxmlError):
        # Parts that parse but do not fit the schema (a style id or a body missing).
        raise corrupt from None
    return "\n".join(lines)


def _markdown_heading_mark(style_name: str) -> str:
    if style_name in ("Title", "标题"):
        return "# "
    match = re.fullmatch(r"(?:Heading|标题)\s*(\d)", style_name)
    return "#" * min(int(match.group(1)) + 1, 6) + " " if match else ""


# Each reader takes the file and the uncompressed size limit.
READERS: dict[str, Callable[[Path, int], str]] = {
    ".txt": read_text_file,
    ".md": read_text_file,
    ".pdf": read_pdf,
    ".docx": read_docx,
}
# Whether a format's text is markdown, whose `**` emphasis marks cleaning drops: a .md file
# always; text from a PDF page or a Word paragraph never (a `**` there was printed or typed,
# and the "#" marks of Word headings are read_docx's own); a .txt file when its text shows
# markdown (`corpus.cleaning.shows_markdown`), as the seed documents, converted from web
# pages, do.
MARKDOWN_SOURCES: dict[str, bool | None] = {".txt": None, ".md": True, ".pdf": False, ".docx": False}


# --- the catalogue --------------------------------------------------------------------------------


class Catalogue:
    """Which documents each file holds, with their metadata, keyed by file name."""

    def __init__(self, files: Mapping[str, tuple[CatalogueEntry, ...]] | None = None) -> None:
        self.files = dict(files or {})

    @classmethod
    def from_path(cls, path: Path) -> "Catalogue":
        """The catalogue at `path`; an empty one when there is no file.

        :raises CatalogueError: when the file is not valid JSON or not a valid catalogue.
        """
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CatalogueError(f"文档目录文件 {path.name} 无法读取：{error}") from None
        return cls.from_dict(data, path.name)

    @classmethod
    def from_dict(cls, data: Any, name: str = "catalogue") -> "Catalogue":
        """:raises CatalogueError: naming the entry that is wrong."""
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            raise CatalogueError(f"文档目录 {name} 格式有误：需要一个含 \"files\" 对象的 JSON 对象")
        files: dict[str, tuple[CatalogueEntry, ...]] = {}
        seen_ids: dict[str, str] = {}
        for file_name, entry in data["files"].items():
            if not isinstance(entry, dict):
                raise CatalogueError(f"文档目录 {name} 中 {file_name} 的条目不是对象")
            raw_parts = entry.get("parts", [entry])
            if not isinstance(raw_parts, list) or not raw_parts:
                raise CatalogueError(f"文档目录 {name} 中 {file_name} 的 parts 应为非空列表")
            specs = tuple(cls._spec(part, f"{name}: {file_name}") for part in raw_parts)
            for position, spec in enumerate(specs):
                if (spec.starts_at_line is None) != (position == 0):
                    raise CatalogueError(
                        f"文档目录 {name} 中 {file_name}：只有第二部分起需要 starts_at_line"
                    )
                if spec.doc_id in seen_ids:
                    raise CatalogueError(
                        f"文档目录 {name} 中文档编号 {spec.doc_id} 重复（{seen_ids[spec.doc_id]}、{file_name}）"
                    )
                seen_ids[spec.doc_id] = file_name
            files[file_name] = specs
        return cls(files)

    @staticmethod
    def _spec(part: Any, where: str) -> CatalogueEntry:
        if not isinstance(part, dict):
            raise CatalogueError(f"{where}：文档条目不是对象")
        try:
            return CatalogueEntry.model_validate(part)
        except ValidationError as error:
            raise CatalogueError(f"{where}：{metadata_problem(error)}") from None

    def specs_for(self, file_name: str) -> tuple[CatalogueEntry, ...]:
        return self.files.get(file_name, ())


# --- loading ------------------------------------------------------------------------------------


def load_file(
    path: Path,
    catalogue: Catalogue | Mapping | None = None,
    *,
    max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_BYTES,
) -> list[Document]:
    """The document(s) in one file, cleaned and sectioned.

    `catalogue` is a `Catalogue` or the parsed catalogue JSON. A file it lists gets the
    listed ids and metadata (and is split into its parts); any other file becomes one
    document whose id is a slug of the file name and whose title is its first line.
    `max_unpacked_bytes` bounds what a .docx or a PDF stream may inflate to.

    :raises DocumentTooLargeError: a .docx or PDF that would inflate beyond the limit.
    :raises DocumentLoadError: for an unsupported, missing, empty, unreadable or corrupt
        file, a scanned PDF, or a catalogue split line that is not in the file.
    :raises CatalogueError: when `catalogue` is a malformed dict.
    """
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    reader = READERS.get(suffix)
    if reader is None:
        kinds = "、".join(SUPPORTED_SUFFIXES)
        raise DocumentLoadError(name, f"不支持的文件类型“{suffix or '无扩展名'}”（支持 {kinds}）")
    try:
        if path.stat().st_size == 0:
            raise DocumentLoadError(name, "文件为空")
        raw = reader(path, max_unpacked_bytes)
    except FileNotFoundError:
        raise DocumentLoadError(name, "文件不存在") from None
    except OSError as error:
        raise DocumentLoadError(name, f"读取失败（{error.strerror or error}）") from None
    if isinstance(catalogue, Mapping):
        catalogue = Catalogue.from_dict(catalogue)
    specs = catalogue.specs_for(name) if catalogue is not None else ()
    markdown = MARKDOWN_SOURCES[suffix]
    if markdown is None:  # decided for the whole file: its parts are one text
        markdown = shows_markdown(raw)
    return [
        _document(part_text, spec, name, path.stem, markdown=markdown)
        for spec, part_text in _split_parts(raw, specs, name)
    ]


def _split_parts(
    raw: str, specs: tuple[CatalogueEntry, ...], name: str
) -> list[tuple[CatalogueEntry | None, str]]:
    """The file text cut where each later part's `starts_at_line` is."""
    if len(specs) <= 1:
        return [(specs[0] if specs else None, raw)]
    lines = raw.splitlines(keepends=True)
    starts = [0]
    for spec in specs[1:]:
        wanted = _line_key(spec.starts_at_line or "")
        found = next(
            (i for i in range(starts[-1] + 1, len(lines)) if _line_key(lines[i]) == wanted), None
        )
        if found is None:
            raise DocumentLoadError(
                name, f"文档目录中 {spec.doc_id} 的起始行“{spec.starts_at_line}”不在文件中，无法拆分"
            )
        starts.append(found)
    ends = starts[1:] + [len(lines)]
    return [(spec, "".join(lines[a:b])) for spec, a, b in zip(specs, starts, ends)]


def _line_key(line: str) -> str:
    return re.sub(r"\s+", "", fold(line))


def _document(
    raw: str, spec: CatalogueEntry | None, source_file: str, stem: str, *, markdown: bool
) -> Document:
    cleaned = Cleaner().clean(raw, markdown=markdown)
    if not cleaned.text.strip():
        part = f"（{spec.doc_id}）" if spec else ""
        raise DocumentLoadError(source_file, f"没有可用的正文{part}")
    entry = spec or DocumentInfo(doc_id=slugify(stem), title=_first_line_title(cleaned))
    return Document(
        **entry.model_dump(exclude={"starts_at_line", "note"}),
        source_file=source_file,
        text=cleaned.text,
        sections=SectionParser().parse(cleaned),
        content_sha256=hashlib.sha256(cleaned.text.encode("utf-8")).hexdigest(),
    )


def _first_line_title(cleaned: CleanedText) -> str:
    first = cleaned.paragraph_text(cleaned.paragraphs[0]).strip()
    return first if len(first) <= _TITLE_CHARS else first[:_TITLE_CHARS] + "…"


def load_corpus(settings: Settings) -> CorpusLoad:
    """Every file in `settings.corpus.corpus_dir` (hidden files and folders skipped), in file-name
    order, with metadata from `settings.corpus.catalogue_path`. A file that fails becomes a
    `LoadError` and the others still load; so does a document whose id is already taken.
    """
    errors: list[LoadError] = []
    try:
        catalogue = Catalogue.from_path(settings.corpus.catalogue_path)
    except CatalogueError as error:
        errors.append(LoadError(settings.corpus.catalogue_path.name, f"{error}；已按未登记文件处理"))
        catalogue = Catalogue()
    corpus_dir = settings.corpus.corpus_dir
    if not corpus_dir.is_dir():
        return CorpusLoad([], [LoadError(str(corpus_dir), f"文档目录不存在：{corpus_dir}")])

    documents: list[Document] = []
    owner_of: dict[str, str] = {}
    for path in sorted(corpus_dir.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            if path.stat().st_size > settings.corpus.max_document_bytes:
                limit_mb = settings.corpus.max_document_bytes / 1024 / 1024
                raise DocumentLoadError(path.name, f"文件超过大小上限（{limit_mb:g} MB）")
            loaded = load_file(
                path, catalogue, max_unpacked_bytes=settings.corpus.max_unpacked_document_bytes
            )
        except DocumentLoadError as error:
            errors.append(LoadError(path.name, str(error)))
            continue
        except Exception as error:  # a bug on one odd file must not lose all the others
            logger.exception("unexpected error loading %s", path)
            errors.append(
                LoadError(path.name, f"无法读取文件 {path.name}：处理时出错（{type(error).__name__}）")
            )
            continue
        for document in loaded:
            if document.doc_id in owner_of:
                errors.append(LoadError(
                    path.name,
                    f"无法读取文件 {path.name}：文档编号 {document.doc_id} 已被 "
                    f"{owner_of[document.doc_id]} 使用，已跳过",
                ))
                continue
            owner_of[document.doc_id] = path.name
            documents.append(document)
    return CorpusLoad(documents, errors)
