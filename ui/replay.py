"""Replay protection for the bot callbacks (`/wechat`, `/wecom`).

A callback's signature covers its timestamp and nonce (and, encrypted, its body), not the
moment it is sent: a captured request verifies forever. So a callback is refused when its
timestamp is more than `window_s` from our clock, and a (timestamp, nonce) pair is
remembered for as long as its timestamp is accepted, bound to the message it carried.

WeChat retries a message it got no answer to within 5 s, up to three times, resending the
request unchanged: same query string (timestamp, nonce, signature) and same MsgId. So the
same nonce with the same message is a retry, let through to get the first reply again (the
bots' reply cache computes it once); the same nonce with another message is a replay of a
signed URL with a new body (plain mode signs no body) and is refused.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping

from cachetools import TTLCache

from fastapi import Request

from corpus.settings import Settings
from ui.bots import BotRequestError, BotResponder, parse_flat_xml
from ui.ratelimit import RateLimit, limited_message

STALE_TEXT = "请求已过期（时间戳超出允许范围）"
BAD_TIMESTAMP_TEXT = "时间戳无效"
REPLAYED_TEXT = "重复的请求（nonce 已用于另一条消息）"


def message_identity(fields: Mapping[str, str], message_xml: str) -> str:
    """What stays the same across the platform's retries of one message: sender and MsgId;
    for events, which have none, sender, CreateTime (WeChat's advice) and a digest of the
    XML, which tells two events of one second apart."""
    sender = fields.get("FromUserName", "")
    msg_id = fields.get("MsgId") or fields.get("MsgID")
    if msg_id:
        return f"{sender}:{msg_id}"
    digest = hashlib.sha1(message_xml.encode("utf-8")).hexdigest()[:16]
    return f"{sender}:{fields.get('CreateTime', '')}:{digest}"


class ReplayGuard:
    """Checks callback timestamps against a window and remembers nonces and messages.

    Thread-safe. Entries live as long as any timestamp first seen inside the window stays
    acceptable; at most `max_entries` of each are kept (least recently used dropped first),
    far more than a busy account receives in that time.

    :raises ValueError: for a window or size below 1.
    """

    def __init__(
        self,
        window_s: float,
        *,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ):
        if window_s < 1 or max_entries < 1:
            raise ValueError("window_s and max_entries must be at least 1")
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # A timestamp `window_s` ahead of our clock when first seen stays acceptable for
        # 2 * window_s; one second more covers the edge itself.
        ttl_s = 2 * window_s + 1
        self._nonces: TTLCache[str, str] = TTLCache(max_entries, ttl_s, timer=clock)
        self._messages: TTLCache[str, bool] = TTLCache(max_entries, ttl_s, timer=clock)

    def check_timestamp(self, timestamp: str) -> None:
        """:raises BotRequestError: 403 when `timestamp` (Unix seconds) is not a number or is
        more than `window_s` away from now."""
        try:
            sent = int(timestamp)
        except ValueError:
            raise BotRequestError(403, BAD_TIMESTAMP_TEXT) from None
        if abs(self._clock() - sent) > self.window_s:
            raise BotRequestError(403, STALE_TEXT)

    def admit(self, timestamp: str, nonce: str, message_id: str) -> bool:
        """Records a verified callback carrying `message_id`. Returns True the first time the
        message is seen, False for a retry of it (with the same nonce or a new one).

        :raises BotRequestError: 403 when the timestamp and nonce came before with another
            message.
        """
        key = f"{timestamp}:{nonce}"
        with self._lock:
            earlier = self._nonces.get(key)
            if earlier is not None and earlier != message_id:
                raise BotRequestError(403, REPLAYED_TEXT)
            self._nonces[key] = message_id
            first = message_id not in self._messages
            self._messages[message_id] = True
            return first


class BotGate:
    """What each bot channel does around a verified callback: the timestamp window and the
    nonce/MsgId memory (`ReplayGuard`), then the reply, under a per-user rate limit that a
    retry does not count against (it gets the first reply again)."""

    def __init__(self, settings: Settings, channel: str) -> None:
        self.guard = ReplayGuard(settings.bots.bot_timestamp_window_s)
        self.user_limit = RateLimit(settings.bots.bot_rate_limit_per_s, settings.bots.bot_rate_limit_burst, channel)
        self.responder = BotResponder(settings)

    def check_timestamp(self, timestamp: str) -> None:
        self.guard.check_timestamp(timestamp)

    def admit(self, timestamp: str, nonce: str, message_xml: str) -> bool:
        """True for a message seen for the first time, False for a retry.

        :raises BotRequestError: 403 for the nonce replayed with another message."""
        return self.guard.admit(timestamp, nonce, message_identity(parse_flat_xml(message_xml), message_xml))

    async def reply(self, request: Request, message, first_sight: bool) -> str | None:
        """The reply text (None: no reply), or the over-limit message."""
        retry_after_s = self.user_limit.hit(message.source or "") if first_sight else None
        if retry_after_s is not None:
            return limited_message(retry_after_s)
        return await self.responder.reply_to_request(request, message)
