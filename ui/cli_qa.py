"""`policyqa ask` and `policyqa chat`: the assistant in a terminal."""

from __future__ import annotations

import json
import sys

import click

from ui.cli_common import index_dir_option, settings_with
from ui.render import PLAIN_MARKS, confidence_text, mark_span

# Bold on, bold off: how a terminal shows the span when stdout is one.
TERMINAL_BOLD = ("\x1b[1m", "\x1b[22m")


def _load_assistant(settings):
    from index import IndexLoadError
    from qa import Assistant

    try:
        return Assistant.load(settings)
    except IndexLoadError as error:
        raise click.ClickException(f"{error} (run `policyqa build` first)") from None


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def format_answer(answer, bold: bool = False) -> str:
    """The answer with its span marked (terminal bold when `bold`, else 【】), its
    confidence when answered, then its numbered sources, as plain readable text."""
    if answer.answered:
        before, after = TERMINAL_BOLD if bold else PLAIN_MARKS
        lines = [mark_span(answer.answer, answer.span, before, after),
                 confidence_text(answer.confidence, answer.confidence_label)]
    else:
        lines = [answer.answer]
    if answer.notice and answer.notice != answer.answer:
        lines.insert(0, f"（{answer.notice}）")
    if answer.query != answer.question:
        lines.insert(0, f"（按上下文理解为：{answer.query}）")
    sources = answer.citations if answer.answered else answer.passages[:3]
    if sources:
        lines.append("")
        lines.append("来源：" if answer.answered else "最接近的段落：")
    for number, citation in enumerate(sources, start=1):
        note = f"（{citation.note}）" if citation.note else ""
        lines.append(f"[{number}] 《{citation.title}》 {citation.section}{note}  ({citation.source_file})")
        if not answer.answered:
            lines.append(f"    {citation.quote[:120]}…")
    return "\n".join(lines)


@click.command()
@click.argument("question")
@click.option("--history", "-H", multiple=True, help="an earlier question of the conversation (repeatable, oldest first)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON")
@click.option("--top-k", type=int, default=None, help="passages to return")
@click.option("--document", "-d", "documents", multiple=True, help="restrict to a document id (repeatable)")
@click.option("--mode", type=click.Choice(["hybrid", "bm25", "dense"]), default=None)
@index_dir_option
def ask(question, history, as_json, top_k, documents, mode, index_dir):
    """Answer one question from the documents, with citations.

    Examples:

        policyqa ask "虹桥国际开放枢纽包括哪些区域？"

        policyqa ask "那它的面积呢？" --history "虹桥商务区在哪里？"

        policyqa ask "进博会办了几届" --json
    """
    from qa import QuestionError

    settings = settings_with(index_dir=index_dir, retrieval_mode=mode)
    assistant = _load_assistant(settings)
    try:
        answer = assistant.ask(question, list(history), top_k=top_k, documents=list(documents) or None)
    except QuestionError as error:
        raise click.ClickException(error.message) from None
    if as_json:
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
    else:
        click.echo(format_answer(answer, bold=_stdout_is_terminal()))


@click.command()
@index_dir_option
def chat(index_dir):
    """Chat in the terminal; follow-up questions use the conversation so far.

    Type 清空 (or /reset) to start over, 退出 (or /quit, Ctrl-D) to leave.

    Examples:

        policyqa chat
    """
    from qa import QuestionError

    assistant = _load_assistant(settings_with(index_dir=index_dir))
    history: list[str] = []
    click.echo("政策问答助手：请输入问题（输入“清空”重新开始，“退出”结束）。")
    while True:
        try:
            question = click.prompt("问", prompt_suffix="> ", default="", show_default=False)
        except (EOFError, click.Abort):
            click.echo()
            return
        command = question.strip()
        if command in {"退出", "/quit", "/exit"}:
            return
        if command in {"清空", "/reset"}:
            history.clear()
            click.echo("已清空对话。")
            continue
        try:
            answer = assistant.ask(question, history[-assistant.settings.max_history_turns:])
        except QuestionError as error:
            click.echo(error.message)
            continue
        click.echo(format_answer(answer, bold=_stdout_is_terminal()))
        click.echo()
        history.append(answer.question)
