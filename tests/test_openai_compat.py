"""The OpenAI-compatible chat API, driven by the official `openai` client against a real
server over the real seed index."""

from __future__ import annotations

import json
import secrets

import httpx
import openai
import pytest

from ui.render import confidence_text, mark_span

QUESTION = "虹桥国际开放枢纽包括哪些区域？"
API_KEY = f"sk-test-{secrets.token_hex(8)}"


@pytest.fixture(scope="module")
def keyed_server(serve_app) -> str:
    return serve_app(openai_api_key=API_KEY)


@pytest.fixture(scope="module")
def client(keyed_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{keyed_server}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def test_models_lists_the_policy_qa_model(client):
    assert [model.id for model in client.models.list()] == ["policy-qa"]


def test_chat_completion_answers_with_numbered_citations(client):
    completion = client.chat.completions.create(
        model="policy-qa", messages=[{"role": "user", "content": QUESTION}]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    content = choice.message.content
    assert "松江区" in content
    assert "\n[1] 《虹桥国际开放枢纽建设总体方案》" in content
    structured = completion.model_extra["policy_qa"]
    assert structured["answered"] is True
    answer_text = structured["answer"]
    if structured["span"]:  # the span is in bold, the rest of the answer as quoted
        assert f"**{structured['span']}**" in content
        answer_text = mark_span(answer_text, structured["span"], "**", "**")
    confidence = confidence_text(structured["confidence"], structured["confidence_label"])
    assert content.startswith(f"{answer_text}\n{confidence}\n\n[1] ")
    assert len(structured["citations"]) == content.count("\n[")


def test_streaming_sends_role_then_content_then_stop(client):
    stream = client.chat.completions.create(
        model="policy-qa", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert "松江区" in streamed and "[1] 《" in streamed
    whole = client.chat.completions.create(
        model="policy-qa", messages=[{"role": "user", "content": QUESTION}]
    )
    assert streamed == whole.choices[0].message.content


def test_stream_ends_with_done_marker(keyed_server):
    body = {"model": "policy-qa", "stream": True,
            "messages": [{"role": "user", "content": QUESTION}]}
    with httpx.stream("POST", f"{keyed_server}/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    last_chunk = json.loads(events[-2][len("data: "):])
    assert last_chunk["choices"][0]["finish_reason"] == "stop"
    assert last_chunk["policy_qa"]["citations"]


def test_earlier_user_messages_are_the_history(client):
    follow_up = client.chat.completions.create(
        model="policy-qa",
        messages=[
            {"role": "system", "content": "你是政策助手"},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "……"},
            {"role": "user", "content": [{"type": "text", "text": "那松江区呢？"}]},
        ],
    )
    structured = follow_up.model_extra["policy_qa"]
    alone = client.chat.completions.create(
        model="policy-qa", messages=[{"role": "user", "content": "那松江区呢？"}]
    ).model_extra["policy_qa"]
    assert structured["query"] != alone["query"]  # the history changed what was searched


def test_wrong_api_key_is_rejected(keyed_server):
    wrong = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        wrong.chat.completions.create(
            model="policy-qa", messages=[{"role": "user", "content": QUESTION}]
        )
    assert raised.value.status_code == 401
    assert raised.value.body["code"] == "invalid_api_key"


def test_missing_api_key_is_rejected_in_openai_error_shape(keyed_server):
    response = httpx.get(f"{keyed_server}/v1/models")
    assert response.status_code == 401
    assert set(response.json()["error"]) >= {"message", "type", "code"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "invalid_json"),
        (b'{"model": "policy-qa"}', "invalid_request"),
        (b'{"messages": []}', "invalid_request"),
        (b'{"messages": [{"role": "user", "content": 42}]}', "invalid_request"),
        (b'{"messages": [{"role": "system", "content": "hi"}]}', "no_user_message"),
        (b'[1, 2, 3]', "invalid_request"),
    ],
)
def test_bad_bodies_get_400_in_openai_error_shape(keyed_server, body, code):
    response = httpx.post(f"{keyed_server}/v1/chat/completions", content=body,
                          headers={"Authorization": f"Bearer {API_KEY}",
                                   "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"]


def test_bad_question_gets_the_chinese_message(client):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="policy-qa", messages=[{"role": "user", "content": "   "}]
        )
    assert raised.value.status_code == 400
    assert any("\u4e00" <= char <= "\u9fff" for char in raised.value.body["message"])


def test_no_key_needed_when_none_is_configured(live_server, seed_settings):
    assert not seed_settings.service.openai_api_key
    unkeyed = openai.OpenAI(base_url=f"{live_server}/v1", api_key="anything", max_retries=0)
    completion = unkeyed.chat.completions.create(
        model="policy-qa", messages=[{"role": "user", "content": QUESTION}]
    )
    assert "松江区" in completion.choices[0].message.content
