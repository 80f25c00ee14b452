"""The training command on a tiny budget (CI never trains for real): the data it builds,
a resumable run, and packing into a loadable reader."""

from __future__ import annotations

import json

import pytest

from corpus.settings import PROJECT_ROOT

SHARED = PROJECT_ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not (SHARED / "cmrc2018" / "cmrc2018_dev.json").exists() or not (SHARED / "drcd" / "DRCD_dev.json").exists(),
    reason="reading-comprehension data not in ../shared/data",
)


def test_drcd_is_converted_to_simplified_and_answers_refound():
    from qa.reader_data import load_drcd

    examples = load_drcd(SHARED / "drcd" / "DRCD_dev.json") if (SHARED / "drcd").exists() else []
    if not examples:
        pytest.skip("DRCD not available")
    assert len(examples) > 3400
    for example in examples[:500]:
        for text, start in example.answers:
            assert example.context[start : start + len(text)] == text
    assert "臺灣" not in "".join(example.context for example in examples[:200])


def test_covering_span_finds_keywords_across_line_breaks():
    from qa.reader_data import covering_span

    context = "序言。应聚焦制度和资源\n优势，发展离岸贸易、总部经济等新业态。其他"
    text, start = covering_span(context, ["聚焦制度和资源优势", "总部经济"])
    assert context[start : start + len(text)] == text
    assert text.startswith("聚焦") and text.endswith("总部经济")
    assert covering_span(context, ["不存在的词"]) is None


def test_answer_removed_negative_keeps_the_topic_and_drops_every_answer_sentence():
    from qa.reader_data import ReadingExample, answer_removed_negatives

    context = "虹桥商务区位于上海西部。商务区面积151.4平方公里，涉及四个区；区内交通便利。进博会每年举办。"
    answer = ("151.4平方公里", context.index("151.4"))
    example = ReadingExample("q", "商务区面积多大？", context, (answer,), "cmrc2018", "a")
    (negative,) = answer_removed_negatives([example], share=1.0, seed=0, min_chars=10)
    assert negative.answers == () and negative.source == "removed:cmrc2018"
    assert negative.context == "虹桥商务区位于上海西部。区内交通便利。进博会每年举办。"
    # nothing comes back when the answer also sits in another sentence, or too little is left
    repeated = ReadingExample("r", "面积？", context + "面积为151.4平方公里。", (answer,), "drcd", "a")
    assert answer_removed_negatives([repeated], share=1.0, seed=0, min_chars=10) == []
    assert answer_removed_negatives([example], share=1.0, seed=0, min_chars=200) == []
    assert answer_removed_negatives([example], share=0.0, seed=0) == []


def test_windows_put_the_title_above_the_passage_and_keep_the_answer_labelled(seed_settings):
    from transformers import AutoTokenizer

    from eval.train_reader import TrainConfig, featurize
    from index.e5_convert import ensure_model_dir
    from qa.reader_data import ReadingExample

    tokenizer = AutoTokenizer.from_pretrained(str(ensure_model_dir(seed_settings.index.cache_dir)))
    context = "商务区面积151.4平方公里，涉及长宁区、闵行区。"
    answer = ("151.4平方公里", context.index("151.4"))
    example = ReadingExample("q", "面积多大？", context, (answer,), "seed", "a", "虹桥国际开放枢纽建设总体方案")
    opens_with_title = ReadingExample("r", "面积多大？", "虹桥国际开放枢纽建设总体方案\n" + context,
                                      (("151.4平方公里", answer[1] + 15),), "seed", "a", "虹桥国际开放枢纽建设总体方案")
    titled, plain, opening = (
        featurize(tokenizer, [one], TrainConfig(titles=titles))[0][0]
        for one, titles in ((example, True), (example, False), (opens_with_title, True))
    )
    for feature in (titled, plain, opening):
        assert tokenizer.decode(feature.input_ids[feature.start : feature.end + 1]).replace(" ", "") == "151.4平方公里"
    assert "枢纽" in tokenizer.decode(titled.input_ids) and "枢纽" not in tokenizer.decode(plain.input_ids)
    assert titled.start > plain.start
    # a passage that opens with its title is not given it twice
    assert tokenizer.decode(opening.input_ids).count("枢纽") == 1


def test_near_miss_negatives_carry_the_title_of_the_paragraph_they_come_from():
    from index.analyzer import Analyzer
    from qa.reader_data import ReadingExample, bm25_negatives

    own = ReadingExample("q", "虹桥商务区面积多大？", "虹桥商务区面积151.4平方公里。", (("151.4平方公里", 7),),
                         "cmrc2018", "a", "虹桥")
    other = ReadingExample("o", "前滩在哪？", "前滩商务区面积不大，位于浦东。", (("浦东", 12),), "cmrc2018", "b", "前滩")
    (negative,) = [n for n in bm25_negatives([own, other], Analyzer(use_bigrams=False).analyze, 1.0, 0) if n.qid == "q:negative"]
    assert negative.context == other.context and negative.title == "前滩" and negative.answers == ()


@needs_data
def test_training_runs_resumes_and_packs(tmp_path, seed_index_dir, seed_settings):
    from eval.train_reader import TrainConfig, pack_reader, train
    from qa.reader import SpanReader

    config = TrainConfig(max_features=32, batch_size=8, checkpoint_every=2, seed=3)
    work = tmp_path / "run"
    final = train(seed_settings, work, config)
    training = json.loads((final / "training.json").read_text(encoding="utf-8"))
    assert training["features"] == 32 and training["steps"] == 4
    assert all("test" not in path.lower() for path in training["files"])
    assert sum(training["counts"].values()) == 32
    # a second call finds the finished checkpoint and trains no further step
    checkpoint = (work / "checkpoint.pt").stat().st_mtime_ns
    train(seed_settings, work, config)
    assert json.loads((final / "training.json").read_text(encoding="utf-8"))["steps"] == 4
    assert (work / "checkpoint.pt").stat().st_mtime_ns >= checkpoint
    # a run with other settings is not resumed from this one's windows and checkpoint
    with pytest.raises(ValueError, match="other settings"):
        train(seed_settings, work, TrainConfig(max_features=32, batch_size=8, checkpoint_every=2, seed=3, titles=True))

    figures = pack_reader(seed_settings, final, tmp_path / "packed")
    assert figures["vocabulary"] < figures["full_vocabulary"] / 5
    reader = SpanReader(tmp_path / "packed")
    reading = reader.read("虹桥商务区面积多大？", ["虹桥商务区规划面积86.6平方公里。"])[0]
    assert 0.0 <= reading.probability <= 1.0
