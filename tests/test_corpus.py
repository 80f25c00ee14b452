"""The corpus layer on the real seed documents, and the loaders on files made here.

Section paths are checked by quoting a passage of the seed text and asking which section
(and which chunk) holds it, so each case reads like the document it tests.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from corpus import (
    Catalogue,
    CatalogueError,
    Chunker,
    DocumentLoadError,
    chunk_documents,
    fold,
    load_corpus,
    load_file,
)
from corpus.chunking import table_header
from corpus.models import Document
from corpus.settings import PROJECT_ROOT, Settings

SEED_IDS = ["000", "001", "002", "003-0", "003-1", "003-2", "004"]


@pytest.fixture(scope="module")
def documents(seed_corpus) -> dict[str, Document]:
    return {document.doc_id: document for document in seed_corpus.documents}


@pytest.fixture(scope="module")
def chunks(seed_corpus, seed_settings):
    return chunk_documents(seed_corpus.documents, seed_settings)


def path_of(document: Document, quote: str) -> tuple[str, ...]:
    """Path of the innermost section holding the first occurrence of `quote`."""
    position = document.text.index(quote)
    holding = [s for s in document.sections if s.char_span[0] <= position < s.char_span[1]]
    return max(holding, key=lambda s: s.level).path if holding else ()


# --- loading the seeds ---------------------------------------------------------------------------


def test_every_seed_file_loads_without_errors(seed_corpus):
    assert seed_corpus.errors == []
    assert [d.doc_id for d in seed_corpus.documents] == SEED_IDS
    seed_files = sorted(p.name for p in (PROJECT_ROOT / "corpus" / "documents").iterdir() if not p.name.startswith("."))
    assert sorted({d.source_file for d in seed_corpus.documents}) == seed_files
    for document in seed_corpus.documents:
        assert document.text.strip() and document.title
        assert len(document.content_sha256) == 64


def test_file_003_holds_the_notice_and_two_documents_with_their_own_titles(documents):
    notice, plan, catalogue = documents["003-0"], documents["003-1"], documents["003-2"]
    assert notice.source_file == plan.source_file == catalogue.source_file
    assert notice.title.startswith("关于发布并实施《虹桥国际中央商务区产业发展规划》")
    assert plan.title == "虹桥国际中央商务区产业发展规划"
    assert catalogue.title == "虹桥国际中央商务区重点产业目录"
    assert "沪虹商管〔2022〕76号" in notice.text and "特此通知。" in notice.text
    assert "一、发展基础" not in notice.text
    assert plan.text.startswith("虹桥国际中央商务区 产业发展规划\n2022 年 8 月")
    assert catalogue.text.startswith("虹桥国际中央商务区 重点产业目录\n2022 年 8 月")
    assert "五、发展举措" in plan.text and "二、产业发展目录" not in plan.text
    assert "细分领域\t发展方向\t发展重点" in catalogue.text and "一、发展基础" not in catalogue.text


def test_catalogue_metadata_reaches_the_documents(documents):
    assert documents["002"].doc_number == "沪府发〔2021〕2号"
    assert documents["002"].issuer == "上海市人民政府"
    assert documents["002"].status == "excerpt"
    assert documents["003-0"].date == "2022-09-14"
    assert documents["003-0"].kind == "notice"
    assert documents["003-2"].kind == "catalogue"
    assert documents["004"].kind == "article"
    assert documents["000"].kind == "research report"
    assert documents["001"].issuer is None  # the text does not say


# --- sections --------------------------------------------------------------------------------------

SECTION_CASES = [
    ("000", "【摘 要】：虹桥与外高桥", ()),
    (
        "000",
        "经初步核算，2020 年虹桥商务区进出口总额",
        (
            "二、虹桥国际贸易中心新平台建设面临的瓶颈和制约因素",
            "(一)从双循环关键链接点的要求看，虹桥国际贸易中心新平台在贸易产业链上的动力核作用须进一步增强",
            "1.国际贸易中心新平台的能级有待进一步提升",
        ),
    ),
    (
        "000",
        "允许 B类外国专家人才超过退休年龄后申请工作许可证延期",
        (
            "三、加快打造虹桥国际贸易中心新平台的对策建议",
            "(五)着力提升营商环境，优化交通等基础设施配套",
            "1.着力提升虹桥整体营商环境",
        ),
    ),
    ("001", "虹桥国际开放枢纽包括上海虹桥商务区及所在的长宁区", ("一、建设背景",)),
    ("001", "以习近平新时代中国特色社会主义思想为指导，全面贯彻", ("二、总体要求", "（一）指导思想")),
    ("001", "面积为 151平方公里", ("二、总体要求", "（三）功能布局")),
    (
        "001",
        "允许外商投资建设剧院、电影院、音乐厅等文化场馆",
        ("三、建设高标准的国际化中央商务区", "（八）提升公共服务国际化水平"),
    ),
    ("001", "督促落实各项重大任务", ("七、保障措施", "（二十三）加强统筹协调")),
    ("002", "（因原文篇幅过长，故节选会展相关内容展出）", ()),
    (
        "002",
        "集装箱吞吐量达到4350万标箱",
        (
            "一 “十四五”时期提升上海国际贸易中心能级的基础",
            "（一）“十三五”时期主要进展",
            "1. 贸易集聚功能持续提升，优进优出外贸发展格局基本形成",
        ),
    ),
    (
        "002",
        "电子商务交易额达到 4.2 万亿元左右",
        ("二 “十四五”时期上海国际贸易中心建设指导思想", "(二) 发展目标"),
    ),
    (
        "002",
        "做精做优做强“6天+365天”常年展示交易服务平台",
        (
            "三 “十四五”时期上海国际贸易中心建设主要任务",
            "（四）提升进博会全球影响力和竞争力，全面建成国际会展之都",
            "14. 持续放大进博会溢出带动效应",
        ),
    ),
    ("002", "发挥市推进上海国际贸易中心建设领导小组作用", ("四 保障措施", "26. 强化规划实施组织保障")),
    ("003-0", "现予以发布，请各单位结合实际贯彻执行。", ()),
    (
        "003-1",
        "充分释放枢纽区位与开放优势",
        ("三、产业发展重点", "（一）提升国际化中央商务核心功能产业", "1. 高能级总部经济"),
    ),
    ("003-1", "南虹桥片区。以国际化公共服务功能", ("四、产业发展布局", "（二）四区：产业功能片区")),
    ("003-1", "统筹稳商与招商工作", ("五、发展举措", "(一) 创新产业服务体系")),
    ("003-1", "支持银行等金融机构放大自由贸易账户功能", ("五、发展举措", "（六）推动政策制度创新")),
    ("003-2", "在线旅游平台 OTA", ("二、产业发展目录", "(二) 高流量贸易经济")),
    ("003-2", "二氧化碳的捕集、封存、利用和转化", ("二、产业发展目录", "(七) 低碳新能源")),
    ("003-2", "加快国际经贸新规则开放对接", ("一、产业总体定位", "（一）总体思路")),
    (
        "004",
        "2019年上海服务贸易进出口总额达1843.8亿美元",
        (
            "一、上海打造开放枢纽门户的成效与不足",
            "(二)上海对外开放枢纽门户建设存在的不足",
            "1. 服务贸易对外开放程度不足，新兴服务贸易占比有待提升",
            "(1) 服务贸易规模相对不足",
        ),
    ),
    (
        "004",
        "北京在经济金融领域有亚洲基础设施投资银行",
        (
            "一、上海打造开放枢纽门户的成效与不足",
            "(二)上海对外开放枢纽门户建设存在的不足",
            "2. 缺乏有影响力的国际组织",
        ),
    ),
    ("004", "轩会永, 苏红键", ("参考文献",)),
]


@pytest.mark.parametrize(("doc_id", "quote", "expected"), SECTION_CASES)
def test_known_passages_sit_in_the_right_section(documents, chunks, doc_id, quote, expected):
    document = documents[doc_id]
    assert path_of(document, quote) == expected
    holding = [c for c in chunks if c.doc_id == doc_id and quote in c.text]
    assert holding, f"no chunk of {doc_id} quotes {quote!r}"
    assert {c.section_path for c in holding} == {expected}


def test_section_titles_are_the_heading_text_where_the_section_starts(documents):
    for document in documents.values():
        for section in document.sections:
            assert document.text.startswith(section.title, section.char_span[0]), section.path
            assert section.char_span[0] < section.char_span[1] <= len(document.text)


def test_subsections_lie_inside_their_parent(documents):
    for document in documents.values():
        by_path = {section.path: section for section in document.sections}
        for section in document.sections:
            if len(section.path) > 1:
                parent = by_path[section.path[:-1]]
                assert parent.char_span[0] <= section.char_span[0]
                assert section.char_span[1] <= parent.char_span[1]


def test_numbered_lines_in_running_text_are_not_headings(documents):
    # "2020年，上海新增外商..." opens a paragraph of 004; "2.0版" sits mid-sentence in 000
    titles = {title for d in documents.values() for s in d.sections for title in s.path}
    assert not any(re.match(r"\d{4}年", title) for title in titles)
    assert not any("2.0版" in title for title in titles)
    assert path_of(documents["004"], "2020年，上海新增外商投资企业5751家") == (
        "一、上海打造开放枢纽门户的成效与不足",
        "(一)上海对外开放枢纽门户城市建设的成效",
    )


# --- cleaning --------------------------------------------------------------------------------------


def test_hard_line_breaks_are_joined(documents):
    # 001 breaks every line at a fixed width, with blank lines between
    assert (
        "为贯彻落实《长江三角洲区域一体化发展规划纲要》，高水平规划建设虹桥国际开放枢纽，"
        "促进长三角地区深化改革、协同开放，制定本方案。"
    ) in documents["001"].text
    # ... including lines that begin with a stray space
    assert "形成全球高端资源要素配置新高地；有利于推动长三角一体化发展" in documents["001"].text
    assert "并初步集聚信达生物等 10 余家生物医药研发总部。" in documents["000"].text
    # 002 and 003 break at page ends, mid-word
    assert "高技术制造业吸引外资占制造业比重由 25%提升至 31.2%" in documents["002"].text
    assert "走向国际的新能源汽车。集聚国际传统汽车企业" in documents["003-1"].text
    for document in documents.values():
        assert "\n\n" not in document.text
        assert all(line == line.strip() for line in document.text.split("\n"))


def test_footnote_no_longer_splits_the_paragraph_it_fell_into(documents):
    text = documents["004"].text
    assert "大飞机、量子卫星、蛟龙号深潜器等重大科技成果持续问世" in text
    assert "¹" not in text
    # the footnote itself is kept, next to the author it annotates
    assert text.index("熊励\n作者简介：熊励，工学博士") < text.index("【摘要】")


def test_tables_of_contents_print_notes_and_markup_are_gone(documents):
    for document in documents.values():
        for line in document.text.split("\n"):
            assert not re.search(r"\t\d{1,3}$", line), (document.doc_id, line)
            assert line not in ("目录", "目 录")
            assert not line.startswith(("抄送", "#")), (document.doc_id, line)
            assert "印发" not in line or "印发《" in line, (document.doc_id, line)
            assert not re.fullmatch(r"[-\t]+", line)
        assert "**" not in document.text
        assert "共印" not in document.text
    assert "一、发展基础\t3" not in documents["003-1"].text
    # the notice keeps its signature and date; only the print notes go
    assert documents["003-0"].text.endswith("上海虹桥国际中央商务区管理委员会\n2022年9月14日")


def test_shown_text_keeps_original_full_width_characters(documents):
    assert "（一）指导思想" in documents["001"].text
    assert "(一) 创新产业服务体系" in documents["003-1"].text  # half-width as in the source


def test_fold_keeps_length_and_folds_width_forms(documents):
    assert fold("（一）ＲＣＥＰ　１．５") == "(一)RCEP 1.5"
    assert fold("……“十四五”〔2022〕") == "……“十四五”〔2022〕"
    for document in documents.values():
        assert len(fold(document.text)) == len(document.text)
    sample = "（二）发展目标。到２０２５年"
    assert [len(fold(ch)) for ch in sample] == [1] * len(sample)


# --- chunks ----------------------------------------------------------------------------------------


def test_chunk_spans_map_back_to_the_exact_cleaned_text(documents, chunks):
    for chunk in chunks:
        document = documents[chunk.doc_id]
        start, end = chunk.char_span
        assert document.text[start:end] == chunk.text
        assert chunk.title == document.title and chunk.source_file == document.source_file
        assert chunk.sentences and chunk.sentences[0][0] == 0
        assert chunk.sentences[-1][1] == len(chunk.text)
        for left, right in chunk.sentences:
            sentence = chunk.text[left:right]
            assert sentence and sentence == sentence.strip()


def test_no_chunk_crosses_a_section_boundary(documents, chunks):
    for chunk in chunks:
        document = documents[chunk.doc_id]
        start, end = chunk.char_span
        assert not any(start < s.char_span[0] < end for s in document.sections), chunk.chunk_id
        if chunk.section_path:
            section = next(s for s in document.sections if s.path == chunk.section_path)
            assert section.char_span[0] <= start and end <= section.char_span[1]


def test_a_heading_opens_its_sections_first_chunk(documents, chunks):
    first_chunk = {}
    for chunk in chunks:
        first_chunk.setdefault((chunk.doc_id, chunk.section_path), chunk)
    assert first_chunk[("001", ("二、总体要求", "（一）指导思想"))].text.startswith(
        "（一）指导思想。以习近平"
    )
    for (doc_id, path), chunk in first_chunk.items():
        if path:
            section = next(s for s in documents[doc_id].sections if s.path == path)
            assert chunk.char_span[0] == section.char_span[0], path


def test_chunks_cover_all_text_except_bare_parent_headings(documents, chunks):
    """Nothing is lost: every character is in a chunk, but for headings of sections whose
    text is all in their subsections (those titles lead every subsection's path)."""
    for document in documents.values():
        covered = [False] * len(document.text)
        for chunk in (c for c in chunks if c.doc_id == document.doc_id):
            covered[chunk.char_span[0] : chunk.char_span[1]] = [True] * len(chunk.text)
        missing = {
            document.text[i : i + 1] for i, seen in enumerate(covered) if not seen
        } - {"\n", " ", "\t"}
        if not missing:
            continue
        gaps = re.findall(r"[^\n]+", "".join(
            ch if not seen else "\n" for ch, seen in zip(document.text, covered)
        ))
        titles = {title for section in document.sections for title in section.path}
        assert all(gap.strip() in titles for gap in gaps if gap.strip()), gaps


def test_chunks_respect_size_and_overlap(seed_corpus):
    settings = Settings(chunk_size=120, chunk_overlap=40)
    small = chunk_documents(seed_corpus.documents, settings)
    assert all(len(chunk.text) <= 120 for chunk in small)
    overlaps = 0
    for before, after in zip(small, small[1:]):
        if (before.doc_id, before.section_path) != (after.doc_id, after.section_path):
            continue
        shared = before.char_span[1] - after.char_span[0]
        if shared > 0:
            overlaps += 1
            assert shared <= 40
            # the repeated part is whole sentences of the earlier chunk
            assert any(
                before.char_span[0] + left == after.char_span[0] for left, _ in before.sentences
            )
        assert after.char_span[1] > before.char_span[1]
    assert overlaps > 0
    no_overlap = chunk_documents(seed_corpus.documents, Settings(chunk_size=120, chunk_overlap=0))
    for before, after in zip(no_overlap, no_overlap[1:]):
        if before.doc_id == after.doc_id:
            assert after.char_span[0] >= before.char_span[1]


def test_a_bare_parent_heading_gets_no_chunk_of_its_own(chunks):
    # "二、总体要求" is followed straight by "（一）指导思想。..."
    assert not any(c.text.strip() == "二、总体要求" for c in chunks)
    assert not any(c.section_path == ("二、总体要求",) for c in chunks if c.doc_id == "001")
    assert any(c.section_path[:1] == ("二、总体要求",) for c in chunks if c.doc_id == "001")


def test_a_very_short_section_still_gets_a_chunk(chunks):
    short = [c for c in chunks if c.section_path == ("七、保障措施", "（二十）坚持党的全面领导")]
    assert len(short) == 1
    heading_only_tail = [c for c in chunks if c.section_path == ("参考文献",)]
    assert heading_only_tail and heading_only_tail[0].text.startswith("参考文献:")


def test_chunking_is_deterministic(seed_corpus, seed_settings, chunks):
    again = chunk_documents(load_corpus(seed_settings).documents, seed_settings)
    assert again == chunks
    assert len({c.chunk_id for c in chunks}) == len(chunks)


def test_a_chunk_inside_a_table_carries_the_header_row(documents, chunks):
    continued = [c for c in chunks if c.table_header]
    assert continued
    for chunk in continued:
        text = documents[chunk.doc_id].text
        line_start = text.rfind("\n", 0, chunk.char_span[0]) + 1
        assert "\t" in text[line_start:].split("\n", 1)[0] and "\t" in chunk.table_header
        # the header is the table's first row, above the chunk, with only table rows between
        header_at = text.rfind(chunk.table_header + "\n", 0, line_start)
        assert header_at >= 0
        between = text[header_at:line_start].rstrip("\n").split("\n")
        assert all("\t" in line for line in between)
        assert "\t" not in text[: header_at].rstrip("\n").rsplit("\n", 1)[-1]
        assert chunk.table_header in chunk.index_text and chunk.table_header not in chunk.text
    # a chunk that starts at the header, or outside any table, carries none
    assert table_header("甲\t乙\n1\t2\n", 0) == ""
    assert table_header("正文。\n甲\t乙\n1\t2\n", 0) == ""
    assert table_header("正文。\n甲\t乙\n1\t2\n3\t4", len("正文。\n甲\t乙\n1\t2\n")) == "甲\t乙"


def test_chunker_rejects_an_overlap_not_below_the_size():
    with pytest.raises(ValueError):
        Chunker(chunk_size=100, chunk_overlap=100)


def test_loading_and_chunking_the_seed_corpus_is_fast(seed_settings):
    started = time.perf_counter()
    chunk_documents(load_corpus(seed_settings).documents, seed_settings)
    assert time.perf_counter() - started < 1.0


# --- loaders, on files made here ---------------------------------------------------------------


def make_pdf(pages: list[list[str]]) -> bytes:
    """A minimal PDF whose pages carry the given lines as real text, in the predefined
    STSong-Light CID font (no font file needed, and pypdf extracts it)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (" ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))).encode(), len(pages)),
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H "
        b"/DescendantFonts [<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> >>] >>",
    ]
    for index, lines in enumerate(pages):
        shown = "\n".join(f"<{line.encode('utf-16-be').hex()}> Tj T*" for line in lines)
        stream = f"BT /F1 12 Tf 14 TL 72 760 Td\n{shown}\nET".encode()
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * index)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref
    )
    return bytes(out)


def corpus_settings(folder: Path, **overrides) -> Settings:
    return Settings(corpus_dir=folder, catalogue_path=folder / "no-catalogue.json", **overrides)


def test_pdf_loader_drops_running_headers_and_page_numbers_and_joins_lines(tmp_path):
    path = tmp_path / "汇编.pdf"
    path.write_bytes(make_pdf([
        ["政策汇编 内部资料", "一、总体要求", "为贯彻落实《总体方案》，高水", "平规划建设虹桥国际开放枢纽。", "- 1 -"],
        ["政策汇编 内部资料", "（一）指导思想。以新发展理念为", "指导，推动高质量发展。", "- 2 -"],
        ["政策汇编 内部资料", "二、保障措施", "加强组织领导。", "- 3 -"],
    ]))
    [document] = load_file(path)
    assert "政策汇编" not in document.text and "- 2 -" not in document.text
    assert "为贯彻落实《总体方案》，高水平规划建设虹桥国际开放枢纽。" in document.text
    assert [s.path for s in document.sections] == [
        ("一、总体要求",), ("一、总体要求", "（一）指导思想"), ("二、保障措施",),
    ]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", document.doc_id)
    assert document.title == "一、总体要求"


def test_units_with_superscripts_are_not_taken_for_footnote_marks(tmp_path):
    path = tmp_path / "report.txt"
    path.write_text("展览面积达 150 万m²，增长 10³ 倍。作者¹\n¹作者简介：某研究员。\n", encoding="utf-8")
    [document] = load_file(path)
    assert document.text == "展览面积达 150 万m²，增长 10³ 倍。作者\n作者简介：某研究员。"


def test_page_numbers_between_lines_are_dropped_and_the_sentence_rejoined(tmp_path):
    path = tmp_path / "extracted.txt"
    path.write_text(
        "一、总体要求\n为贯彻落实《总体方案》，高水\n- 12 -\n平规划建设虹桥国际开放枢纽。\n"
        "第 3 页 共 9 页\n二、保障措施\n加强组织领导。\n",
        encoding="utf-8",
    )
    [document] = load_file(path)
    assert document.text == (
        "一、总体要求\n为贯彻落实《总体方案》，高水平规划建设虹桥国际开放枢纽。\n二、保障措施\n加强组织领导。"
    )


def test_docx_loader_reads_headings_paragraphs_and_tables_in_order(tmp_path):
    import docx

    word = docx.Document()
    word.add_heading("关于支持会展企业发展的若干措施", level=0)
    word.add_paragraph("为促进会展业高质量发展，制定本措施。")
    word.add_heading("一、支持对象", level=1)
    word.add_paragraph("在本区注册的会展企业。")
    table = word.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "项目", "标准"
    table.cell(1, 0).text, table.cell(1, 1).text = "首展", "最高100万元"
    word.add_heading("二、申报材料", level=1)
    word.add_paragraph("（一）申请表。按要求填写。")
    path = tmp_path / "measures.docx"
    word.save(path)

    [document] = load_file(path)
    assert document.doc_id == "measures"
    assert document.title == "关于支持会展企业发展的若干措施"
    assert "首展\t最高100万元" in document.text
    assert [s.path for s in document.sections] == [
        ("一、支持对象",), ("二、申报材料",), ("二、申报材料", "（一）申请表"),
    ]
    chunk = next(c for c in Chunker().run(document) if "最高100万元" in c.text)
    assert chunk.section_path == ("一、支持对象",)


def test_markdown_file_nests_unnumbered_headings_by_level(tmp_path):
    path = tmp_path / "guide.md"
    path.write_text(
        "# 办事指南\n\n### 适用范围\n\n本指南适用于**外资企业**。\n\n## 办理流程\n\n"
        "### 线上申请\n\n登录一网通办。\n",
        encoding="utf-8",
    )
    [document] = load_file(path)
    assert document.title == "办事指南"
    assert "外资企业" in document.text and "**" not in document.text
    assert [s.path for s in document.sections] == [
        ("适用范围",), ("办理流程",), ("办理流程", "线上申请"),
    ]


# Issue 15: `**` is markdown emphasis only in markdown; elsewhere it is the document's text.
PLAIN_WITH_ASTERISKS = (
    "关于填报申请表的说明\n一、填报要求\n表中带**号的栏目为必填项。\n"
    "二、计算方法\n补贴基数按 2**10 元计算。\n"
)


def test_a_plain_text_document_keeps_its_double_asterisks(tmp_path):
    path = tmp_path / "说明.txt"
    path.write_text(PLAIN_WITH_ASTERISKS, encoding="utf-8")
    [document] = load_file(path)
    assert document.text == PLAIN_WITH_ASTERISKS.rstrip("\n")
    assert "带**号的栏目为必填项" in document.text and "2**10" in document.text


def test_emphasis_is_dropped_from_text_that_uses_markdown(tmp_path):
    # Like seed 003: no heading line, `**` only in emphasis pairs (one ends after "。").
    pairs = tmp_path / "plan.txt"
    pairs.write_text(
        "三、重点产业\n1. **高能级总部经济**。打造总部集聚区。**赋能实体的工业互联网。**发展工业软件。\n",
        encoding="utf-8",
    )
    [document] = load_file(pairs)
    assert "1. 高能级总部经济。打造总部集聚区。赋能实体的工业互联网。发展工业软件。" in document.text
    # A heading line makes the text markdown, and a .md file is markdown whatever it holds.
    for name, text in (("headed.txt", "## 填报要求\n"), ("guide.md", "")):
        path = tmp_path / name
        path.write_text(text + "表中带**号的栏目为必填项。\n", encoding="utf-8")
        [document] = load_file(path)
        assert "带号的栏目为必填项" in document.text, name


def test_word_and_pdf_text_keeps_double_asterisks(tmp_path):
    import docx

    word = docx.Document()
    word.add_heading("关于填报申请表的说明", level=0)
    word.add_paragraph("表中带**号的栏目为**必填项**。")
    word.save(tmp_path / "说明.docx")
    (tmp_path / "说明.pdf").write_bytes(make_pdf([["关于填报申请表的说明", "表中带**号的栏目为**必填项**。"]]))
    for name in ("说明.docx", "说明.pdf"):
        [document] = load_file(tmp_path / name)
        assert "表中带**号的栏目为**必填项**。" in document.text, name


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030", "utf-16"])
def test_text_files_in_common_encodings_load(tmp_path, encoding):
    path = tmp_path / "notice.txt"
    path.write_bytes("关于开展申报工作的通知\n一、申报条件\n企业应当依法登记。\n".encode(encoding))
    [document] = load_file(path)
    assert document.text == "关于开展申报工作的通知\n一、申报条件\n企业应当依法登记。"
    assert document.sections[0].path == ("一、申报条件",)


def test_chinese_file_names_get_url_safe_distinct_ids(tmp_path):
    first, second = tmp_path / "通知2023.txt", tmp_path / "办法2023.txt"
    first.write_text("一份通知。", encoding="utf-8")
    second.write_text("一份办法。", encoding="utf-8")
    ids = [load_file(first)[0].doc_id, load_file(second)[0].doc_id]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", doc_id) for doc_id in ids)
    assert ids[0] != ids[1]


BAD_FILES = {
    "empty.txt": (b"", "文件为空"),
    "corrupt.pdf": (b"%PDF-1.4\n1 0 obj << /Type /Catalog", "PDF 文件已损坏"),
    "scanned.pdf": (None, "PDF 没有可提取的文字（可能是扫描件）"),
    "sheet.xlsx": (b"PK\x03\x04 not a document", "不支持的文件类型"),
    "binary.txt": (b"\x00\x01\x02\x03binary", "不是文本文件"),
    "broken.docx": (b"not a zip archive", "Word 文件已损坏"),
}


def write_bad_files(folder: Path) -> None:
    from pypdf import PdfWriter

    for name, (content, _) in BAD_FILES.items():
        if content is None:  # a page without a text layer, as a scanner makes
            writer = PdfWriter()
            writer.add_blank_page(width=612, height=792)
            with open(folder / name, "wb") as handle:
                writer.write(handle)
        else:
            (folder / name).write_bytes(content)


def test_bad_files_give_errors_naming_the_file_while_the_others_load(tmp_path):
    write_bad_files(tmp_path)
    (tmp_path / "good.md").write_text("# 好文件\n\n一、总则\n\n内容。\n", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("ignored", encoding="utf-8")
    (tmp_path / "subfolder").mkdir()

    loaded = load_corpus(corpus_settings(tmp_path))

    assert [d.doc_id for d in loaded.documents] == ["good"]
    errors = {error.source_file: error.message for error in loaded.errors}
    assert set(errors) == set(BAD_FILES)
    for name, (_, reason) in BAD_FILES.items():
        assert name in errors[name] and reason in errors[name], errors[name]
        with pytest.raises(DocumentLoadError) as raised:
            load_file(tmp_path / name)
        assert name in str(raised.value) and reason in str(raised.value)


def test_oversized_files_and_duplicate_ids_are_reported_not_loaded(tmp_path):
    (tmp_path / "big.txt").write_text("很长的文件。" * 100, encoding="utf-8")
    (tmp_path / "a.txt").write_text("第一份。", encoding="utf-8")
    (tmp_path / "a.md").write_text("第二份。", encoding="utf-8")
    loaded = load_corpus(corpus_settings(tmp_path, max_document_bytes=1000))
    assert [d.source_file for d in loaded.documents] == ["a.md"]
    messages = {error.source_file: error.message for error in loaded.errors}
    assert "文件超过大小上限" in messages["big.txt"]
    assert "文档编号 a 已被 a.md 使用" in messages["a.txt"]


def test_a_catalogue_splits_a_file_at_a_marker_line(tmp_path):
    path = tmp_path / "bundle.txt"
    path.write_text("关于印发两份文件的通知\n特此通知。\n附件一 实施办法\n一、总则\n办法正文。\n", encoding="utf-8")
    catalogue = {"files": {"bundle.txt": {"parts": [
        {"doc_id": "n", "title": "通知", "kind": "notice"},
        {"doc_id": "m", "title": "实施办法", "starts_at_line": "附件一　实施办法"},
    ]}}}
    notice, measures = load_file(path, catalogue)
    assert (notice.doc_id, notice.kind, notice.text) == ("n", "notice", "关于印发两份文件的通知\n特此通知。")
    assert measures.text.startswith("附件一 实施办法") and measures.sections[0].path == ("一、总则",)

    catalogue["files"]["bundle.txt"]["parts"][1]["starts_at_line"] = "附件二"
    with pytest.raises(DocumentLoadError, match="bundle.txt.*附件二"):
        load_file(path, catalogue)


def test_a_malformed_catalogue_is_reported_and_the_files_still_load(tmp_path):
    (tmp_path / "x.txt").write_text("正文。", encoding="utf-8")
    broken = tmp_path / "catalogue.json"
    broken.write_text(json.dumps({"files": {"x.txt": {"doc_id": "x y", "title": "X"}}}))
    loaded = load_corpus(Settings(corpus_dir=tmp_path, catalogue_path=broken))
    assert [d.doc_id for d in loaded.documents] == ["x"]
    assert loaded.errors[0].source_file == "catalogue.json"
    assert "doc_id" in loaded.errors[0].message


def test_catalogue_keywords_reach_the_document_and_must_be_a_list_of_words(tmp_path):
    path = tmp_path / "plan.txt"
    path.write_text("示例方案\n发挥进博会溢出效应。\n", encoding="utf-8")
    entry = {"doc_id": "p", "title": "示例方案", "keywords": ["进博会", " 长三角 "]}
    (document,) = load_file(path, {"files": {"plan.txt": entry}})
    assert document.keywords == ("进博会", "长三角")
    assert document.model_dump(mode="json")["keywords"] == ["进博会", "长三角"]
    assert Document.model_validate(document.model_dump(mode="json")) == document
    for bad in ("进博会", ["进博会", 3], [""]):
        with pytest.raises(CatalogueError, match="keywords"):
            Catalogue.from_dict({"files": {"plan.txt": {**entry, "keywords": bad}}})


def test_the_shipped_catalogue_is_valid_and_lists_every_seed_file():
    catalogue = Catalogue.from_path(PROJECT_ROOT / "corpus" / "catalogue.json")
    seed_files = {p.name for p in (PROJECT_ROOT / "corpus" / "documents").iterdir() if not p.name.startswith(".")}
    assert set(catalogue.files) == seed_files
