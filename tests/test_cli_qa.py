"""`policyqa ask` and `policyqa chat` over the real seed index."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from ui.cli import main


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def test_ask_prints_the_answer_and_numbered_sources(seed_index_dir):
    result = run("ask", "虹桥国际开放枢纽包括哪些区域？", "--index-dir", str(seed_index_dir))
    assert result.exit_code == 0
    assert "昆山市" in result.output
    assert "[1] 《虹桥国际开放枢纽建设总体方案》 一、建设背景" in result.output
    assert re.search(r"^置信度：[高中低]（[01]\.\d\d）$", result.output, re.MULTILINE)
    assert "\x1b[" not in result.output  # not a terminal: no bold, 【】 instead


def test_ask_json_is_the_api_answer(seed_index_dir):
    result = run("ask", "虹桥国际开放枢纽包括哪些区域？", "--json", "--index-dir", str(seed_index_dir))
    data = json.loads(result.output)
    assert data["answered"] and data["citations"][0]["doc_id"] == "001"
    assert len(data["passages"]) == 5


def test_ask_with_history_shows_the_rewritten_query(seed_index_dir):
    result = run(
        "ask", "那浙江的呢？", "--history", "虹桥国际开放枢纽在江苏包括哪些地方？",
        "--index-dir", str(seed_index_dir),
    )
    assert result.exit_code == 0
    assert "按上下文理解为" in result.output and "嘉兴" in result.output


def test_ask_refusal_lists_the_closest_passages(seed_index_dir):
    result = run("ask", "今天上海天气怎么样？", "--index-dir", str(seed_index_dir))
    assert "知识库中没有找到" in result.output and "最接近的段落" in result.output
    assert "置信度" not in result.output


def test_ask_empty_question_is_one_error_line(seed_index_dir):
    result = CliRunner().invoke(main, ["ask", "   ", "--index-dir", str(seed_index_dir)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "不能为空" in result.output


def test_ask_without_an_index_says_to_build_one(tmp_path):
    result = CliRunner().invoke(main, ["ask", "进博会", "--index-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "policyqa build" in result.output


def test_chat_keeps_the_conversation_until_reset(seed_index_dir):
    result = run(
        "chat", "--index-dir", str(seed_index_dir),
        input="虹桥国际开放枢纽在江苏包括哪些地方？\n浙江的呢？\n清空\n浙江的呢？\n退出\n",
    )
    assert result.exit_code == 0
    first_followup, after_reset = result.output.split("已清空对话。")
    assert "按上下文理解为" in first_followup
    assert "按上下文理解为" not in after_reset
