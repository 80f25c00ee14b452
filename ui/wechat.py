"""The WeChat Official Account (公众号) server endpoint, `/wechat`.

Implements WeChat's callback protocol with wechatpy: `GET` URL verification (SHA-1 signature
over token, timestamp and nonce; echo `echostr`) and `POST` messages answered with a passive
XML reply, in plain mode or safe mode (`encrypt_type=aes`: AES with the EncodingAESKey,
`msg_signature` over the encrypted body). Once an EncodingAESKey is configured, only safe
mode is accepted: a plain-mode signature does not cover the body, so one signed URL would let
anyone post as any user. Callbacks with a stale timestamp or a reused nonce are refused
(`ui.replay`), and each user's messages are rate-limited. Answering is
`ui.bots.BotResponder`'s job.

Configuration (env `POLICYQA_WECHAT_TOKEN`, `POLICYQA_WECHAT_AES_KEY`,
`POLICYQA_WECHAT_APP_ID`) is described in docs/bots.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply

from corpus.settings import Settings
from ui.bots import (
    BotRequestError,
    parse_flat_xml,
    signature_matches,
)
from ui.errors import error_responses
from ui.replay import BotGate


class WeChatEnvelope:
    """Checks and unwraps a callback request, and wraps the reply the same way it came:
    plain, or encrypted when the request was (`encrypt_type=aes`)."""

    def __init__(self, settings: Settings):
        self.token = settings.bots.wechat_token
        self.safe_mode_only = bool(settings.bots.wechat_aes_key)
        self.crypto = (
            WeChatCrypto(settings.bots.wechat_token, settings.bots.wechat_aes_key, settings.bots.wechat_app_id)
            if settings.bots.wechat_token and settings.bots.wechat_aes_key and settings.bots.wechat_app_id
            else None
        )

    def check_signature(self, signature: str, timestamp: str, nonce: str) -> None:
        """:raises BotRequestError: 503 when no token is configured, 403 on a wrong signature."""
        if not self.token:
            raise BotRequestError(503, "微信公众号接口未配置（需设置 POLICYQA_WECHAT_TOKEN）")
        if not signature_matches(signature, self.token, timestamp, nonce):
            raise BotRequestError(403, "签名校验失败")

    def open(self, body: bytes, *, encrypted: bool, msg_signature: str, timestamp: str,
             nonce: str) -> str:
        """The message XML inside `body`, checked with defusedxml.

        :raises BotRequestError: 400 for malformed or unsafe XML, 403 for a wrong
            msg_signature or a plain-mode message while an AES key is configured, 503 when
            safe mode is requested but not configured.
        """
        outer = parse_flat_xml(body)
        if not encrypted and self.safe_mode_only:
            raise BotRequestError(403, "已启用安全模式，不接受明文消息")
        if not encrypted:
            try:
                return body.decode("utf-8")
            except UnicodeDecodeError:
                raise BotRequestError(400, "消息应为 UTF-8 编码") from None
        if self.crypto is None:
            raise BotRequestError(
                503, "安全模式未配置（需设置 POLICYQA_WECHAT_AES_KEY 和 POLICYQA_WECHAT_APP_ID）"
            )
        if not outer.get("Encrypt"):
            raise BotRequestError(400, "安全模式消息缺少 Encrypt")
        try:
            inner = self.crypto.decrypt_message(
                {"Encrypt": outer["Encrypt"]}, msg_signature, timestamp, nonce
            )
        except InvalidSignatureException:
            raise BotRequestError(403, "消息签名校验失败") from None
        except Exception:  # bad base64, padding, length or AppID: all mean "not from WeChat"
            raise BotRequestError(400, "消息解密失败") from None
        parse_flat_xml(inner)
        return inner

    def seal(self, reply_xml: str, *, encrypted: bool, nonce: str, timestamp: str) -> str:
        if not encrypted:
            return reply_xml
        return self.crypto.encrypt_message(reply_xml, nonce, timestamp)


def create_router(settings: Settings) -> APIRouter:
    """The `/wechat` routes. The assistant is read per request from
    `request.app.state.assistant`, so a rebuilt index is picked up without a restart."""
    router = APIRouter(tags=["bots"])
    envelope = WeChatEnvelope(settings)
    gate = BotGate(settings, "wechat")

    @router.get(
        "/wechat",
        response_class=PlainTextResponse,
        responses=error_responses(403, 503, model=None, media_type="text/plain"),
    )
    async def verify_wechat_url(
        signature: str = "", timestamp: str = "", nonce: str = "", echostr: str = ""
    ) -> PlainTextResponse:
        """WeChat's server URL check: echo `echostr` when the signature is right."""
        try:
            envelope.check_signature(signature, timestamp, nonce)
            gate.check_timestamp(timestamp)
        except BotRequestError as error:
            return PlainTextResponse(error.message, status_code=error.status_code)
        return PlainTextResponse(echostr)

    @router.post(
        "/wechat",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "被动回复 / passive reply",
                  "content": {"application/xml": {"schema": {"type": "string"}}}},
            **error_responses(400, 403, 408, 413, 503, model=None, media_type="text/plain"),
        },
    )
    async def receive_wechat_message(
        request: Request,
        signature: str = "",
        timestamp: str = "",
        nonce: str = "",
        encrypt_type: str = "raw",
        msg_signature: str = "",
    ) -> Response:
        encrypted = encrypt_type.lower() == "aes"
        try:
            envelope.check_signature(signature, timestamp, nonce)
            gate.check_timestamp(timestamp)
            body = await request.body()  # bounded by ui.app's RequestBodyLimits
            message_xml = envelope.open(
                body, encrypted=encrypted, msg_signature=msg_signature,
                timestamp=timestamp, nonce=nonce,
            )
            first_sight = gate.admit(timestamp, nonce, message_xml)
            try:
                message = parse_message(message_xml)
            except (KeyError, TypeError, AttributeError, ValueError):
                raise BotRequestError(400, "不是有效的微信消息") from None
        except BotRequestError as error:
            return PlainTextResponse(error.message, status_code=error.status_code)

        reply_text = await gate.reply(request, message, first_sight)
        if reply_text is None:
            return PlainTextResponse("success")  # WeChat's "no reply, do not retry"
        reply_xml = TextReply(message=message, content=reply_text).render()
        return Response(
            envelope.seal(reply_xml, encrypted=encrypted, nonce=nonce, timestamp=timestamp),
            media_type="application/xml",
        )

    return router
