"""The seed eval set is sound (every quote and keyword is in the documents), big and varied
enough to steer by, and the checker catches broken items."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from eval.dataset import (
    DEFAULT_PATH,
    SECTION_SEPARATOR,
    SOURCE_FILES,
    TYPES,
    EvalItem,
    Evidence,
    check_items,
    fold,
    load_items,
    summary,
    write_items,
)

# Top-level headings of each logical document, as written in the files. Text outside every
# heading cites the document title, so the title stands for the preamble here.
TOP_LEVEL_SECTIONS = {
    "000": [
        "加快建设虹桥国际贸易中心新平台的对策建议",
        "一、国际贸易中心新平台是虹桥商务区建设的核心载体",
        "二、虹桥国际贸易中心新平台建设面临的瓶颈和制约因素",
        "三、加快打造虹桥国际贸易中心新平台的对策建议",
    ],
    "001": [
        "虹桥国际开放枢纽建设总体方案",
        "一、建设背景",
        "二、总体要求",
        "三、建设高标准的国际化中央商务区",
        "四、构建高端资源配置国际贸易中心新平台",
        "五、全面提高综合交通枢纽管理水平",
        "六、显著提升服务长三角和联通国际的能力",
        "七、保障措施",
    ],
    "002": [
        "上海市人民政府关于印发《“十四五”时期提升上海国际贸易中心能级规划》的通知",
        "一 “十四五”时期提升上海国际贸易中心能级的基础",
        "二 “十四五”时期上海国际贸易中心建设指导思想",
        "三 “十四五”时期上海国际贸易中心建设主要任务",
        "四 保障措施",
    ],
    "003-0": [
        "关于发布并实施《虹桥国际中央商务区产业发展规划》 和《虹桥国际中央商务区重点产业目录》的通知",
    ],
    "003-1": [
        "虹桥国际中央商务区 产业发展规划",
        "一、发展基础",
        "二、总体要求",
        "三、产业发展重点",
        "四、产业发展布局",
        "五、发展举措",
    ],
    "003-2": ["一、产业总体定位", "二、产业发展目录"],
    "004": [
        "依托进博会和临港新片区两大平台 强化上海开放枢纽门户功能",
        "一、上海打造开放枢纽门户的成效与不足",
        "二、强化上海开放枢纽门户功能的总体思路和路径选择",
        "三、上海强化开放枢纽门户功能的近期抓手",
    ],
}


@pytest.fixture(scope="module")
def items() -> list[EvalItem]:
    return load_items()


def good_item(**changes) -> EvalItem:
    """A small valid item; tests break one thing at a time."""
    item = EvalItem(
        id="q9001",
        split="dev",
        type="number",
        style="user",
        question="虹桥商务区多大？",
        history=(),
        answerable=True,
        answer="“一核”是上海虹桥商务区，面积为 151平方公里。",
        keywords=("151", "平方公里"),
        evidence=(
            Evidence(
                doc_id="001",
                source_file=SOURCE_FILES["001"],
                section="二、总体要求 > （三）功能布局",
                quote="“一核”是上海虹桥商务区，面积为 151平方公里",
            ),
        ),
    )
    return replace(item, **changes)


def with_evidence(**changes) -> EvalItem:
    base = good_item()
    return replace(base, evidence=(replace(base.evidence[0], **changes),))


# --- the set itself ------------------------------------------------------------------------


def test_seed_set_passes_the_checker(items):
    assert check_items(items) == []


def test_seed_set_meets_the_minimum_counts(items):
    types = Counter(item.type for item in items)
    styles = Counter(item.style for item in items)
    assert len(items) >= 160
    assert types["unanswerable"] >= 25
    assert types["followup"] >= 15
    assert types["multi"] >= 10
    assert set(types) == set(TYPES)
    assert styles["user"] * 2 >= len(items)


# Words of the corpus's own topics; an unanswerable question using one is a near miss.
TOPIC_WORDS = ("虹桥", "进博", "临港", "长三角", "浦东", "前海", "熊励", "产业", "方案", "进出口",
               "税", "总部", "补贴", "会展", "跨境", "钻石", "外籍", "保税", "GDP", "商务区")


def test_unanswerable_items_are_mostly_near_misses_with_a_few_off_topic(items):
    unanswerable = [item for item in items if not item.answerable]
    near_misses = [
        item for item in unanswerable
        if any(word in "".join((*item.history, item.question)) for word in TOPIC_WORDS)
    ]
    assert len(near_misses) >= 20
    assert len(unanswerable) - len(near_misses) >= 3


def test_multi_items_cite_two_passages(items):
    for item in items:
        if item.type == "multi":
            assert len({(e.doc_id, e.quote) for e in item.evidence}) >= 2, item.id


def test_every_document_and_top_level_section_is_covered(items):
    cited: dict[str, set[str]] = {doc_id: set() for doc_id in SOURCE_FILES}
    for item in items:
        for evidence in item.evidence:
            top = evidence.section.split(SECTION_SEPARATOR)[0]
            cited[evidence.doc_id].add(fold(top))
    for doc_id, sections in TOP_LEVEL_SECTIONS.items():
        missing = [s for s in sections if fold(s) not in cited[doc_id]]
        assert not missing, f"doc {doc_id}: no item cites {missing}"


def test_splits_are_both_used_and_stratified_by_type(items):
    by_split_type = Counter((item.split, item.type) for item in items)
    assert {item.split for item in items} == {"dev", "test"}
    for kind in TYPES:
        dev, test = by_split_type["dev", kind], by_split_type["test", kind]
        assert dev and test, kind
        assert abs(dev - test) <= 1, (kind, dev, test)


def test_load_items_filters_by_split(items):
    dev = load_items(split="dev")
    test = load_items(split="test")
    assert {item.split for item in dev} == {"dev"}
    assert len(dev) + len(test) == len(items)


def test_load_items_rejects_an_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        load_items(split="train")


def test_summary_counts_by_split_type_style_and_doc(items):
    counts = summary(items)
    assert counts["total"]["items"] == len(items)
    assert sum(counts["split"].values()) == len(items)
    assert sum(counts["style"].values()) == len(items)
    assert counts["doc"]["none"] == sum(1 for item in items if not item.evidence)
    assert set(SOURCE_FILES) <= set(counts["doc"])


# --- reading and writing -------------------------------------------------------------------


def test_write_then_load_round_trips_and_keeps_chinese_readable(items, tmp_path):
    path = tmp_path / "out" / "candidates.jsonl"
    write_items(items[:7], path)
    assert load_items(path) == items[:7]
    first_line = path.read_text(encoding="utf-8").splitlines()[0]
    assert items[0].question in first_line
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


def test_write_items_leaves_the_old_file_when_an_item_cannot_be_written(tmp_path):
    path = tmp_path / "set.jsonl"
    write_items([good_item()], path)
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        write_items([good_item(), "not an item"], path)
    assert path.read_bytes() == before


def test_load_items_names_the_bad_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    good = json.dumps(good_item().to_dict(), ensure_ascii=False)
    path.write_text(good + "\n" + '{"id": "q0002", "split": "dev"\n', encoding="utf-8")
    with pytest.raises(ValueError, match=":2:"):
        load_items(path)


def test_load_items_names_a_missing_field(tmp_path):
    data = good_item().to_dict()
    del data["keywords"]
    path = tmp_path / "missing.jsonl"
    path.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing field 'keywords'"):
        load_items(path)


def test_the_checked_in_file_is_utf8_jsonl_with_unescaped_chinese():
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    assert "\\u" not in text
    assert all(line.startswith("{") for line in text.splitlines())


# --- the checker ---------------------------------------------------------------------------


def test_checker_accepts_the_good_item():
    assert check_items([good_item()]) == []


def test_checker_folds_width_and_ignores_line_breaks():
    # The file has full-width "（太仓）" and a line break inside this clause.
    item = good_item(
        question="太仓港区集装箱四期工程属于哪个项目？",
        answer="苏州(太仓)港物流枢纽",
        keywords=("苏州(太仓)港", "物流枢纽"),
        evidence=(
            Evidence(
                "001",
                SOURCE_FILES["001"],
                "五、全面提高综合交通枢纽管理水平 > （十七）加快港口集疏运体系建设",
                "加快建设苏州(太仓)港\n物流枢纽",
            ),
        ),
    )
    assert check_items([item]) == []


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        (with_evidence(quote="“一核”是上海虹桥商务区，面积为 150平方公里"), "quote not found"),
        (good_item(keywords=("151", "平方千米")), "keyword '平方千米' not found"),
        (with_evidence(doc_id="005"), "unknown doc_id '005'"),
        (with_evidence(source_file=SOURCE_FILES["002"]), "is not the file of doc 001"),
        (with_evidence(section="一、建设背景"), "quote is not under section"),
        (with_evidence(section="二、总体要求 > （三）空间布局"), "section headings not found"),
        (with_evidence(quote="面积为 151平方公里" * 12), "at most 120"),
        (good_item(keywords=("151", "主要承担")), "keyword '主要承担' is in no evidence quote"),
        (good_item(answer="约一百五十平方公里"), "keyword '151' is missing from the gold answer"),
        (good_item(keywords=()), "0 keywords"),
        (good_item(evidence=()), "answerable item without evidence"),
        (good_item(type="unanswerable", answerable=False, keywords=()), "unanswerable item has evidence"),
        (good_item(answerable=False), "type 'unanswerable' if and only if"),
        (good_item(type="followup"), "followup needs the earlier question"),
        (good_item(history=("上一个问题",)), "history is only for followup"),
        (good_item(type="multi"), "at least two evidence passages"),
        (good_item(split="train"), "bad split 'train'"),
        (good_item(type="yes_no"), "bad type 'yes_no'"),
        (good_item(style="casual"), "bad style 'casual'"),
        (good_item(id="x1"), "id must look like q0001"),
    ],
)
def test_checker_names_the_item_and_the_problem(broken, expected):
    problems = check_items([broken])
    assert problems, f"no problem reported for {expected!r}"
    assert any(p.startswith(broken.id) and expected in p for p in problems), problems


def test_checker_catches_duplicate_ids_and_questions():
    first = good_item()
    same_id = good_item(question="虹桥商务区面积多大？")
    same_question = good_item(id="q9002", question=" 虹桥商务区多大？")
    problems = check_items([first, same_id, same_question])
    assert "q9001: duplicate id" in problems
    assert "q9002: same question as q9001" in problems


def test_checker_allows_the_same_followup_after_different_history():
    first = good_item(type="followup", history=("北向拓展带包括哪些地方？",), question="那它呢？")
    second = replace(first, id="q9002", history=("南向拓展带包括哪些地方？",))
    assert not [p for p in check_items([first, second]) if "same question" in p]


def test_checker_reports_a_missing_corpus_instead_of_raising(tmp_path):
    problems = check_items([good_item()], corpus_dir=tmp_path)
    assert problems == [f"q9001: evidence 1: cannot read {SOURCE_FILES['001']} in {tmp_path}"]


def test_command_line_check_passes_on_the_seed_set(capsys):
    from eval.dataset import main

    assert main([]) == 0
    assert "0 problems" in capsys.readouterr().out


def test_command_line_check_fails_with_one_line_on_a_broken_file(tmp_path, capsys):
    from eval.dataset import main

    path = tmp_path / "bad.jsonl"
    write_items([with_evidence(quote="这句话不在文件里")], path)
    assert main([str(path)]) == 1
    assert "quote not found" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.jsonl")]) == 1
    assert capsys.readouterr().err.startswith("Error:")
