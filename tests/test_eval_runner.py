"""The eval runner end to end on a few real seed items against the real seed assistant, the
reports it writes, and the CMRC benchmark on a tiny SQuAD-format file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from eval.dataset import DEFAULT_PATH, EvalItem, load_items, write_items

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def few_items() -> list[EvalItem]:
    """A handful of real items: answerable ones of both styles, a follow-up, an
    unanswerable one."""
    items = load_items(DEFAULT_PATH)
    chosen: list[EvalItem] = []
    wanted = [
        lambda i: i.answerable and i.style == "document" and i.type != "followup",
        lambda i: i.answerable and i.style == "user" and i.type != "followup",
        lambda i: i.type == "followup",
        lambda i: not i.answerable,
    ]
    for test in wanted:
        chosen.append(next(item for item in items if test(item) and item not in chosen))
    return chosen


def test_runner_judges_real_items_and_writes_json_markdown_png(
    few_items, seed_index, seed_settings, tmp_path
):
    from eval.metrics import summarize
    from eval.report import format_table, load_run, write_reports
    from eval.runner import EvalRunner

    too_long = EvalItem(
        id="q9999", split="dev", type="number", style="user",
        question="请问" * (seed_settings.qa.max_question_chars + 1), history=(),
        answerable=True, answer="", keywords=("无",), evidence=(),
    )
    items = [*few_items, too_long]
    run = EvalRunner(seed_index, seed_settings).run(
        items, ["bm25", "hybrid"], name="seed-mini", split="dev", dataset="mini"
    )

    assert run.configs == ("bm25", "hybrid")
    assert run.commit != "" and run.settings["retrieval_mode"] == seed_settings.qa.retrieval_mode
    for config, row in zip(run.configs, run.rows):
        results = run.results[config]
        assert [r.item_id for r in results] == [item.id for item in items]
        assert row == summarize(config, results)
        by_id = {r.item_id: r for r in results}
        rejected = by_id["q9999"]
        assert not rejected.answered and rejected.error and "过长" in rejected.error
        for result in results[:-1]:
            assert result.error is None and result.latency_ms > 0
            assert result.top_score is not None  # the assistant's evidence score
        unanswerable = by_id[few_items[3].id]
        assert unanswerable.evidence_rank is None and not unanswerable.citation_correct
    # the judgement agrees with the metrics applied by hand to the same (deterministic) answers
    from eval.metrics import evidence_rank, keywords_found
    from eval.runner import config_settings
    from qa import Assistant

    hybrid_assistant = Assistant.over(seed_index, config_settings(seed_settings, "hybrid"))
    for item, result in zip(few_items, run.results["hybrid"]):
        answer = hybrid_assistant.ask(item.question, history=item.history)
        assert result.answered == answer.answered and result.answer == answer.answer
        expected_rank = evidence_rank([p.quote for p in answer.passages],
                                      [e.quote for e in item.evidence]) if item.answerable else None
        assert result.evidence_rank == expected_rank
        assert result.answer_correct == (item.answerable and answer.answered and
                                         keywords_found(answer.answer, item.keywords))
        assert result.top_score == answer.extra["evidence_score"]
    assert any(r.evidence_rank == 1 for r in run.results["hybrid"])  # retrieval works at all

    table = format_table(run.rows)
    print(table)
    assert table.splitlines()[0].split()[:4] == ["config", "items", "hit@1", "hit@3"]
    assert table.splitlines()[2].startswith("bm25")

    files = write_reports(run, tmp_path)
    assert files.json == tmp_path / "seed-mini.json"
    assert load_run(files.json).rows == run.rows
    saved = json.loads(files.json.read_text(encoding="utf-8"))
    assert len(saved["results"]["hybrid"]) == len(items)
    assert saved["settings"]["top_k"] == seed_settings.qa.top_k
    markdown = files.markdown.read_text(encoding="utf-8")
    assert "| config | items | hit@1 |" in markdown
    assert "## Answer accuracy by type" in markdown and "## Failures" in markdown
    assert "q9999" in markdown  # the rejected item is listed as a failure
    assert (tmp_path / "seed-mini-accuracy.png").read_bytes()[:8] == PNG_SIGNATURE
    assert all(image.read_bytes()[:8] == PNG_SIGNATURE for image in files.images)
    assert all(f"]({image.name})" in markdown for image in files.images)


def test_eval_command_prints_the_table_failures_and_sweep(
    few_items, seed_index_dir, tmp_path
):
    from eval.cli import eval_command

    subset = tmp_path / "mini_qa.jsonl"
    write_items([item for item in few_items], subset)
    out = tmp_path / "reports"
    result = CliRunner().invoke(
        eval_command,
        ["--split", "all", "--configs", "bm25", "--index-dir", str(seed_index_dir),
         "--set", str(subset), "--out", str(out), "--show-failures", "5", "--tune-refusal"],
    )
    assert result.exit_code == 0, result.output
    assert "hit@1" in result.output and "\nbm25 " in result.output
    assert "Refusal threshold sweep" in result.output
    sweep = result.output.split("Refusal threshold sweep")[1].splitlines()
    assert sweep[1].startswith("bm25: threshold")
    assert len(sweep[2].split()) == 4  # threshold, refusal R, wrongly refused, answer acc
    assert (out / "mini-all-tune.json").is_file() and (out / "mini-all-tune.md").is_file()
    assert (out / "mini-all-tune-accuracy.png").is_file()
    saved = json.loads((out / "mini-all-tune.json").read_text(encoding="utf-8"))
    assert saved["settings"]["refusal_threshold"] == 0.0
    assert [r["id"] for r in saved["results"]["bm25"]] == [item.id for item in few_items]


def test_eval_command_rejects_an_unknown_configuration(tmp_path):
    from eval.cli import eval_command

    result = CliRunner().invoke(eval_command, ["--configs", "bm25,magic", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown configuration 'magic'" in result.output


TINY_CMRC = {
    "version": "v1.0",
    "data": [
        {
            "id": "DEV_A", "title": "长江",
            "paragraphs": [{
                "id": "DEV_A",
                "context": "长江是中国第一长河，全长约6300公里，发源于青藏高原的唐古拉山脉。"
                           "长江流域面积约180万平方公里，干流流经十一个省级行政区。",
                "qas": [
                    {"id": "DEV_A_QUERY_0", "question": "长江全长约多少公里？",
                     "answers": [{"text": "6300公里", "answer_start": 13},
                                 {"text": "约6300公里", "answer_start": 12}]},
                    {"id": "DEV_A_QUERY_1", "question": "长江流域面积约为多少？",
                     "answers": [{"text": "180万平方公里", "answer_start": 39}]},
                ],
            }],
        },
        {
            "id": "DEV_B", "title": "黄河",
            "paragraphs": [{
                "id": "DEV_B",
                "context": "黄河是中国第二长河，全长约5464公里，被称为中华民族的母亲河。"
                           "黄河发源于青海省巴颜喀拉山脉，注入渤海。",
                "qas": [
                    {"id": "DEV_B_QUERY_0", "question": "黄河被称为什么？",
                     "answers": [{"text": "中华民族的母亲河", "answer_start": 22}]},
                ],
            }],
        },
    ],
}


@pytest.fixture()
def tiny_cmrc(tmp_path) -> Path:
    path = tmp_path / "cmrc_tiny.json"
    path.write_text(json.dumps(TINY_CMRC, ensure_ascii=False), encoding="utf-8")
    return path


def test_cmrc_loader_reads_paragraphs_and_questions(tiny_cmrc):
    from eval.cmrc import load_cmrc, paragraph_documents

    cmrc_set = load_cmrc(tiny_cmrc)
    assert [p.paragraph_id for p in cmrc_set.paragraphs] == ["DEV_A", "DEV_B"]
    assert [p.title for p in cmrc_set.paragraphs] == ["长江", "黄河"]
    assert [(q.question_id, q.paragraph_id) for q in cmrc_set.questions] == [
        ("DEV_A_QUERY_0", "DEV_A"), ("DEV_A_QUERY_1", "DEV_A"), ("DEV_B_QUERY_0", "DEV_B")
    ]
    assert cmrc_set.questions[0].answers == ("6300公里", "约6300公里")
    documents = paragraph_documents(cmrc_set, tiny_cmrc.name)
    first = documents[0]
    assert (first.doc_id, first.title, first.source_file) == ("DEV_A", "长江", tiny_cmrc.name)
    assert first.text == TINY_CMRC["data"][0]["paragraphs"][0]["context"]
    assert [(s.path, s.char_span) for s in first.sections] == [((), (0, len(first.text)))]


def test_cmrc_loader_rejects_a_file_of_another_shape(tmp_path):
    from eval.cmrc import CmrcFormatError, load_cmrc

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}),
                     encoding="utf-8")
    with pytest.raises(CmrcFormatError, match="unexpected structure"):
        load_cmrc(wrong)
    wrong.write_text("not json", encoding="utf-8")
    with pytest.raises(CmrcFormatError, match="not a JSON file"):
        load_cmrc(wrong)


def test_cmrc_command_indexes_the_paragraphs_and_scores_every_question(tiny_cmrc, tmp_path):
    from eval.cli import cmrc

    out = tmp_path / "reports"
    result = CliRunner().invoke(
        cmrc,
        ["--path", str(tiny_cmrc), "--index-dir", str(tmp_path / "cmrc-index"),
         "--out", str(out), "--configs", "bm25,hybrid"],
    )
    assert result.exit_code == 0, result.output
    assert "hit@1" in result.output and "EM" in result.output
    saved = json.loads((out / "cmrc2018.json").read_text(encoding="utf-8"))
    assert "Cui et al." in saved["attribution"] and "CC BY-SA 4.0" in saved["attribution"]
    assert saved["paragraphs"] == 2 and saved["questions"] == 3
    bm25 = next(row for row in saved["metrics"] if row["config"] == "bm25")
    assert bm25["hit_at_1"] == 1.0  # each question names its river: BM25 cannot miss
    columns = saved["result_columns"]
    rows = [dict(zip(columns, row)) for row in saved["results"]["hybrid"]]
    assert [row["question_id"] for row in rows] == ["DEV_A_QUERY_0", "DEV_A_QUERY_1",
                                                     "DEV_B_QUERY_0"]
    for row in rows:
        assert 0.0 <= row["exact_match"] <= row["f1"] <= 1.0
    predictions = (out / "cmrc2018-predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(predictions) == 2 * 3  # two configurations, three questions
    assert {"config", "prediction", "f1"} <= set(json.loads(predictions[0]))
    markdown = (out / "cmrc2018.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in markdown and "| bm25 | 3 |" in markdown


def test_cmrc_command_skips_when_the_file_is_absent(tmp_path):
    from eval.cli import cmrc

    missing = tmp_path / "absent.json"
    result = CliRunner().invoke(cmrc, ["--path", str(missing), "--out", str(tmp_path)])
    assert result.exit_code == 0
    assert f"CMRC 2018 data not found at {missing}: skipping" in result.output
    assert not (tmp_path / "cmrc2018.json").exists()


def test_bench_times_retrieval_and_answers_for_every_question(few_items, seed_index,
                                                              seed_settings, tmp_path):
    from eval.bench_qa import bench_config, format_latency_table, write_bench

    questions = [(item.question, tuple(item.history)) for item in few_items]
    row = bench_config(seed_index, seed_settings, "bm25", questions, warmup=1, repeats=2)
    assert row.config == "bm25" and row.calls == 2 * len(questions)
    assert 0 < row.retrieval_p50_ms <= row.retrieval_p95_ms
    assert 0 < row.answer_p50_ms <= row.answer_p95_ms
    assert "retrieve p50" in format_latency_table([row])
    saved = json.loads(write_bench([row], seed_settings, tmp_path / "bench.json", "mini", 1, 2)
                       .read_text(encoding="utf-8"))
    assert saved["rows"][0]["calls"] == row.calls and saved["settings"]["top_k"] == 5
