"""`policyqa ask` and `policyqa chat`: the assistant in a terminal."""

from __future__ import annotations

import json
import sys

import click

from ui.cli_common import index_dir_option, settings_with
from ui.render import TERMINAL_BOLD, render


def _load_assistant(settings):
    from index import IndexLoadError
    from qa import Assistant

    try:
        return Assistant.load(settings)
    except IndexLoadError as error:
        raise click.ClickException(f"{error} (run `policyqa build` first)") from None


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _shown(answer) -> str:
    """The answer as text; the span in terminal bold when stdout is a terminal."""
    return render(answer, "text", marks=TERMINAL_BOLD if _stdout_is_terminal() else None)


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
        click.echo(_shown(answer))


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
            answer = assistant.ask(question, history[-assistant.settings.qa.max_history_turns:])
        except QuestionError as error:
            click.echo(error.message)
            continue
        click.echo(_shown(answer))
        click.echo()
        history.append(answer.question)
