"""The WeCom (企业微信) app callback endpoint, `/wecom`.

WeCom's callback protocol is always encrypted: `GET` URL verification decrypts `echostr`
(after checking `msg_signature` over token, timestamp, nonce and echostr) and echoes the
plaintext; `POST` messages arrive as `<xml><Encrypt>…</Encrypt></xml>` and get an encrypted
passive reply. Crypto and parsing come from wechatpy's `enterprise` package (WeCom's former
name). Stale timestamps and reused nonces are refused as in `/wechat` (`ui.replay`), and each
user's messages are rate-limited; answering is `ui.bots.BotResponder`'s job, shared with
`/wechat`.

Configuration (env `POLICYQA_WECOM_TOKEN`, `POLICYQA_WECOM_AES_KEY`,
`POLICYQA_WECOM_CORP_ID`) is described in docs/bots.md.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from wechatpy.enterprise import WeChatCrypto, parse_message
from wechatpy.enterprise.replies import TextReply
from wechatpy.exceptions import InvalidSignatureException

from corpus.settings import Settings
from ui.bots import BotRequestError, parse_flat_xml
from ui.errors import error_responses
from ui.replay import BotGate

NOT_CONFIGURED = (
    "企业微信接口未配置（需设置 POLICYQA_WECOM_TOKEN、POLICYQA_WECOM_AES_KEY 和 "
    "POLICYQA_WECOM_CORP_ID）"
)


class WeComEnvelope:
    """Verifies, decrypts and encrypts WeCom callback payloads."""

    def __init__(self, settings: Settings):
        self.crypto = (
            WeChatCrypto(settings.bots.wecom_token, settings.bots.wecom_aes_key, settings.bots.wecom_corp_id)
            if settings.bots.wecom_token and settings.bots.wecom_aes_key and settings.bots.wecom_corp_id
            else None
        )

    def configured_crypto(self) -> WeChatCrypto:
        if self.crypto is None:
            raise BotRequestError(503, NOT_CONFIGURED)
        return self.crypto

    def echo(self, msg_signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """The decrypted `echostr` of a URL verification.

        :raises BotRequestError: 503 when not configured, 403 on a wrong signature, 400 when
            `echostr` does not decrypt.
        """
        crypto = self.configured_crypto()
        try:
            return crypto.check_signature(msg_signature, timestamp, nonce, echostr)
        except InvalidSignatureException:
            raise BotRequestError(403, "签名校验失败") from None
        except Exception:  # bad base64, padding, length or CorpID
            raise BotRequestError(400, "echostr 解密失败") from None

    def open(self, body: bytes, msg_signature: str, timestamp: str, nonce: str) -> str:
        """The message XML inside an encrypted POST body, checked with defusedxml.

        :raises BotRequestError: 503 when not configured, 403 on a wrong signature, 400 for
            malformed or unsafe XML or a body that does not decrypt.
        """
        crypto = self.configured_crypto()
        outer = parse_flat_xml(body)
        if not outer.get("Encrypt"):
            raise BotRequestError(400, "消息缺少 Encrypt")
        try:
            inner = crypto.decrypt_message(
                {"Encrypt": outer["Encrypt"]}, msg_signature, timestamp, nonce
            )
        except InvalidSignatureException:
            raise BotRequestError(403, "消息签名校验失败") from None
        except Exception:
            raise BotRequestError(400, "消息解密失败") from None
        parse_flat_xml(inner)
        return inner

    def seal(self, reply_xml: str, nonce: str, timestamp: str) -> str:
        return self.configured_crypto().encrypt_message(reply_xml, nonce, timestamp)


def create_router(settings: Settings) -> APIRouter:
    """The `/wecom` routes. The assistant is read per request from
    `request.app.state.assistant`."""
    router = APIRouter(tags=["bots"])
    envelope = WeComEnvelope(settings)
    gate = BotGate(settings, "wecom")

    @router.get(
        "/wecom",
        response_class=PlainTextResponse,
        responses=error_responses(403, 503, model=None, media_type="text/plain"),
    )
    async def verify_wecom_url(
        msg_signature: str = "", timestamp: str = "", nonce: str = "", echostr: str = ""
    ) -> PlainTextResponse:
        try:
            echoed = envelope.echo(msg_signature, timestamp, nonce, echostr)
            gate.check_timestamp(timestamp)
            return PlainTextResponse(echoed)
        except BotRequestError as error:
            return PlainTextResponse(error.message, status_code=error.status_code)

    @router.post(
        "/wecom",
        response_class=PlainTextResponse,
        responses={
            200: {"description": "被动回复 / passive reply",
                  "content": {"application/xml": {"schema": {"type": "string"}}}},
            **error_responses(400, 403, 408, 413, 503, model=None, media_type="text/plain"),
        },
    )
    async def receive_wecom_message(
        request: Request, msg_signature: str = "", timestamp: str = "", nonce: str = ""
    ) -> Response:
        try:
            envelope.configured_crypto()
            body = await request.body()  # bounded by ui.app's RequestBodyLimits
            message_xml = envelope.open(body, msg_signature, timestamp, nonce)
            # After the signature check: only a verified callback may spend a nonce.
            gate.check_timestamp(timestamp)
            first_sight = gate.admit(timestamp, nonce, message_xml)
            try:
                message = parse_message(message_xml)
            except (KeyError, TypeError, AttributeError, ValueError):
                raise BotRequestError(400, "不是有效的企业微信消息") from None
        except BotRequestError as error:
            return PlainTextResponse(error.message, status_code=error.status_code)

        reply_text = await gate.reply(request, message, first_sight)
        if reply_text is None:
            return PlainTextResponse("")  # WeCom: an empty body means no reply
        reply_xml = TextReply(message=message, content=reply_text).render()
        return Response(envelope.seal(reply_xml, nonce, timestamp), media_type="application/xml")

    return router
