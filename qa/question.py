"""What kind of answer a question asks for, from cheap lexical cues."""

from __future__ import annotations

import re
from enum import Enum


class QuestionKind(str, Enum):
    NUMBER = "number"
    DATE = "date"
    LIST = "list"
    ENTITY = "entity"
    DEFINITION = "definition"
    OTHER = "other"


# Order matters: "哪一年" is a date question before it is an entity question.
_CUES: tuple[tuple[QuestionKind, re.Pattern[str]], ...] = (
    (QuestionKind.DATE, re.compile(r"何时|什么时候|哪一?年|哪天|几月|什么时间|啥时候|日期|时间节点")),
    (QuestionKind.NUMBER, re.compile(
        r"多少|(?<!哪)几[个家项届条座所倍成年次]?|多大|多高|多长|多远|多快|面积|比重|比例|占比|规模|总额|金额|"
        r"增长了?多|增速|数量|人数|百分之")),
    (QuestionKind.LIST, re.compile(r"哪些|哪几|哪[两二三四五六七八九十]|有什么|包括什么|包含什么|都有|几大|分别")),
    (QuestionKind.DEFINITION, re.compile(r"什么是|是什么|指什么|是指|含义|定义|意思")),
    (QuestionKind.ENTITY, re.compile(r"谁|哪个|哪家|哪里|在哪|哪儿|什么机构|什么部门|哪位")),
)

NUMBER_PATTERN = re.compile(
    r"(?:约|超过|近|达到?|逾|超)?\s*\d+(?:[.,]\d+)*\s*"
    r"(?:万亿|亿|万|千)?\s*"
    r"(?:平方公里|公里|万亿元|亿元|万元|元|亿美元|万美元|美元|万标箱|标箱|家|个百分点|个|项|届|%|％|"
    r"人次|万人|人|座|条|所|平方米|倍|小时|分钟|天|年)?"
)
DATE_PATTERN = re.compile(r"(?:19|20)\d{2}\s*年(?:\s*\d{1,2}\s*月)?(?:\s*\d{1,2}\s*日)?(?:前|底|末)?")


def classify(question: str) -> QuestionKind:
    for kind, pattern in _CUES:
        if pattern.search(question):
            return kind
    return QuestionKind.OTHER
