"""What the chat bots (WeChat Official Account, WeCom) share: per-user conversations that
expire when idle and a MsgId cache that computes each reply once (both `cachetools.TTLCache`),
and the reply text (`ui.render.render(answer, "wechat")`: span in 【】, a confidence line, cut
at a sentence end within the platform's byte limit).

The protocol modules (`ui.wechat`, `ui.wecom`) only unwrap XML and call
`BotResponder.reply_to_text`; everything about answering lives here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from xml.etree.ElementTree import ParseError

from cachetools import TTLCache
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring
from fastapi import Request
from wechatpy.messages import BaseMessage
from wechatpy.utils import WeChatSigner

from corpus.settings import Settings
from qa.errors import QuestionError
from ui.render import WECHAT_TEXT_LIMIT_BYTES, cut_at_sentence, example_questions, render

logger = logging.getLogger(__name__)

RESET_COMMANDS = frozenset({"清空", "重新开始", "清除", "重来"})
WELCOME_EXAMPLES = 3  # as many as a phone shows without scrolling
RESET_TEXT = "好的，已清空之前的对话，请提出新的问题。"
SLOW_TEXT = "问题正在处理中，请稍后再试（可稍候重新发送同一问题）。"
NOT_READY_TEXT = "知识库正在准备中，请稍后再试。"
FAILURE_TEXT = "抱歉，系统暂时出错，请稍后再试。"
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
        self.max_turns = max_turns
        self._lock = threading.Lock()
        # Storing a user's questions again restarts their time to live.
        self._questions: TTLCache[str, tuple[str, ...]] = TTLCache(max_users, ttl_s, timer=clock)

    def history(self, user_id: str) -> tuple[str, ...]:
        """The user's earlier questions, oldest first; empty when none or expired."""
        with self._lock:
            return self._questions.get(user_id, ())

    def remember(self, user_id: str, question: str) -> None:
        with self._lock:
            questions = self._questions.get(user_id, ())
            if self.max_turns:
                questions = (*questions, question)[-self.max_turns :]
            self._questions[user_id] = questions

    def reset(self, user_id: str) -> None:
        with self._lock:
            self._questions.pop(user_id, None)

    def __len__(self) -> int:
        with self._lock:
            self._questions.expire()
            return len(self._questions)


class ReplyCache:
    """Computes the reply to each message key once: a retry or a concurrent duplicate of
    the same MsgId gets the future of the first computation.

    Thread-safe. Keys live `ttl_s` seconds from their first message (WeChat retries within
    15 s); at most `max_entries` are kept, the least recently used dropped first.
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
        self._executor = executor
        self._lock = threading.Lock()
        self._futures: TTLCache[str, Future[str]] = TTLCache(max_entries, ttl_s, timer=clock)

    @property
    def ttl_s(self) -> float:
        return self._futures.ttl

    def reply_for(self, key: str, compute: Callable[[], str]) -> Future[str]:
        """The future reply for `key`; `compute` runs (on the executor) only for a key not
        seen within `ttl_s`."""
        with self._lock:
            future = self._futures.get(key)
            if future is None:
                future = self._futures[key] = self._executor.submit(compute)
            return future

    def __len__(self) -> int:
        with self._lock:
            self._futures.expire()
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
    without one, such as events) sender, create time and a digest of the text, as WeChat
    suggests."""
    try:
        msg_id, created = message.id, message.time  # wechatpy reads both as integers
    except (TypeError, ValueError):
        msg_id, created = 0, None
    if msg_id:
        return f"{message.source}:{msg_id}"
    digest = hashlib.sha1(fallback_text.encode("utf-8")).hexdigest()[:16]
    return f"{message.source}:{created or ''}:{digest}"


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
        self.timeout_s = settings.bots.bot_reply_timeout_s
        self.log_questions = settings.service.log_questions
        self.max_reply_bytes = max_reply_bytes
        self.conversations = ConversationStore(
            settings.bots.bot_session_ttl_s, settings.qa.max_history_turns
        )
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bot-answer")
        # A MsgId's reply is kept as long as the replay guard accepts its message again
        # (ui.replay: 2 windows and a second), so a retry is never computed twice.
        self.replies = ReplyCache(self._executor, ttl_s=max(300.0, 2.0 * settings.bots.bot_timestamp_window_s + 1))

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
        return render(answer, "wechat", max_bytes=self.max_reply_bytes)

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
