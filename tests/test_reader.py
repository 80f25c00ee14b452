"""The shipped reader: loads from the repository, fits the size budget, and reads known
questions from DRCD test (never trained on) and the seed documents right: a known span and
a known refusal."""

from __future__ import annotations

import json

import pytest

from corpus.settings import PROJECT_ROOT, Settings
from qa.reader import SHIPPED_READER, Reader, SpanReader

DRCD_TEST = PROJECT_ROOT.parent / "shared" / "data" / "drcd" / "DRCD_test.json"
KNOWN_SPAN_QID = "1147-2-2"  # 哪一本书规范了梵语的正确语法？ -> 《八篇书》
KNOWN_REFUSAL_CONTEXT_QID = "1174-22-3"  # a paragraph of another article (a German university)


@pytest.fixture(scope="module")
def reader() -> SpanReader:
    return SpanReader()


def test_shipped_reader_fits_in_40_mb_and_has_a_model_card():
    size = sum(path.stat().st_size for path in SHIPPED_READER.iterdir())
    assert size <= 40 * 1024 * 1024
    card = (SHIPPED_READER / "MODEL_CARD.md").read_text(encoding="utf-8")
    for needed in ("MIT", "CC BY-SA", "policyqa train-reader", "sha256"):
        assert needed in card
    training = json.loads((SHIPPED_READER / "training.json").read_text(encoding="utf-8"))
    assert not any("test" in path.lower() for path in training["files"] if "drcd" in path.lower())


def test_reader_is_a_reader(reader):
    assert isinstance(reader, Reader)


def test_seed_passage_gives_the_figure(reader):
    passage = (
        "虹桥国际中央商务区位于上海市西部，总面积151.4平方公里，涉及闵行、长宁、青浦、嘉定四个区。"
        "其中，虹桥商务区规划面积86.6平方公里。"
    )
    reading = reader.read("虹桥国际中央商务区的总面积是多少？", [passage])[0]
    assert "151.4平方公里" in reading.text and len(reading.text) <= 20
    assert passage[reading.start : reading.end] == reading.text
    assert reading.probability >= 0.5


def test_seed_question_about_something_the_passage_lacks_is_refused(reader):
    passage = "青浦区围绕会展经济，与国家会展中心联合共建“虹桥国际会展产业园”。作为全市首个国际会展产业园，2021年上半年累计举办展览 23个。"
    reading = reader.read("北京大兴机场的年旅客吞吐量是多少？", [passage])[0]
    assert reading.probability < Settings().qa.refusal_threshold


@pytest.mark.skipif(not DRCD_TEST.exists(), reason="DRCD not in ../shared/data")
def test_drcd_test_questions(reader):
    from qa.reader_data import load_drcd

    examples = {example.qid: example for example in load_drcd(DRCD_TEST)}
    known = examples[KNOWN_SPAN_QID]
    reading = reader.read(known.question, [known.context])[0]
    assert reading.text in {text for text, _ in known.answers}
    assert reading.probability >= 0.5
    # the same question over another article's paragraph: not answered there
    other = examples[KNOWN_REFUSAL_CONTEXT_QID]
    assert reader.read(known.question, [other.context])[0].probability < Settings().qa.refusal_threshold


def test_readings_come_back_one_per_passage_in_order(reader):
    passages = ["长宁区围绕临空经济、数字经济，大力培育进口贸易和促进平台。", "", "嘉定区加快布局数字化产业。"]
    readings = reader.read("长宁区围绕什么发展？", passages)
    assert [reading.passage for reading in readings] == [0, 1, 2]
    assert readings[1].text == ""


def test_alternatives_are_other_places_in_the_passage_less_probable(reader):
    passage = (
        "到 2025 年，虹桥国际开放枢纽基本建成，中央商务区功能框架全面确立。"
        "到 2035 年，虹桥国际开放枢纽全面建成，成为推动长三角一体化发展的重要载体。"
    )
    reading = reader.read("虹桥国际开放枢纽要达到什么目标？", [passage])[0]
    assert 1 <= len(reading.alternatives) <= 4
    probabilities = [reading.probability] + [alternative.probability for alternative in reading.alternatives]
    assert probabilities == sorted(probabilities, reverse=True)
    places = [(reading.start, reading.end)] + [(a.start, a.end) for a in reading.alternatives]
    for number, (start, end) in enumerate(places):
        assert all(end <= other_start or other_end <= start for other_start, other_end in places[number + 1 :])
    for alternative in reading.alternatives:
        assert passage[alternative.start : alternative.end] == alternative.text and not alternative.alternatives


def test_int8_layer_groups_cover_every_linear_layer_once_and_quantise_only_theirs(reader):
    import torch

    from eval.reader_quant import GROUPS, layer_names, quantised

    linear = {name for name, module in reader.model.named_modules() if isinstance(module, torch.nn.Linear)}
    groups = [layer_names(reader.model, [group]) for group in GROUPS]
    assert sum(len(names) for names in groups) == len(linear) and set().union(*groups) == linear
    assert len(layer_names(reader.model, ["ffn_out"])) == reader.model.config.num_hidden_layers

    variant = quantised(reader, ["head"])
    quantised_modules = {
        name for name, module in variant.model.named_modules() if isinstance(module, torch.ao.nn.quantized.dynamic.Linear)
    }
    assert quantised_modules == {"qa_outputs"}
    assert isinstance(reader.model.qa_outputs, torch.nn.Linear)  # the original is left alone
    passage = "作为全市首个国际会展产业园，2021年上半年累计举办展览 23个，展出面积 247.60万平方米。"
    question = "2021年上半年举办了多少个展览？"
    assert variant.read(question, [passage])[0].text == reader.read(question, [passage])[0].text


@pytest.mark.skipif(not DRCD_TEST.exists(), reason="DRCD not in ../shared/data")
def test_drcd_read_under_titles_gives_offsets_into_the_paragraph(reader):
    from eval.drcd import evaluate, read_examples
    from qa.reader_data import load_drcd

    known = next(example for example in load_drcd(DRCD_TEST) if example.qid == KNOWN_SPAN_QID)
    assert known.title  # 梵文
    (reading,) = read_examples(reader, [known], titles=True)
    assert reading.text in {text for text, _ in known.answers}
    assert known.context[reading.start : reading.end] == reading.text
    assert evaluate(reader, [known], Settings().qa.refusal_threshold, titles=True)["em"] == 100.0
