"""Replayed, stale and retried bot callbacks, over real servers and the real seed index.

The WeChat and WeCom sides are played with wechatpy's crypto and signatures computed here
with hashlib, as in tests/test_wechat.py and tests/test_wecom.py. WeChat's retry of a slow
message resends the request unchanged (same timestamp, nonce, signature and MsgId): a
retry must get the first reply, computed once; the same signed query string with another
message is a replay and is refused; a captured request sent after the window is stale.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import threading
import time
import xml.etree.ElementTree as ElementTree

import httpx
import pytest
from wechatpy import enterprise
from wechatpy.crypto import WeChatCrypto

from ui.bots import BotRequestError
from ui.replay import REPLAYED_TEXT, STALE_TEXT, ReplayGuard, message_identity

TOKEN = "replay-test-token"
APP_ID = "wx00112233445566aa"
CORP_ID = "ww00112233445566aa"
AES_KEY = base64.b64encode(os.urandom(32)).decode().rstrip("=")
WINDOW_S = 30  # the smallest window settings allow, so a captured request goes stale soon
QUESTION = "虹桥国际开放枢纽包括哪些区域？"
_ids = itertools.count(int(time.time()) * 1000)


class CountingAssistant:
    """The real assistant, counting `ask` calls."""

    def __init__(self, assistant):
        self.assistant = assistant
        self.calls = 0
        self._lock = threading.Lock()

    def ask(self, question, history=(), **options):
        with self._lock:
            self.calls += 1
        return self.assistant.ask(question, history, **options)

    def __getattr__(self, name):
        return getattr(self.assistant, name)


@pytest.fixture(scope="module")
def counting(assistant) -> CountingAssistant:
    assistant.ask(QUESTION)  # warm up, so that the first reply is not the 稍后再试 one
    return CountingAssistant(assistant)


@pytest.fixture()
def counter(counting) -> CountingAssistant:
    counting.calls = 0
    return counting


BOT_SETTINGS = dict(
    wechat_token=TOKEN, bot_timestamp_window_s=WINDOW_S, bot_reply_timeout_s=4.0,
    bot_rate_limit_per_s=0,
)


@pytest.fixture(scope="module")
def plain_url(serve_app, counting) -> str:
    return serve_app(counting, **BOT_SETTINGS) + "/wechat"


@pytest.fixture(scope="module")
def safe_url(serve_app, counting) -> str:
    return serve_app(counting, wechat_app_id=APP_ID, wechat_aes_key=AES_KEY, **BOT_SETTINGS) + "/wechat"


@pytest.fixture(scope="module")
def wecom_url(serve_app, counting) -> str:
    return serve_app(
        counting, wecom_token=TOKEN, wecom_corp_id=CORP_ID, wecom_aes_key=AES_KEY,
        bot_timestamp_window_s=WINDOW_S, bot_reply_timeout_s=4.0, bot_rate_limit_per_s=0,
    ) + "/wecom"


def sha1_signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def text_xml(user: str, content: str, msg_id: int | None = None) -> str:
    msg_id = next(_ids) if msg_id is None else msg_id
    return (
        f"<xml><ToUserName><![CDATA[gh_policyqa]]></ToUserName>"
        f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}"
        f"</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]>"
        f"</Content><MsgId>{msg_id}</MsgId></xml>"
    )


def signed_query(age_s: int = 0, **extra: str) -> dict[str, str]:
    """WeChat's query string for a request signed `age_s` seconds ago (negative: ahead)."""
    timestamp, nonce = str(int(time.time()) - age_s), str(next(_ids))
    return {"signature": sha1_signature(TOKEN, timestamp, nonce), "timestamp": timestamp,
            "nonce": nonce, **extra}


def sealed_wechat(xml: str, age_s: int = 0) -> tuple[dict[str, str], bytes]:
    """A safe-mode request: query string and encrypted body, as WeChat sends them."""
    query = signed_query(age_s, encrypt_type="aes")
    envelope = WeChatCrypto(TOKEN, AES_KEY, APP_ID).encrypt_message(
        xml, query["nonce"], query["timestamp"]
    )
    encrypted = ElementTree.fromstring(envelope).findtext("Encrypt")
    query["msg_signature"] = sha1_signature(TOKEN, query["timestamp"], query["nonce"], encrypted)
    return query, envelope.encode()


def sealed_wecom(xml: str, age_s: int = 0) -> tuple[dict[str, str], bytes]:
    timestamp, nonce = str(int(time.time()) - age_s), str(next(_ids))
    envelope = enterprise.WeChatCrypto(TOKEN, AES_KEY, CORP_ID).encrypt_message(xml, nonce, timestamp)
    encrypted = ElementTree.fromstring(envelope).findtext("Encrypt")
    body = f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    query = {"msg_signature": sha1_signature(TOKEN, timestamp, nonce, encrypted),
             "timestamp": timestamp, "nonce": nonce}
    return query, body.encode()


def post(url: str, query: dict, body: bytes) -> httpx.Response:
    return httpx.post(url, params=query, content=body, timeout=30)


def wechat_reply(response: httpx.Response, encrypted: bool = False) -> str:
    assert response.status_code == 200, response.text
    if encrypted:
        fields = {child.tag: child.text for child in ElementTree.fromstring(response.text)}
        inner = WeChatCrypto(TOKEN, AES_KEY, APP_ID).decrypt_message(
            {"Encrypt": fields["Encrypt"]}, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"]
        )
        return ElementTree.fromstring(inner).findtext("Content")
    return ElementTree.fromstring(response.text).findtext("Content")


def wecom_reply(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    fields = {child.tag: child.text for child in ElementTree.fromstring(response.text)}
    inner = enterprise.WeChatCrypto(TOKEN, AES_KEY, CORP_ID).decrypt_message(
        {"Encrypt": fields["Encrypt"]}, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"]
    )
    return ElementTree.fromstring(inner).findtext("Content")


# --- stale ------------------------------------------------------------------------------------


@pytest.mark.parametrize("age_s", [WINDOW_S + 5, -(WINDOW_S + 5), 86_400 * 365])
def test_plain_message_with_a_timestamp_outside_the_window_is_refused(plain_url, counter, age_s):
    response = post(plain_url, signed_query(age_s), text_xml("user-stale", QUESTION).encode())
    assert response.status_code == 403
    assert response.text == STALE_TEXT
    assert counter.calls == 0


def test_safe_mode_and_wecom_messages_with_a_stale_timestamp_are_refused(safe_url, wecom_url, counter):
    for url, seal in ((safe_url, sealed_wechat), (wecom_url, sealed_wecom)):
        query, body = seal(text_xml("user-stale-sealed", QUESTION), age_s=WINDOW_S + 5)
        response = post(url, query, body)
        assert response.status_code == 403, url
        assert response.text == STALE_TEXT
    assert counter.calls == 0


def test_url_verification_with_a_stale_timestamp_is_refused(plain_url, wecom_url):
    stale = httpx.get(plain_url, params=signed_query(WINDOW_S + 5, echostr="123"))
    assert (stale.status_code, stale.text) == (403, STALE_TEXT)
    fresh = httpx.get(plain_url, params=signed_query(0, echostr="123"))
    assert (fresh.status_code, fresh.text) == (200, "123")
    timestamp, nonce = str(int(time.time()) - WINDOW_S - 5), str(next(_ids))
    echostr = ElementTree.fromstring(
        enterprise.WeChatCrypto(TOKEN, AES_KEY, CORP_ID).encrypt_message("4388", nonce, timestamp)
    ).findtext("Encrypt")
    query = {"msg_signature": sha1_signature(TOKEN, timestamp, nonce, echostr),
             "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
    assert httpx.get(wecom_url, params=query).status_code == 403


def test_captured_request_sent_again_after_the_window_is_refused(plain_url, counter):
    # Signed WINDOW_S - 2 seconds ago: accepted now, stale three seconds later.
    query, body = signed_query(WINDOW_S - 2), text_xml("user-captured", QUESTION).encode()
    first = wechat_reply(post(plain_url, query, body))
    assert "出处" in first
    time.sleep(3)
    again = post(plain_url, query, body)
    assert (again.status_code, again.text) == (403, STALE_TEXT)
    assert counter.calls == 1


# --- replayed ---------------------------------------------------------------------------------


def test_signed_query_replayed_with_another_message_is_refused(plain_url, counter):
    # Plain mode signs the query string, not the body: a captured URL must not carry new text.
    query = signed_query()
    assert "出处" in wechat_reply(post(plain_url, query, text_xml("user-victim", QUESTION).encode()))
    for forged in (text_xml("user-victim", "虹桥国际中央商务区的重点产业有哪些？"),
                   text_xml("user-attacker", QUESTION)):
        response = post(plain_url, query, forged.encode())
        assert (response.status_code, response.text) == (403, REPLAYED_TEXT)
    assert counter.calls == 1


def test_replayed_encrypted_request_gets_the_first_reply_and_no_new_answer(safe_url, wecom_url, counter):
    # The body is signed, so a replay can only be the same message: it is answered from the
    # reply cache, never computed again.
    for url, seal, reply in ((safe_url, sealed_wechat, lambda r: wechat_reply(r, True)),
                             (wecom_url, sealed_wecom, wecom_reply)):
        query, body = seal(text_xml(f"user-replay-{url[-6:]}", QUESTION))
        replies = [reply(post(url, query, body)) for _ in range(3)]
        assert len(set(replies)) == 1 and "出处" in replies[0]
    assert counter.calls == 2


# --- retried ----------------------------------------------------------------------------------


@pytest.mark.parametrize("same_nonce", [True, False], ids=["same-nonce", "new-nonce"])
def test_wechat_retries_of_one_msg_id_get_the_first_reply_computed_once(plain_url, counter, same_nonce):
    xml = text_xml(f"user-retry-{same_nonce}", QUESTION).encode()
    query = signed_query()
    replies = [wechat_reply(post(plain_url, query if same_nonce else signed_query(), xml))
               for _ in range(4)]  # the message and WeChat's three retries
    assert len(set(replies)) == 1
    assert "出处" in replies[0]
    assert counter.calls == 1


def test_retry_of_a_slow_answer_gets_it_although_its_nonce_was_seen(serve_app, counting, counter):
    class SlowAssistant(CountingAssistant):
        def ask(self, question, history=(), **options):
            time.sleep(2.5)
            return counting.ask(question, history, **options)

    url = serve_app(SlowAssistant(counting), **{**BOT_SETTINGS, "bot_reply_timeout_s": 1.0}) + "/wechat"
    query, xml = signed_query(), text_xml("user-slow-retry", QUESTION).encode()
    assert "稍后" in wechat_reply(post(url, query, xml))
    time.sleep(4)
    assert "出处" in wechat_reply(post(url, query, xml))  # the retry, unchanged
    assert counter.calls == 1


# --- per-user rate limit ------------------------------------------------------------------------


def test_each_user_is_rate_limited_but_retries_do_not_count(serve_app, counting, counter):
    url = serve_app(counting, **{**BOT_SETTINGS, "bot_rate_limit_per_s": 0.1, "bot_rate_limit_burst": 2})
    url += "/wechat"
    first = text_xml("user-busy", QUESTION).encode()
    retry_query = signed_query()
    replies = [wechat_reply(post(url, retry_query, first)) for _ in range(3)]  # one message
    replies.append(wechat_reply(post(url, signed_query(), text_xml("user-busy", QUESTION).encode())))
    limited = wechat_reply(post(url, signed_query(), text_xml("user-busy", QUESTION).encode()))
    assert all("出处" in reply for reply in replies)
    assert limited.startswith("请求过于频繁")
    other = wechat_reply(post(url, signed_query(), text_xml("user-other", QUESTION).encode()))
    assert "出处" in other  # another user is still served
    assert counter.calls == 3


# --- the guard itself, on a controlled clock --------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_nonce_is_remembered_as_long_as_its_timestamp_is_accepted():
    clock = Clock()
    guard = ReplayGuard(300, clock=clock)
    timestamp = str(int(clock.now) + 300)  # a sender's clock 300 s ahead of ours
    guard.check_timestamp(timestamp)
    assert guard.admit(timestamp, "n1", "user:1") is True
    clock.now += 600  # 600 s later the timestamp is still accepted...
    guard.check_timestamp(timestamp)
    with pytest.raises(BotRequestError) as refused:  # ...so its nonce is still remembered
        guard.admit(timestamp, "n1", "user:2")
    assert refused.value.status_code == 403
    assert guard.admit(timestamp, "n1", "user:1") is False  # the retry is still known
    clock.now += 1
    with pytest.raises(BotRequestError):
        guard.check_timestamp(timestamp)  # and from now on the timestamp itself is stale


def test_malformed_timestamps_are_refused():
    guard = ReplayGuard(300)
    for timestamp in ("", "abc", "1.5e9", "١٢٣"):
        with pytest.raises(BotRequestError):
            guard.check_timestamp(timestamp)


def test_events_without_msg_id_are_told_apart_by_time_and_content():
    subscribe = "<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime><Event>subscribe</Event></xml>"
    click = "<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime><Event>CLICK</Event></xml>"
    fields = {"FromUserName": "u", "CreateTime": "1"}
    assert message_identity(fields, subscribe) == message_identity(fields, subscribe)
    assert message_identity(fields, subscribe) != message_identity(fields, click)
    assert message_identity({"FromUserName": "u", "MsgId": "7"}, "") == "u:7"


def test_a_msg_id_reply_is_kept_as_long_as_the_guard_accepts_its_retry():
    """With a window wider than the default, the reply cache lives as long as the replay
    guard remembers the message, so a late retry still gets the first reply."""
    from corpus.settings import Settings
    from ui.bots import BotResponder

    wide = BotResponder(Settings(bot_timestamp_window_s=3600))
    assert wide.replies.ttl_s == 2 * 3600 + 1
    assert BotResponder(Settings()).replies.ttl_s == 601
