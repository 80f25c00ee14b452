"""The WeChat Official Account endpoint over a real server and the real seed index.

Signatures are computed here with hashlib the way WeChat's servers compute them, not with
our code; in safe mode wechatpy's crypto plays the WeChat side with the same token, key and
AppID. A thin wrapper around the real assistant counts `ask` calls.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import itertools
import os
import re
import threading
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from wechatpy.crypto import WeChatCrypto

from ui import bots
from ui.render import (
    REFUSAL_TEXT,
    WECHAT_TEXT_LIMIT_BYTES,
    book_title,
    cut_at_sentence,
    example_questions,
    render,
)

TOKEN = "wechat-test-token"
APP_ID = "wx0123456789abcdef"
AES_KEY = base64.b64encode(os.urandom(32)).decode().rstrip("=")
REPLY_TIMEOUT_S = 2.0
QUESTION = "虹桥国际开放枢纽包括哪些区域？"
FOLLOW_UP = "那松江区呢？"
_msg_ids = itertools.count(int(time.time()) * 1000)


class CountingAssistant:
    """The real assistant, recording each `ask` (question, history) and optionally slowed
    down to make a reply miss its deadline."""

    def __init__(self, assistant):
        self.assistant = assistant
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.delay_s = 0.0
        self._lock = threading.Lock()

    def ask(self, question, history=(), **options):
        with self._lock:
            self.calls.append((question, tuple(history)))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.assistant.ask(question, history, **options)

    def __getattr__(self, name):
        return getattr(self.assistant, name)


@pytest.fixture(scope="module")
def counting_assistant(assistant) -> CountingAssistant:
    return CountingAssistant(assistant)


@pytest.fixture(scope="module")
def wechat_url(serve_app, counting_assistant) -> str:
    """An account in plain mode (no EncodingAESKey)."""
    base = serve_app(
        counting_assistant, wechat_token=TOKEN, bot_reply_timeout_s=REPLY_TIMEOUT_S
    )
    return f"{base}/wechat"


@pytest.fixture(scope="module")
def wechat_safe_url(serve_app, counting_assistant) -> str:
    """An account in safe mode: with an EncodingAESKey, plain-mode messages are refused."""
    base = serve_app(
        counting_assistant,
        wechat_token=TOKEN,
        wechat_app_id=APP_ID,
        wechat_aes_key=AES_KEY,
        bot_reply_timeout_s=REPLY_TIMEOUT_S,
    )
    return f"{base}/wechat"


@pytest.fixture()
def counter(counting_assistant) -> CountingAssistant:
    counting_assistant.calls.clear()
    counting_assistant.delay_s = 0.0
    yield counting_assistant
    counting_assistant.delay_s = 0.0


def wechat_signature(*parts: str) -> str:
    """SHA-1 of the sorted, concatenated parts: WeChat's callback signature."""
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def signed_query(token: str = TOKEN, **extra: str) -> dict[str, str]:
    timestamp, nonce = str(int(time.time())), f"nonce{next(_msg_ids)}"
    return {
        "signature": wechat_signature(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        **extra,
    }


def message_xml(user: str, msg_type: str = "text", msg_id: int | None = None, **fields) -> str:
    msg_id = next(_msg_ids) if msg_id is None else msg_id
    extra = "".join(f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items())
    return (
        f"<xml><ToUserName><![CDATA[gh_policyqa]]></ToUserName>"
        f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}"
        f"</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{extra}"
        f"<MsgId>{msg_id}</MsgId></xml>"
    )


def text_xml(user: str, content: str, msg_id: int | None = None) -> str:
    return message_xml(user, "text", msg_id, Content=content)


def post(url: str, xml: str, query: dict | None = None) -> httpx.Response:
    return httpx.post(url, params=query or signed_query(), content=xml.encode("utf-8"), timeout=20)


def reply_fields(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    root = ElementTree.fromstring(response.text)
    return {child.tag: child.text or "" for child in root}


def ask(url: str, user: str, question: str, msg_id: int | None = None) -> str:
    return reply_fields(post(url, text_xml(user, question, msg_id)))["Content"]


def test_url_verification_echoes_echostr_for_a_correct_signature(wechat_url):
    response = httpx.get(wechat_url, params=signed_query(echostr="8712386123"))
    assert response.status_code == 200
    assert response.text == "8712386123"


def test_url_verification_with_a_wrong_signature_is_refused(wechat_url):
    query = signed_query(token="not-the-token", echostr="8712386123")
    response = httpx.get(wechat_url, params=query)
    assert response.status_code == 403
    assert "8712386123" not in response.text


def test_message_with_a_wrong_signature_is_refused_without_answering(wechat_url, counter):
    query = {**signed_query(), "signature": "0" * 40}
    response = post(wechat_url, text_xml("user-forged", QUESTION), query)
    assert response.status_code == 403
    assert counter.calls == []


def test_text_message_gets_a_passive_text_reply_with_citations(wechat_url, counter):
    response = post(wechat_url, text_xml("user-text", QUESTION))
    fields = reply_fields(response)
    assert response.headers["content-type"].startswith("application/xml")
    assert fields["MsgType"] == "text"
    assert fields["ToUserName"] == "user-text"
    assert fields["FromUserName"] == "gh_policyqa"
    content = fields["Content"]
    assert "松江区" in content  # the 总体方案 lists the districts
    assert "出处：" in content and "《虹桥国际开放枢纽建设总体方案》" in content
    assert re.search(r"\n置信度：[高中低]（[01]\.\d\d）\n\n出处：", content)
    assert "<" not in content and "**" not in content
    assert len(content.encode("utf-8")) <= WECHAT_TEXT_LIMIT_BYTES
    assert counter.calls == [(QUESTION, ())]


def test_question_the_assistant_refuses_gets_its_chinese_message_without_sources(
    wechat_url, counter
):
    content = ask(wechat_url, "user-english", "What are the districts of the Hongqiao hub?")
    refused = counter.assistant.ask("What are the districts of the Hongqiao hub?")
    assert not refused.answered
    assert "出处" not in content
    assert content == refused.answer  # the notice is not repeated above it
    assert any("\u4e00" <= char <= "\u9fff" for char in content)


def test_refusal_without_a_message_says_so_plainly(assistant):
    answer = assistant.ask(QUESTION)
    refused = dataclasses.replace(answer, answered=False, answer="")
    assert render(refused, "wechat") == REFUSAL_TEXT


def test_retried_msg_id_gets_the_same_reply_computed_once(wechat_url, counter):
    xml = text_xml("user-retry", QUESTION)
    first = reply_fields(post(wechat_url, xml))["Content"]
    second = reply_fields(post(wechat_url, xml))["Content"]
    third = reply_fields(post(wechat_url, xml))["Content"]
    assert first == second == third
    assert len(counter.calls) == 1


def test_concurrent_duplicates_wait_for_one_computation(wechat_url, counter):
    counter.delay_s = 0.5  # keep the first computation in flight while the others arrive
    xml = text_xml("user-concurrent", QUESTION)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: post(wechat_url, xml), range(6)))
    contents = {reply_fields(response)["Content"] for response in responses}
    assert len(contents) == 1
    assert "出处" in contents.pop()
    assert len(counter.calls) == 1


def test_slow_answer_gets_a_polite_wait_reply_and_the_retry_gets_the_answer(wechat_url, counter):
    counter.delay_s = REPLY_TIMEOUT_S + 1.0
    xml = text_xml("user-slow", QUESTION)
    started = time.monotonic()
    first = reply_fields(post(wechat_url, xml))["Content"]
    assert time.monotonic() - started < REPLY_TIMEOUT_S + 0.8
    assert first == bots.SLOW_TEXT
    retry = reply_fields(post(wechat_url, xml))["Content"]  # WeChat's retry, same MsgId
    assert "出处" in retry
    assert len(counter.calls) == 1


def test_each_user_keeps_their_own_conversation(wechat_url, counter):
    ask(wechat_url, "user-a", QUESTION)
    ask(wechat_url, "user-b", "虹桥国际中央商务区的重点产业有哪些？")
    ask(wechat_url, "user-a", FOLLOW_UP)
    ask(wechat_url, "user-b", FOLLOW_UP)
    assert counter.calls[2] == (FOLLOW_UP, (QUESTION,))
    assert counter.calls[3] == (FOLLOW_UP, ("虹桥国际中央商务区的重点产业有哪些？",))


def test_reset_command_clears_the_conversation(wechat_url, counter):
    ask(wechat_url, "user-reset", QUESTION)
    assert ask(wechat_url, "user-reset", "清空") == bots.RESET_TEXT
    ask(wechat_url, "user-reset", FOLLOW_UP)
    assert counter.calls == [(QUESTION, ()), (FOLLOW_UP, ())]


def test_reset_command_tolerates_trailing_punctuation(wechat_url, counter):
    assert ask(wechat_url, "user-reset-2", "重新开始！") == bots.RESET_TEXT
    assert counter.calls == []


def test_example_questions_are_answered_from_the_documents(assistant):
    assert example_questions(), "ui/examples.json lists the example questions"
    for question in example_questions():
        answer = assistant.ask(question)
        assert answer.answered and answer.citations, question


def test_subscribe_event_gets_a_welcome_with_example_questions(wechat_url, counter):
    xml = message_xml("user-new", "event", Event="subscribe", EventKey="")
    content = reply_fields(post(wechat_url, xml))["Content"]
    assert content == bots.welcome_text()
    assert all(question in content for question in example_questions()[: bots.WELCOME_EXAMPLES])
    assert counter.calls == []


def test_unsubscribe_event_gets_no_reply(wechat_url):
    response = post(wechat_url, message_xml("user-gone", "event", Event="unsubscribe"))
    assert response.status_code == 200
    assert response.text == "success"


@pytest.mark.parametrize(
    ("msg_type", "fields"),
    [
        ("image", {"PicUrl": "http://127.0.0.1/a.jpg", "MediaId": "m1"}),
        ("voice", {"MediaId": "m2", "Format": "amr"}),
        ("location", {"Location_X": "31.19", "Location_Y": "121.32", "Label": "虹桥"}),
    ],
)
def test_non_text_messages_get_a_polite_text_only_reply(wechat_url, counter, msg_type, fields):
    content = reply_fields(post(wechat_url, message_xml("user-media", msg_type, **fields)))
    assert content["Content"] == bots.text_only_text()
    assert example_questions()[0] in content["Content"]
    assert counter.calls == []


def test_recognised_voice_is_answered_like_text(wechat_url, counter):
    xml = message_xml("user-voice", "voice", MediaId="m3", Format="amr", Recognition=QUESTION)
    assert "出处" in reply_fields(post(wechat_url, xml))["Content"]
    assert counter.calls == [(QUESTION, ())]


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE xml ['
    '<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + ']><xml><ToUserName>gh</ToUserName><FromUserName>attacker</FromUserName>'
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol9;</Content>"
    "<MsgId>1</MsgId></xml>"
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    "<xml><ToUserName>gh</ToUserName><FromUserName>attacker</FromUserName>"
    "<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&secret;</Content>"
    "<MsgId>2</MsgId></xml>"
)


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, "<xml><MsgType>text</MsgType>", "not xml at all",
     "<html><body>hi</body></html>", "<xml><Content>no type</Content></xml>"],
    ids=["billion-laughs", "external-entity", "truncated", "not-xml", "wrong-root", "no-type"],
)
def test_malformed_and_unsafe_xml_is_rejected(wechat_url, counter, body):
    started = time.monotonic()
    response = post(wechat_url, body)
    assert response.status_code == 400
    assert time.monotonic() - started < 2
    assert "root:" not in response.text  # nothing of /etc/passwd comes back
    assert counter.calls == []


def test_oversized_body_is_rejected(wechat_url, counter):
    huge = text_xml("user-huge", "虹" * 100_000)
    response = post(wechat_url, huge)
    assert response.status_code == 413
    assert counter.calls == []


def wechat_side_crypto() -> WeChatCrypto:
    return WeChatCrypto(TOKEN, AES_KEY, APP_ID)


def post_encrypted(url: str, xml: str) -> httpx.Response:
    """Encrypts `xml` as WeChat's safe mode does and posts it with both signatures."""
    query = signed_query(encrypt_type="aes")
    envelope = wechat_side_crypto().encrypt_message(xml, query["nonce"], query["timestamp"])
    encrypted = ElementTree.fromstring(envelope).findtext("Encrypt")
    query["msg_signature"] = wechat_signature(TOKEN, query["timestamp"], query["nonce"], encrypted)
    return httpx.post(url, params=query, content=envelope.encode(), timeout=20)


def test_safe_mode_round_trip_decrypts_and_encrypts_the_reply(wechat_safe_url, counter):
    response = post_encrypted(wechat_safe_url, text_xml("user-aes", QUESTION))
    fields = reply_fields(response)
    assert set(fields) >= {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    assert fields["MsgSignature"] == wechat_signature(
        TOKEN, fields["TimeStamp"], fields["Nonce"], fields["Encrypt"]
    )
    inner = wechat_side_crypto().decrypt_message(
        response.text, fields["MsgSignature"], fields["TimeStamp"], fields["Nonce"]
    )
    reply = {child.tag: child.text for child in ElementTree.fromstring(inner)}
    assert reply["ToUserName"] == "user-aes"
    assert "《虹桥国际开放枢纽建设总体方案》" in reply["Content"]
    assert counter.calls == [(QUESTION, ())]


def test_safe_mode_with_a_wrong_msg_signature_is_refused(wechat_safe_url, counter):
    query = signed_query(encrypt_type="aes", msg_signature="f" * 40)
    envelope = wechat_side_crypto().encrypt_message(
        text_xml("user-aes-forged", QUESTION), query["nonce"], query["timestamp"]
    )
    response = httpx.post(wechat_safe_url, params=query, content=envelope.encode(), timeout=20)
    assert response.status_code == 403
    assert counter.calls == []


def test_safe_mode_encrypted_with_another_key_is_rejected(wechat_safe_url, counter):
    other_key = base64.b64encode(os.urandom(32)).decode().rstrip("=")
    query = signed_query(encrypt_type="aes")
    envelope = WeChatCrypto(TOKEN, other_key, APP_ID).encrypt_message(
        text_xml("user-aes-other", QUESTION), query["nonce"], query["timestamp"]
    )
    encrypted = ElementTree.fromstring(envelope).findtext("Encrypt")
    query["msg_signature"] = wechat_signature(TOKEN, query["timestamp"], query["nonce"], encrypted)
    response = httpx.post(wechat_safe_url, params=query, content=envelope.encode(), timeout=20)
    assert response.status_code == 400
    assert counter.calls == []


def test_wechat_answers_503_when_no_token_is_configured(live_server, seed_settings):
    assert not seed_settings.bots.wechat_token
    response = httpx.get(f"{live_server}/wechat", params=signed_query(echostr="x"))
    assert response.status_code == 503
    assert "POLICYQA_WECHAT_TOKEN" in response.text


def test_long_answer_is_cut_at_a_sentence_end_within_2048_bytes(assistant, seed_corpus):
    answer = assistant.ask(QUESTION)
    assert answer.answered and answer.citations
    long_text = max((document.text for document in seed_corpus.documents), key=len)[:6000]
    long_answer = dataclasses.replace(answer, answer=long_text, span=None)

    content = render(long_answer, "wechat")

    assert len(content.encode("utf-8")) <= 2048
    body, _, sources = content.partition("\n\n出处：\n")
    assert sources, "the sources survive the cut"
    body, _, confidence = body.rpartition("\n")
    assert confidence.startswith("置信度："), "so does the confidence line"
    assert f"《{answer.citations[0].title}》" in sources
    assert long_text.startswith(body)
    assert body[-1] in "。！？；!?;…”）" or long_text[len(body)] == "\n"
    assert len(body.encode("utf-8")) > 1000  # cut near the limit, not at the first sentence


def test_titles_with_their_own_book_marks_nest_as_angle_brackets():
    assert book_title("关于发布《产业发展规划》的通知") == "《关于发布〈产业发展规划〉的通知》"


def test_cut_without_a_sentence_end_keeps_whole_characters():
    text = "虹" * 1000
    cut = cut_at_sentence(text, 100)
    assert len(cut.encode("utf-8")) <= 100
    assert cut.endswith("……") and set(cut[:-2]) == {"虹"}


def test_conversation_expires_after_idle_ttl():
    now = [0.0]
    store = bots.ConversationStore(ttl_s=60, max_turns=3, clock=lambda: now[0])
    for question in ("一", "二", "三", "四"):
        store.remember("user", question)
    assert store.history("user") == ("二", "三", "四")
    now[0] = 59.0
    assert store.history("user") == ("二", "三", "四")
    store.remember("other", "五")
    now[0] = 59.0 + 61.0
    assert store.history("user") == ()
    assert store.history("other") == ()
    assert len(store) == 0


def test_reply_cache_drops_expired_and_excess_keys():
    now = [0.0]
    with ThreadPoolExecutor(max_workers=1) as executor:
        cache = bots.ReplyCache(executor, ttl_s=10, max_entries=2, clock=lambda: now[0])
        first = cache.reply_for("a", lambda: "A")
        assert cache.reply_for("a", lambda: "other") is first
        cache.reply_for("b", lambda: "B")
        cache.reply_for("c", lambda: "C")
        assert len(cache) == 2
        assert cache.reply_for("a", lambda: "A again").result() == "A again"
        now[0] = 11.0
        assert cache.reply_for("b", lambda: "B again").result() == "B again"
