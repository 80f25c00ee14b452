"""The Chinese chat page (Gradio Blocks), mounted at "/" by `ui.app.create_app`.

Callbacks fetch the assistant through `assistant_source()` on every event instead of
holding it, so swapping `app.state.assistant` takes effect on the next question. The page
loads nothing from outside: system fonts, no analytics, no share link.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import gradio as gr

from corpus.settings import Settings
from qa.errors import QuestionError
from ui.feedback import FeedbackStore
from ui.render import example_questions, literal_html, render

if TYPE_CHECKING:
    from qa import Assistant

log = logging.getLogger("policyqa.chat")

AssistantSource = Callable[[], "Assistant | None"]

SYSTEM_FONTS = (
    "system-ui",
    "-apple-system",
    "PingFang SC",
    "Hiragino Sans GB",
    "Microsoft YaHei",
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "sans-serif",
)
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")

PAGE_CSS = """
.gradio-container { max-width: 960px !important; margin: 0 auto; }
.pqa-answer { line-height: 1.7; overflow-wrap: anywhere; }
.pqa-refused { border-left: 4px solid #d97706; padding-left: 8px; }
.pqa-meta { color: #6b7280; font-size: 0.85em; margin-top: 4px; }
.pqa-confidence { color: #4b5563; font-size: 0.85em; margin-top: 2px; }
.pqa-sources { margin: 8px 0 0 0; padding-left: 1.4em; }
.pqa-sources li { margin-bottom: 8px; overflow-wrap: anywhere; }
.pqa-source-title { font-weight: 600; }
.pqa-section { color: #4b5563; }
.pqa-quote { margin: 4px 0 0 0; padding: 4px 8px; border-left: 3px solid #d1d5db;
             color: #374151; font-size: 0.92em; }
.pqa-note { color: #b45309; font-size: 0.85em; }
.pqa-answer mark { background: #fde68a; color: inherit; padding: 0 1px; }
@media (max-width: 480px) {
  .gradio-container { padding: 4px !important; }
  .pqa-quote { font-size: 0.88em; }
}
"""

CHAT_ERROR = "抱歉，系统出错了，请稍后再试。"
NOT_READY = "索引尚未加载，请稍后再试。"


def chat_theme() -> gr.themes.Base:
    """The default look, with system fonts so nothing is fetched at page load."""
    return gr.themes.Default(font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


def _document_choices(assistant_source: AssistantSource) -> list[tuple[str, str]]:
    assistant = assistant_source()
    if assistant is None:
        return []
    return [(document.title, document.doc_id) for document in assistant.documents]


def chat_messages(turns: Sequence[dict]) -> list[dict]:
    """The chatbot's messages for `turns`: each question, shown as typed (the chatbot renders
    Markdown and HTML, so it goes in as `literal_html`), then its reply."""
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": literal_html(turn["question"])})
        messages.append({"role": "assistant", "content": turn["reply"]})
    return messages


class ChatHandlers:
    """The page's event callbacks. The conversation lives on the server, in the session's
    `turns` (one dict per question: question, history, answer, reply), and the chatbot only
    shows it: the browser never sends the conversation back, so no client-made message is
    ever validated (whose errors Gradio prints with their text, whatever log_questions says)
    or rendered."""

    def __init__(
        self, settings: Settings, assistant_source: AssistantSource, feedback: FeedbackStore
    ):
        self.settings = settings
        self.assistant_source = assistant_source
        self.feedback = feedback

    def ask(
        self,
        question: str,
        turns: list[dict],
        documents: list[str] | None,
        in_force_only: bool,
    ) -> tuple[list[dict], list[dict], str]:
        """Append the question and its answer; returns (messages, turns, cleared textbox)."""
        question = (question or "").strip()
        if not question:
            return chat_messages(turns), turns, ""
        earlier = [turn["question"] for turn in turns if turn.get("answer")]
        keep = self.settings.qa.max_history_turns
        history = earlier[-keep:] if keep else []
        answer: dict | None = None
        assistant = self.assistant_source()
        if assistant is None:
            reply = NOT_READY
        elif len(question) > self.settings.qa.max_question_chars:
            reply = f"问题过长（最多 {self.settings.qa.max_question_chars} 个字），请精简后再问。"
        else:
            try:
                result = assistant.ask(
                    question, history, documents=documents or None, in_force_only=in_force_only
                )
                answer = result.to_dict()
                reply = render(answer, "markdown", question=question)
            except QuestionError as error:
                reply = error.message
            except Exception:
                log.exception("chat question failed")
                reply = CHAT_ERROR
        turn = {"question": question, "history": history, "answer": answer, "reply": reply}
        turns = [*turns, turn]
        return chat_messages(turns), turns, ""

    def rate(self, turns: list[dict], event: gr.LikeData) -> list[dict]:
        """Store a thumbs up/down on the rated answer. A changed or taken-back rating
        replaces the turn's earlier row, so each answer counts once."""
        index = event.index if isinstance(event.index, int) else event.index[0]
        turn_number = index // 2  # each turn adds a user then an assistant message
        if not 0 <= turn_number < len(turns) or not turns[turn_number].get("answer"):
            return turns
        turn = dict(turns[turn_number])
        if turn.get("feedback_id") is not None:
            self.feedback.retract(turn.pop("feedback_id"))
        # Gradio sends True / False for thumbs up / down and "" when one is taken back.
        if event.liked is True or event.liked is False:
            item = self.feedback.add(
                rating="up" if event.liked else "down",
                question=turn["question"],
                answer=turn["answer"],
                history=turn["history"],
                source="chat",
            )
            turn["feedback_id"] = item.id
            gr.Info("感谢您的反馈！")
        return [*turns[:turn_number], turn, *turns[turn_number + 1 :]]

    def clear(self) -> tuple[list[dict], list[dict], str]:
        return [], [], ""

    def refresh_documents(self) -> dict[str, Any]:
        return gr.update(choices=_document_choices(self.assistant_source))


def build_chat(
    settings: Settings, assistant_source: AssistantSource, feedback: FeedbackStore
) -> gr.Blocks:
    """The chat page. Theme and CSS go to `gr.mount_gradio_app` (see `chat_theme`,
    `PAGE_CSS`), where Gradio 6 takes them."""
    # Gradio's analytics helpers read this variable on every call, not only at import.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    handlers = ChatHandlers(settings, assistant_source, feedback)
    examples = example_questions()
    with gr.Blocks(title="政策问答助手", analytics_enabled=False) as page:
        gr.Markdown(
            "## 政策问答助手\n"
            "根据虹桥国际开放枢纽等政策文件原文作答，并注明出处；文件中没有的内容会如实说明。",
            elem_id="pqa-intro",
        )
        turns = gr.State([])
        chatbot = gr.Chatbot(
            label="对话",
            elem_id="pqa-chatbot",
            height="62vh",
            min_height=320,
            feedback_options=("Like", "Dislike"),
            buttons=["copy"],
            placeholder=f"请输入问题，例如：{examples[0]}" if examples else "请输入问题",
            layout="bubble",
            # Quotes are shown literally (issue 15): no LaTeX; document text reaches the
            # Markdown renderer as character references (ui.render.literal_html).
            latex_delimiters=[],
        )
        with gr.Row(equal_height=True):
            question = gr.Textbox(
                label="问题",
                show_label=False,
                placeholder="请输入您的问题，按回车发送",
                elem_id="pqa-question",
                max_lines=4,
                max_length=settings.qa.max_question_chars,
                scale=5,
                min_width=200,
            )
            send = gr.Button("发送", variant="primary", elem_id="pqa-send", scale=1, min_width=70)
        with gr.Accordion("筛选（可选）", open=False, elem_id="pqa-filters"):
            documents = gr.Dropdown(
                label="只在这些文档中查找",
                choices=[],
                multiselect=True,
                elem_id="pqa-documents",
            )
            in_force_only = gr.Checkbox(
                label="只用现行有效的政策文件", value=False, elem_id="pqa-in-force"
            )
        clear = gr.Button("清空对话", elem_id="pqa-clear", variant="secondary")
        if examples:
            gr.Examples(
                examples=[[text] for text in examples],
                inputs=[question],
                label="示例问题（点击填入）",
                elem_id="pqa-examples",
            )

        ask_inputs = [question, turns, documents, in_force_only]
        ask_outputs = [chatbot, turns, question]
        question.submit(handlers.ask, ask_inputs, ask_outputs, api_name=False)
        send.click(handlers.ask, ask_inputs, ask_outputs, api_name=False)
        clear.click(handlers.clear, None, [chatbot, turns, question], api_name=False)
        chatbot.clear(handlers.clear, None, [chatbot, turns, question], api_name=False)
        chatbot.like(handlers.rate, [turns], [turns], api_name=False)
        page.load(handlers.refresh_documents, None, [documents], api_name=False)
    page.queue(default_concurrency_limit=settings.service.chat_concurrency)
    return page
