"""Eval metrics on small hand-made cases whose results are worked out by hand."""

from __future__ import annotations

import pytest

from eval.metrics import (
    ItemResult,
    accuracy_by,
    char_f1,
    citation_matches,
    cmrc_segments,
    contains_any,
    evidence_rank,
    exact_match,
    hit_at_k,
    keywords_found,
    mean_reciprocal_rank,
    normalize,
    overlaps_quote,
    percentile,
    refusal_frontier,
    refusal_scores,
    refusal_sweep,
    summarize,
)

QUOTE = "虹桥国际开放枢纽包括虹桥商务区、长宁区、嘉定区、闵行区、松江区、金山区和青浦区。"


def make_result(**fields) -> ItemResult:
    defaults = dict(
        item_id="x", split="dev", type="fact", style="user", question="问题？", history=(),
        answerable=True, expected_answer="", keywords=(), answered=True, answer="答案。",
        span=None, query="问题？", cited_doc_ids=(), cited_sections=(), evidence_rank=None,
        answer_correct=False, citation_correct=False, top_score=None, latency_ms=10.0,
    )
    return ItemResult(**{**defaults, **fields})


def test_normalize_folds_width_case_and_whitespace():
    assert normalize("ＡＢＣ　１２３ a b\n") == "abc123ab"
    assert normalize("“２０２５年”，目标！", drop_punctuation=True) == "2025年目标"


def test_passage_containing_the_quote_with_different_spacing_counts():
    passage = "第二条 " + QUOTE.replace("、", "、 ") + " 其他内容。"
    assert overlaps_quote(passage, QUOTE)


def test_quote_cut_by_a_chunk_boundary_counts_when_the_shared_run_is_long_enough():
    head, tail = QUOTE[:26], QUOTE[26:]  # 26 of the quote's 41 characters: about 63%
    assert overlaps_quote("……前一段。" + head, QUOTE)
    # 15 characters is under both 60% of 41 and 20 characters: not the evidence
    assert not overlaps_quote(tail + "下一段。", QUOTE)


def test_twenty_shared_characters_count_even_for_a_long_quote():
    long_quote = QUOTE * 3  # 123 characters, 60% would be 74
    assert overlaps_quote("无关" + QUOTE[:20], long_quote)
    assert not overlaps_quote("无关" + QUOTE[:19], long_quote)


def test_unrelated_passage_does_not_overlap():
    assert not overlaps_quote("进口博览会每年在上海举办。", QUOTE)
    assert not overlaps_quote("", QUOTE)
    assert not overlaps_quote("任何文字", "")


def test_evidence_rank_hit_at_k_and_mrr():
    passages = ["无关段落一。", "无关段落二。", "附件：" + QUOTE, "无关段落三。"]
    assert evidence_rank(passages, ["不存在的引文内容", QUOTE]) == 3
    assert evidence_rank(passages, ["不存在的引文内容"]) is None
    ranks = [1, 3, None, 5]
    assert hit_at_k(ranks, 1) == 0.25
    assert hit_at_k(ranks, 3) == 0.5
    assert hit_at_k(ranks, 5) == 0.75
    assert mean_reciprocal_rank(ranks) == pytest.approx((1 + 1 / 3 + 0 + 1 / 5) / 4)
    assert hit_at_k([], 1) is None and mean_reciprocal_rank([]) is None


def test_answer_needs_every_keyword_after_normalisation():
    answer = "到２０２５年，进博会展览面积达到 36 万平方米。"
    assert keywords_found(answer, ["2025年", "36万平方米"])
    assert not keywords_found(answer, ["2025年", "40万平方米"])
    # no keywords labelled: the expected answer itself must occur
    assert keywords_found(answer, [], expected_answer="36万平方米")
    assert not keywords_found(answer, [], expected_answer="")


def test_citation_needs_the_right_document_and_an_overlapping_quote():
    evidence = [("doc-a", QUOTE)]
    assert citation_matches([("doc-b", "别的"), ("doc-a", QUOTE[:30])], evidence)
    assert not citation_matches([("doc-b", QUOTE)], evidence)  # right text, wrong document
    assert not citation_matches([("doc-a", "虹桥商务区")], evidence)  # too little of the quote
    assert not citation_matches([], evidence)


def test_refusal_precision_recall_and_wrongly_refused():
    answerable = [True, True, True, False, False]
    refused = [False, True, False, True, False]
    scores = refusal_scores(answerable, refused)
    assert scores.precision == 0.5  # two refusals, one on an unanswerable item
    assert scores.recall == 0.5  # one of two unanswerable items refused
    assert scores.wrongly_refused == pytest.approx(1 / 3)
    nothing_refused = refusal_scores([True, False], [False, False])
    assert nothing_refused.precision is None and nothing_refused.recall == 0.0
    with pytest.raises(ValueError):
        refusal_scores([True], [True, False])


def test_percentile_interpolates():
    assert percentile([10.0, 20.0, 30.0, 40.0], 50) == 25.0
    assert percentile([10.0, 20.0, 30.0, 40.0], 95) == pytest.approx(38.5)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None


def test_summary_of_a_refusal_case_and_a_follow_up_item():
    results = [
        make_result(item_id="fact-1", evidence_rank=1, answer_correct=True,
                    citation_correct=True, answer="一二三四", latency_ms=10.0),
        # a follow-up: judged on its own answer, whatever the history held
        make_result(item_id="follow-1", type="follow_up", style="document",
                    history=("虹桥国际开放枢纽包括哪些区域？",), query="虹桥国际开放枢纽面积多大？",
                    evidence_rank=2, answer_correct=False, answer="一二", latency_ms=30.0),
        make_result(item_id="wrongly-refused", evidence_rank=None, answered=False,
                    answer="文档中没有找到", latency_ms=20.0),
        make_result(item_id="refusal", type="unanswerable", answerable=False, answered=False,
                    answer="文档中没有找到", latency_ms=40.0),
    ]
    row = summarize("hybrid", results)
    assert (row.items, row.answerable, row.unanswerable) == (4, 3, 1)
    assert row.hit_at_1 == pytest.approx(1 / 3)
    assert row.hit_at_3 == pytest.approx(2 / 3)
    assert row.mrr == pytest.approx((1 + 0.5) / 3)
    assert row.answer_accuracy == pytest.approx(1 / 3)
    assert row.citation_accuracy == pytest.approx(1 / 3)
    assert row.refusal_precision == 0.5
    assert row.refusal_recall == 1.0
    assert row.wrongly_refused == pytest.approx(1 / 3)
    assert row.median_answer_chars == 3  # answered items only: lengths 4 and 2
    assert row.latency_p50_ms == 25.0

    by_type = accuracy_by(results, lambda r: r.type)
    assert by_type == {"fact": (0.5, 2), "follow_up": (0.0, 1)}
    assert accuracy_by(results, lambda r: r.style) == {
        "document": (0.0, 1), "user": (0.5, 2)
    }


def test_item_result_round_trips_through_json_dict():
    result = make_result(history=("上一问",), cited_doc_ids=("d1",), top_score=0.25)
    assert ItemResult.from_dict(result.to_dict()) == result


def test_refusal_sweep_reruns_only_the_threshold_decision():
    results = [
        make_result(item_id="a", top_score=0.9, answer_correct=True),
        make_result(item_id="b", top_score=0.3, answer_correct=True),
        make_result(item_id="u", answerable=False, top_score=0.2),
        make_result(item_id="v", answerable=False, top_score=0.5),
    ]
    points = {round(p.threshold, 6): p for p in refusal_sweep(results, [0.0, 0.25, 0.4, 0.6])}
    assert points[0.0].refusal_recall == 0.0 and points[0.0].answer_accuracy == 1.0
    assert points[0.25].refusal_recall == 0.5 and points[0.25].wrongly_refused == 0.0
    assert points[0.4].refusal_recall == 0.5 and points[0.4].wrongly_refused == 0.5
    assert points[0.4].answer_accuracy == 0.5
    assert points[0.6].refusal_recall == 1.0
    default = refusal_sweep(results)
    assert [p.threshold for p in default] == [0.2, 0.3, 0.5, 0.9]
    assert default[0].refusal_recall == 0.0 and default[0].wrongly_refused == 0.0
    assert default[-1].refusal_recall == 1.0 and default[-1].wrongly_refused == 0.5
    # 0.5 refuses answerable item b without raising recall: not worth choosing
    assert [p.threshold for p in refusal_frontier(default)] == [0.2, 0.3, 0.9]


def test_cmrc_segments_split_chinese_characters_and_keep_words():
    assert cmrc_segments("光荣和ω-force开发，2010年") == [
        "光", "荣", "和", "ω", "force", "开", "发", "2010", "年"
    ]


def test_exact_match_ignores_punctuation_and_whitespace():
    assert exact_match("「战史演武」&「争霸演武」", ["战史演武 争霸演武"]) == 1.0
    assert exact_match("光荣和 ω-force。", ["光荣和ω-force"]) == 1.0
    assert exact_match("光荣", ["光荣和ω-force"]) == 0.0


def test_char_f1_is_the_best_over_gold_answers():
    # prediction 任天堂游戏谜之村雨城 (10 chars) vs gold 村雨城 (3): P=3/10, R=1
    assert char_f1("任天堂游戏谜之村雨城。", ["村雨城"]) == pytest.approx(2 * 0.3 / 1.3)
    assert char_f1("任天堂游戏谜之村雨城。", ["村雨城", "任天堂游戏谜之村雨城"]) == 1.0
    assert char_f1("完全无关", ["村雨城"]) == 0.0
    assert char_f1("", ["村雨城"]) == 0.0


def test_contains_any_gold_span():
    assert contains_any("本作由光荣和ω-force开发。", ["光荣和ω－force"])
    assert not contains_any("本作由光荣开发。", ["光荣和ω-force"])
