"""The lexical analyzer BM25 indexes with: folded, lowercased text cut by jieba in search
mode with a domain user dictionary, minus stopwords, plus character bigrams of CJK runs.

The same analyzer (same user words, same bigram switch) must analyse documents at build
time and questions at query time, so the index persists its user words and settings and
`Index.load` rebuilds an identical `Analyzer`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import jieba

from corpus import fold
from corpus.models import Chunk, Document

# Function words and question words: frequent in questions ("……包括哪些区域？") but they
# carry no topic, so they only add noise to BM25 and to sentence overlap.
STOPWORDS = frozenset(
    """
    的 地 得 了 着 过 和 与 及 以及 或 或者 并 并且 而 而且 但 但是 等 等等 是 为 为了 在 于 对 对于
    把 被 将 从 向 到 由 以 之 其 其中 此 该 这 这个 这些 那 那个 那些 有 有关 个 也 都 就 还 又
    即 则 如 若 所 所有 各 各类 每 我 我们 你 你们 您 他 她 它 他们 它们 吗 呢 吧 啊 呀 么 嘛
    哪 哪些 哪个 哪里 什么 怎么 怎样 怎么样 如何 为什么 多少 几 是否 是不是 能否 可以 能 会 要
    请问 请 一下 一个 一些 方面 相关 关于 进行 一 二 三 the a an of and or to in on for is are
    """.split()
)

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD_CHAR = re.compile(r"[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_QUOTED_NAME = re.compile(r"《([^《》\n]{2,30})》|“([^“”\n]{2,16})”|「([^「」\n]{2,16})」")
# Heading numbering that is not part of the name: "一、", "（三）", "第二章", "1.", "(2)".
_HEADING_NUMBERING = re.compile(
    r"^\s*(?:第[一二三四五六七八九十百零〇\d]+[章节条部分篇]|[（(][一二三四五六七八九十\d]+[)）]"
    r"|[一二三四五六七八九十百]+[、.．]|\d+(?:[.．]\d+)*[、.．]?)\s*"
)
# Headings longer than a name are clauses ("优化国际经贸人才发展环境"): kept whole they
# would hide the 4-character words inside them from search-mode cutting.
_MIN_USER_WORD, _MAX_USER_WORD, _MAX_HEADING_WORD = 2, 12, 8
# Document kinds ending a title or a quoted document name: "虹桥国际开放枢纽建设总体方案"
# names the 虹桥国际开放枢纽, and questions use the short name.
_TITLE_SUFFIX = re.compile(
    r"(?:建设|发展|产业发展)?(?:总体|实施|行动|工作)?(?:方案|规划纲要|规划|纲要|意见|通知|办法|目录|措施|计划)$"
)
_TITLE_PREFIX = re.compile(r"^.*?关于(?:印发|发布并实施|发布|加快|进一步)?")
# A user word gets a frequency high enough that jieba keeps it whole, but it stays a normal
# word: cut_for_search still emits its dictionary sub-words (虹桥, 枢纽, ...).
_USER_WORD_FREQ = 50_000

jieba.setLogLevel(logging.WARNING)

_base_lock = threading.Lock()
_base_tokenizer: jieba.Tokenizer | None = None
_tokenizers_lock = threading.Lock()
# Each tokenizer holds a ~15 MB copy of the dictionary; a process rarely needs more than
# the index it serves and the one being rebuilt, so only the most recent few are kept.
_TOKENIZERS_KEPT = 4
_tokenizers: OrderedDict[tuple[str, ...], jieba.Tokenizer] = OrderedDict()


def _base() -> jieba.Tokenizer:
    """jieba's main dictionary, loaded once per process (about a second) and never mutated."""
    global _base_tokenizer
    with _base_lock:
        if _base_tokenizer is None:
            tokenizer = jieba.Tokenizer()
            tokenizer.initialize()
            _base_tokenizer = tokenizer
        return _base_tokenizer


def private_tokenizer(user_words: Sequence[str]) -> jieba.Tokenizer:
    """A jieba tokenizer with the main dictionary plus `user_words`, shared per word list.

    It copies the base dictionary instead of re-reading it, and never touches jieba's
    global tokenizer, so user words of one index do not leak into another. Cutting is
    read-only once built, so concurrent callers may share the returned tokenizer.
    """
    key = tuple(sorted(set(user_words)))
    with _tokenizers_lock:
        tokenizer = _tokenizers.get(key)
        if tokenizer is None:
            base = _base()
            tokenizer = jieba.Tokenizer()
            tokenizer.FREQ = dict(base.FREQ)
            tokenizer.total = base.total
            tokenizer.initialized = True
            for word in key:
                tokenizer.add_word(word, freq=_USER_WORD_FREQ)
            _tokenizers[key] = tokenizer
            while len(_tokenizers) > _TOKENIZERS_KEPT:
                _tokenizers.popitem(last=False)
        _tokenizers.move_to_end(key)
        return tokenizer


def normalize(text: str) -> str:
    """Full/half-width folding and lowercasing: what both documents and questions go through."""
    return fold(text).lower()


def _user_word(candidate: str, max_length: int = _MAX_USER_WORD) -> str | None:
    word = normalize(candidate).strip()
    if not (_MIN_USER_WORD <= len(word) <= max_length):
        return None
    # Only names made of CJK, letters and digits: punctuation would break jieba's dict format.
    if not re.fullmatch(r"[0-9a-z\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+", word):
        return None
    if not _CJK_RUN.search(word):
        return None
    return word


def _names(title: str) -> list[str]:
    """A document title or quoted name, and the short name inside it (kind and issuer
    stripped): 《虹桥国际开放枢纽建设总体方案》 -> 虹桥国际开放枢纽."""
    short = _TITLE_SUFFIX.sub("", _TITLE_PREFIX.sub("", title)).strip("《》“”")
    return [title, short] if short != title else [title]


def derive_user_words(documents: Iterable[Document], chunks: Iterable[Chunk]) -> list[str]:
    """Domain words from the corpus: short headings (numbering stripped), names quoted in
    《》, “” or 「」 and the short names inside document titles (虹桥国际开放枢纽), and each
    document's catalogue `keywords` that its text uses (abbreviations such as 进博会). Only
    the documents decide, so the words change only when the corpus or its catalogue does;
    sorted, so builds are reproducible."""
    names: set[str] = set()
    headings: set[str] = set()
    words: set[str] = set()
    for document in documents:
        names.add(document.title)
        text = normalize(document.text)
        words.update(
            word
            for keyword in document.keywords
            if (word := _user_word(keyword)) is not None and word in text
        )
        for section in document.sections:
            headings.update(section.path)
        for match in _QUOTED_NAME.finditer(document.text):
            names.add(next(group for group in match.groups() if group))
    for chunk in chunks:
        headings.update(chunk.section_path)
        names.add(chunk.title)
    for name in names:
        words.update(word for part in _names(name) if (word := _user_word(part)) is not None)
    for heading in headings:
        stripped = _HEADING_NUMBERING.sub("", heading)
        if (word := _user_word(stripped, _MAX_HEADING_WORD)) is not None:
            words.add(word)
    return sorted(words)


class Analyzer:
    """Turns text into BM25 terms. Thread-safe: it holds no mutable state after __init__."""

    def __init__(self, user_words: Sequence[str] = (), use_bigrams: bool = True) -> None:
        self.user_words = tuple(sorted(set(user_words)))
        self.use_bigrams = use_bigrams
        self._tokenizer = private_tokenizer(self.user_words)

    def analyze(self, text: str) -> list[str]:
        """jieba search-mode tokens (stopwords and punctuation dropped), then, if enabled,
        the character bigrams of each CJK run as a recall net for words jieba splits
        differently in the question and in the document."""
        normalized = normalize(text)
        terms = [
            token
            for token in self._tokenizer.cut_for_search(normalized, HMM=True)
            if token not in STOPWORDS and _WORD_CHAR.search(token)
        ]
        if self.use_bigrams:
            for run in _CJK_RUN.findall(normalized):
                terms.extend(
                    bigram
                    for bigram in (run[i : i + 2] for i in range(len(run) - 1))
                    if bigram not in STOPWORDS
                )
        return terms
