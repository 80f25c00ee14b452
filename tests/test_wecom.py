"""The WeCom (企业微信) app callback over a real server and the real seed index.

wechatpy's WeCom crypto plays WeCom's side with the same token, EncodingAESKey and CorpID;
signatures are also recomputed here with hashlib, independent of our code.
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
from wechatpy.enterprise import WeChatCrypto

from ui import bots

TOKEN = "wecom-test-token"
CORP_ID = "ww0123456789abcdef"
AES_KEY = base64.b64encode(os.urandom(32)).decode().rstrip("=")
AGENT_ID = "1000002"
QUESTION = "虹桥国际开放枢纽包括哪些区域？"
_ids = itertools.count(int(time.time()) * 1000)


class CountingAssistant:
    """The real assistant, recording each `ask` (question, history)."""

    def __init__(self, assistant):
        self.assistant = assistant
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self._lock = threading.Lock()

    def ask(self, question, history=(), **options):
        with self._lock:
            self.calls.append((question, tuple(history)))
        return self.assistant.ask(question, history, **options)

    def __getattr__(self, name):
        return getattr(self.assistant, name)


@pytest.fixture(scope="module")
def counting_assistant(assistant) -> CountingAssistant:
    return CountingAssistant(assistant)


@pytest.fixture(scope="module")
def wecom_url(serve_app, counting_assistant) -> str:
    base = serve_app(
        counting_assistant, wecom_token=TOKEN, wecom_corp_id=CORP_ID, wecom_aes_key=AES_KEY
    )
    return f"{base}/wecom"


@pytest.fixture()
def counter(counting_assistant) -> CountingAssistant:
    counting_assistant.calls.clear()
    return counting_assistant


def wecom_side() -> WeChatCrypto:
    return WeChatCrypto(TOKEN, AES_KEY, CORP_ID)


def signature(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode("utf-8")).hexdigest()


def fresh_timestamp_and_nonce() -> tuple[str, str]:
    return str(int(time.time())), f"nonce{next(_ids)}"


def message_xml(user: str, msg_type: str = "text", msg_id: int | None = None, **fields) -> str:
    msg_id = next(_ids) if msg_id is None else msg_id
    extra = "".join(f"<{name}><![CDATA[{value}]]></{name}>" for name, value in fields.items())
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<FromUserName><![CDATA[{user}]]></FromUserName><CreateTime>{int(time.time())}"
        f"</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{extra}"
        f"<MsgId>{msg_id}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
    )


def post_encrypted(url: str, xml: str, *, forge_signature: bool = False) -> httpx.Response:
    timestamp, nonce = fresh_timestamp_and_nonce()
    envelope = wecom_side().encrypt_message(xml, nonce, timestamp)
    encrypted = ElementTree.fromstring(envelope).findtext("Encrypt")
    msg_signature = "0" * 40 if forge_signature else signature(TOKEN, timestamp, nonce, encrypted)
    # WeCom's POST body carries ToUserName, AgentID and Encrypt.
    body = (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<AgentID><![CDATA[{AGENT_ID}]]></AgentID><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    )
    query = {"msg_signature": msg_signature, "timestamp": timestamp, "nonce": nonce}
    return httpx.post(url, params=query, content=body.encode(), timeout=20)


def decrypted_reply(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    outer = {child.tag: child.text or "" for child in ElementTree.fromstring(response.text)}
    assert outer["MsgSignature"] == signature(
        TOKEN, outer["TimeStamp"], outer["Nonce"], outer["Encrypt"]
    )
    inner = wecom_side().decrypt_message(
        response.text, outer["MsgSignature"], outer["TimeStamp"], outer["Nonce"]
    )
    return {child.tag: child.text or "" for child in ElementTree.fromstring(inner)}


def test_url_verification_decrypts_and_echoes_echostr(wecom_url):
    timestamp, nonce = fresh_timestamp_and_nonce()
    envelope = wecom_side().encrypt_message("4388323485962591046", nonce, timestamp)
    echostr = ElementTree.fromstring(envelope).findtext("Encrypt")
    query = {
        "msg_signature": signature(TOKEN, timestamp, nonce, echostr),
        "timestamp": timestamp,
        "nonce": nonce,
        "echostr": echostr,
    }
    response = httpx.get(wecom_url, params=query)
    assert response.status_code == 200
    assert response.text == "4388323485962591046"


def test_url_verification_with_a_wrong_signature_is_refused(wecom_url):
    timestamp, nonce = fresh_timestamp_and_nonce()
    envelope = wecom_side().encrypt_message("4388323485962591046", nonce, timestamp)
    echostr = ElementTree.fromstring(envelope).findtext("Encrypt")
    query = {"msg_signature": signature("wrong", timestamp, nonce, echostr),
             "timestamp": timestamp, "nonce": nonce, "echostr": echostr}
    response = httpx.get(wecom_url, params=query)
    assert response.status_code == 403
    assert "4388323485962591046" not in response.text


def test_encrypted_text_message_round_trip(wecom_url, counter):
    reply = decrypted_reply(post_encrypted(wecom_url, message_xml("zhangsan", Content=QUESTION)))
    assert reply["MsgType"] == "text"
    assert reply["ToUserName"] == "zhangsan"
    assert reply["FromUserName"] == CORP_ID
    assert reply["AgentID"] == AGENT_ID
    assert "松江区" in reply["Content"]
    assert "《虹桥国际开放枢纽建设总体方案》" in reply["Content"]
    assert len(reply["Content"].encode("utf-8")) <= bots.WECHAT_TEXT_LIMIT_BYTES
    assert counter.calls == [(QUESTION, ())]


def test_retried_message_is_answered_once(wecom_url, counter):
    xml = message_xml("lisi", Content=QUESTION)
    first = decrypted_reply(post_encrypted(wecom_url, xml))["Content"]
    second = decrypted_reply(post_encrypted(wecom_url, xml))["Content"]
    assert first == second
    assert len(counter.calls) == 1


def test_follow_up_uses_the_users_own_history(wecom_url, counter):
    post_encrypted(wecom_url, message_xml("wangwu", Content=QUESTION))
    post_encrypted(wecom_url, message_xml("zhaoliu", Content="那松江区呢？"))
    post_encrypted(wecom_url, message_xml("wangwu", Content="那松江区呢？"))
    assert counter.calls == [
        (QUESTION, ()),
        ("那松江区呢？", ()),
        ("那松江区呢？", (QUESTION,)),
    ]


def test_subscribe_event_is_welcomed_and_images_get_a_text_only_note(wecom_url, counter):
    subscribe = message_xml("new", "event", Event="subscribe")
    assert decrypted_reply(post_encrypted(wecom_url, subscribe))["Content"] == bots.welcome_text()
    picture = message_xml("new", "image", PicUrl="http://127.0.0.1/a.jpg", MediaId="m")
    image = decrypted_reply(post_encrypted(wecom_url, picture))
    assert image["Content"] == bots.text_only_text()
    assert counter.calls == []


def test_message_with_a_wrong_signature_is_refused_without_answering(wecom_url, counter):
    forged = message_xml("mallory", Content=QUESTION)
    response = post_encrypted(wecom_url, forged, forge_signature=True)
    assert response.status_code == 403
    assert counter.calls == []


def test_entity_declarations_in_the_envelope_are_rejected(wecom_url, counter):
    timestamp, nonce = fresh_timestamp_and_nonce()
    body = ('<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaaaa">'
            '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><xml><Encrypt>&b;</Encrypt></xml>')
    query = {"msg_signature": signature(TOKEN, timestamp, nonce, "a" * 100),
             "timestamp": timestamp, "nonce": nonce}
    response = httpx.post(wecom_url, params=query, content=body.encode())
    assert response.status_code == 400
    assert counter.calls == []


def test_wecom_answers_503_when_not_configured(live_server, seed_settings):
    assert not seed_settings.bots.wecom_token
    response = httpx.get(f"{live_server}/wecom", params={"echostr": "x"})
    assert response.status_code == 503
    assert "POLICYQA_WECOM_TOKEN" in response.text
