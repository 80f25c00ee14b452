"""What the chat bots (WeChat Official Account, WeCom) share: per-user conversations that
expire when idle, a MsgId cache that computes each reply once, and an `Answer` rendered as
plain text for a phone (span in 【】, a confidence line), cut at a sentence end within the
platform's byte limit.

The protocol modules (`ui.wechat`, `ui.wecom`) only unwrap XML and call
`BotResponder.reply_to_text`; everything about answering lives here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring
from fastapi import Request
from wechatpy.messages import BaseMessage
from wechatpy.utils import WeChatSigner

from corpus.settings import Settings
from qa.errors import QuestionError
from qa.models import Answer
from ui.render import PLAIN_MARKS, confidence_text, example_questions, mark_span

logger = logging.getLogger(__name__)

# Both WeChat and WeCom cut passive text replies at 2048 bytes of UTF-8.
WECHAT_TEXT_LIMIT_BYTES = 2048

RESET_COMMANDS = frozenset({"清空", "重新开始", "清除", "重来"})
WELCOME_EXAMPLES = 3  # as many as a phone shows without scrolling
RESET_TEXT = "好的，已清空之前的对话，请提出新的问题。"
SLOW_TEXT = "问题正在处理中，请稍后再试（可稍候重新发送同一问题）。"
NOT_READY_TEXT = "知识库正在准备中，请稍后再试。"
FAILURE_TEXT = "抱歉，系统暂时出错，请稍后再试。"
REFUSAL_TEXT = "抱歉，现有政策文件中没有找到这个问题的答案。"
EMPTY_QUESTION_TEXT = "请输入您要咨询的问题。"


def welcome_text() -> str:
    """What a new follower reads: what the assistant does, a few example questions (from
    `ui.render.example_questions`), and how to follow up or start over."""
    examples = example_questions()[:WELCOME_EXAMPLES]
    lines = ["您好！我是政策问答助手，根据已收录的政策文件原文回答问题，并注明出处。"]
    if examples:
        lines += ["可以这样问：", *(f"· {question}" for question in examples)]
    lines.append("追问时可直接说“那……呢？”；发送“清空”可重新开始对话。")
    return "\n".join(lines)


def text_only_text() -> str:
    """The reply to a picture, a link or unrecognised voice."""
    examples = example_questions()
    example = f"，例如：\n{examples[0]}" if examples else "。"
    return f"抱歉，目前只能回答文字提问。请直接输入您的问题{example}"


_SENTENCE_END = re.compile(r"[。！？；!?;…]+[”’」』）)]*|\n+")
_HTML_TAG = re.compile(r"<[^<>\n]{1,200}>")
_MARKDOWN_LINK = re.compile(r"\[([^\]\n]+)\]\([^)\s]+\)")
_MARKDOWN_MARKS = re.compile(r"\*\*|__|`+|^\s{0,3}#{1,6}\s*|^\s{0,3}>\s?", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def plain_text(text: str) -> str:
    """`text` without HTML tags or markdown marks, for a chat bubble that shows them raw."""
    text = _HTML_TAG.sub("", text)
    text = _MARKDOWN_LINK.sub(r"\1", text)
    text = _MARKDOWN_MARKS.sub("", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def cut_at_sentence(text: str, max_bytes: int, *, ellipsis: str = "……") -> str:
    """`text` unchanged if it fits in `max_bytes` of UTF-8; otherwise its longest prefix
    ending at a sentence end (。！？； or a line break) that fits. With no sentence end in
    reach, the longest prefix of whole characters that fits, followed by `ellipsis`."""
    if utf8_len(text) <= max_bytes:
        return text
    fitting = text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
    ends = [match.end() for match in _SENTENCE_END.finditer(fitting)]
    if ends and ends[-1] > 0:
        return fitting[: ends[-1]].rstrip()
    room = max(0, max_bytes - utf8_len(ellipsis))
    return text.encode("utf-8")[:room].decode("utf-8", errors="ignore") + ellipsis


def book_title(title: str) -> str:
    """`title` in 《》, its own 《》 turned into 〈〉 as Chinese nests book-title marks."""
    return "《" + title.replace("《", "〈").replace("》", "〉") + "》"


def citation_labels(answer: Answer) -> list[str]:
    """One "《title》section" label per distinct cited section, in citation order, with
    the citation's note (e.g. 已被替代) in brackets."""
    labels: list[str] = []
    for citation in answer.citations:
        label = book_title(plain_text(citation.title))
        if citation.section:
            label += plain_text(citation.section)
        if citation.note:
            label += f"（{citation.note}）"
        if label not in labels:
            labels.append(label)
    return labels


def format_answer_text(answer: Answer, max_bytes: int = WECHAT_TEXT_LIMIT_BYTES) -> str:
    """The answer as plain text for a phone: the answer (or a plain refusal) with its span
    in 【】, its confidence when answered, then its sources; at most `max_bytes` of UTF-8,
    the answer cut at a sentence end so that the confidence line and the sources still fit
    (a span the cut reaches is left unmarked)."""
    if answer.answered:
        text = plain_text(answer.answer)
    else:
        text = plain_text(answer.answer) or REFUSAL_TEXT
    notice = plain_text(answer.notice or "")
    prefix = f"{notice}\n" if notice and notice not in text else ""
    span = plain_text(answer.span or "") if answer.answered else ""
    marks = utf8_len("".join(PLAIN_MARKS)) if span and span in text else 0
    confidence = ""
    if answer.answered:
        confidence = "\n" + confidence_text(answer.confidence, answer.confidence_label)
    labels = citation_labels(answer) if answer.answered else []
    while True:
        sources = ("\n\n出处：\n" + "\n".join(labels)) if labels else ""
        room = max_bytes - utf8_len(confidence + sources)
        # Keep the sources only while they leave the answer a reasonable share of the room.
        if not labels or room >= max_bytes // 2:
            break
        labels.pop()
    body = cut_at_sentence(prefix + text, room - marks)
    if body.startswith(prefix):  # the span is looked for in the answer, not in the notice
        body = prefix + mark_span(body[len(prefix):], span, *PLAIN_MARKS)
    return body + confidence + sources


class ConversationStore:
    """Each user's earlier questions, forgotten after `ttl_s` seconds without a message.

    Thread-safe. Holds at most `max_users` conversations, dropping the least recently
    active first, and at most `max_turns` questions per user.
    """

    def __init__(
        self,
        ttl_s: float,
        max_turns: int,
        *,
        max_users: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ttl_s <= 0 or max_turns < 0 or max_users < 1:
            raise ValueError("ttl_s must be positive, max_turns >= 0, max_users >= 1")
        self.ttl_s = ttl_s
        self.max_turns = max_turns
        self.max_users = max_users
        self._clock = clock
        self._lock = threading.Lock()
        self._questions: OrderedDict[str, tuple[float, tuple[str, ...]]] = OrderedDict()

    def history(self, user_id: str) -> tuple[str, ...]:
        """The user's earlier questions, oldest first; empty when none or expired."""
        with self._lock:
            entry = self._questions.get(user_id)
            if entry is None:
                return ()
            last_seen, questions = entry
            if self._clock() - last_seen > self.ttl_s:
                del self._questions[user_id]
                return ()
            return questions

    def remember(self, user_id: str, question: str) -> None:
        now = self._clock()
        with self._lock:
            entry = self._questions.pop(user_id, None)
            questions = entry[1] if entry and now - entry[0] <= self.ttl_s else ()
            if self.max_turns:
                questions = (*questions, question)[-self.max_turns :]
            self._questions[user_id] = (now, questions)
            self._drop_expired_and_excess(now)

    def reset(self, user_id: str) -> None:
        with self._lock:
            self._questions.pop(user_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._questions)

    def _drop_expired_and_excess(self, now: float) -> None:
        # Entries are ordered by last activity, so expired ones are at the front.
        while self._questions:
            user_id, (last_seen, _) = next(iter(self._questions.items()))
            if now - last_seen <= self.ttl_s and len(self._questions) <= self.max_users:
                break
            del self._questions[user_id]


class ReplyCache:
    """Computes the reply to each message key once: a retry or a concurrent duplicate of
    the same MsgId gets the future of the first computation.

    Thread-safe. Keys live `ttl_s` seconds (WeChat retries within 15 s); at most
    `max_entries` are kept, the oldest dropped first.
    """

    def __init__(
        self,
        executor: ThreadPoolExecutor,
        *,
        ttl_s: float = 300.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s and max_entries must be positive")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._executor = executor
        self._clock = clock
        self._lock = threading.Lock()
        self._futures: OrderedDict[str, tuple[float, Future[str]]] = OrderedDict()

    def reply_for(self, key: str, compute: Callable[[], str]) -> Future[str]:
        """The future reply for `key`; `compute` runs (on the executor) only for a key not
        seen within `ttl_s`."""
        now = self._clock()
        with self._lock:
            while self._futures:
                oldest_key, (created, _) = next(iter(self._futures.items()))
                if now - created <= self.ttl_s and len(self._futures) < self.max_entries:
                    break
                del self._futures[oldest_key]
            entry = self._futures.get(key)
            if entry is not None:
                return entry[1]
            future = self._executor.submit(compute)
            self._futures[key] = (now, future)
            return future

    def __len__(self) -> int:
        with self._lock:
            return len(self._futures)


class BotRequestError(Exception):
    """A callback request refused before any answering; `message` goes back as plain text."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


def signature_matches(signature: str, token: str, *parts: str) -> bool:
    """WeChat's callback signature: SHA-1 of the sorted token and parts, compared in
    constant time."""
    signer = WeChatSigner()
    signer.add_data(token, *parts)
    return hmac.compare_digest(signer.signature.encode(), (signature or "").encode())


async def read_capped_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) as soon as it passes `max_bytes`.

    :raises BotRequestError: when the body is too large.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BotRequestError(413, "消息体过大")
    body = bytearray()
    async for piece in request.stream():
        body.extend(piece)
        if len(body) > max_bytes:
            raise BotRequestError(413, "消息体过大")
    return bytes(body)


# Fields read as text (by us or by wechatpy's reply): markup inside one would reach wechatpy
# as a dict, not a string. Event containers such as <ScanCodeInfo> may nest, and are not read.
TEXT_FIELDS = frozenset({
    "ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "MsgID",
    "Event", "EventKey", "Recognition", "Encrypt", "AgentID",
})


def parse_flat_xml(xml: bytes | str) -> dict[str, str]:
    """The children of a WeChat-style `<xml>` root as tag -> text, parsed with defusedxml so
    that DTDs, entity declarations (billion laughs) and external references are refused
    before the text reaches wechatpy's own parser.

    :raises BotRequestError: (400) for malformed or unsafe XML, a root other than <xml>, or
        elements inside a text field (`<Content>a<b>b</b></Content>`).
    """
    try:
        root = defused_fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise BotRequestError(400, "不接受含 DTD 或实体声明的 XML") from None
    except (ParseError, ValueError, UnicodeError):
        raise BotRequestError(400, "XML 格式错误") from None
    if root.tag != "xml":
        raise BotRequestError(400, "XML 根元素应为 <xml>")
    if any(child.tag in TEXT_FIELDS and len(child) for child in root):
        raise BotRequestError(400, "消息字段中不能包含 XML 元素")
    return {child.tag: (child.text or "") for child in root}


def message_key(message: BaseMessage, fallback_text: str) -> str:
    """A key unique per message and stable across retries: the MsgId, or (for messages
    without one) sender, create time and a digest of the text, as WeChat suggests."""
    raw_id = message._data.get("MsgId") or message._data.get("MsgID")
    if raw_id:
        return f"{message.source}:{raw_id}"
    digest = hashlib.sha1(fallback_text.encode("utf-8")).hexdigest()[:16]
    return f"{message.source}:{message._data.get('CreateTime', '')}:{digest}"


def safe_cdata(text: str) -> str:
    """`text` that cannot close the CDATA section wechatpy wraps it in."""
    return text.replace("]]>", "]] >")


@dataclass(frozen=True)
class IncomingText:
    """A text message from a bot platform, reduced to what answering needs."""

    user_id: str  # FromUserName: the OpenID (WeChat) or UserID (WeCom)
    message_key: str  # unique per message and stable across the platform's retries
    text: str


class BotResponder:
    """Turns a user's text message into the text reply, within the platform's deadline.

    Owns the conversations, the reply cache and the worker threads that call the
    assistant; the assistant itself is passed per call because the app may swap it.
    """

    def __init__(self, settings: Settings, *, max_reply_bytes: int = WECHAT_TEXT_LIMIT_BYTES):
        self.timeout_s = settings.bot_reply_timeout_s
        self.log_questions = settings.log_questions
        self.max_reply_bytes = max_reply_bytes
        self.conversations = ConversationStore(
            settings.bot_session_ttl_s, settings.max_history_turns
        )
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bot-answer")
        self.replies = ReplyCache(self._executor)

    async def reply_to_text(self, assistant, message: IncomingText) -> str:
        """The reply text: the answer, a reset confirmation, or `SLOW_TEXT` when the answer
        is not ready within `timeout_s` (a retry of the same message then gets the answer,
        which keeps being computed)."""
        if assistant is None:
            return NOT_READY_TEXT
        future = self.replies.reply_for(
            message.message_key, lambda: self.compute_reply(assistant, message)
        )
        try:
            # shield: a reply that misses this deadline keeps computing for the retry.
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.timeout_s
            )
        except TimeoutError:
            logger.warning(
                "bot reply for %s not ready within %.1f s", message.message_key, self.timeout_s
            )
            return SLOW_TEXT

    def compute_reply(self, assistant, message: IncomingText) -> str:
        text = message.text.strip()
        if not text:
            return EMPTY_QUESTION_TEXT
        if text.rstrip("。！!.～~ ") in RESET_COMMANDS:
            self.conversations.reset(message.user_id)
            return RESET_TEXT
        history = self.conversations.history(message.user_id)
        try:
            answer = assistant.ask(text, history)
        except QuestionError as error:
            return cut_at_sentence(error.message, self.max_reply_bytes)
        except Exception:
            logger.exception("bot answer failed for %s", message.message_key)
            return FAILURE_TEXT
        self.conversations.remember(message.user_id, text)
        return format_answer_text(answer, self.max_reply_bytes)

    async def reply_to_request(self, request: Request, message: BaseMessage) -> str | None:
        """`reply_to_message` with the assistant serving `request` now (the app may swap
        it); the question goes into the request log only when settings allow."""
        if self.log_questions and message.type == "text":
            request.state.question = message.content or ""
        return await self.reply_to_message(getattr(request.app.state, "assistant", None), message)

    async def reply_to_message(self, assistant, message: BaseMessage) -> str | None:
        """The text reply to a parsed wechatpy message, or None when the platform expects
        no reply (most events): text (and recognised voice) is answered, a subscription is
        welcomed, other message types get a polite "text only" note."""
        if message.type == "event":
            return welcome_text() if getattr(message, "event", "").startswith("subscribe") else None
        text = None
        if message.type == "text":
            text = message.content or ""
        elif message.type == "voice" and message.recognition:
            text = message.recognition  # WeChat's speech recognition, when the account enables it
        if text is None:
            return text_only_text()
        incoming = IncomingText(
            user_id=message.source or "", message_key=message_key(message, text), text=text
        )
        return safe_cdata(await self.reply_to_text(assistant, incoming))
