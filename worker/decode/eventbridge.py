"""EventBridge events, recognised by their ``detail-type`` member, never turned into task events.

"ECS Task State Change" documents (``source: aws.ecs``) are ECS's own output, not runtime
observations: submitting them back to ECS would loop. They, and ECS's other EventBridge events,
are ignored with a reason; so are EventBridge events from other sources.
"""

from __future__ import annotations

import msgspec

from worker.decode import reasons
from worker.decode.format_contract import JsonFormat
from worker.decode.result import DecodeResult

__all__ = ["EventBridgeEnvelope", "EventBridgeFormat"]

_TASK_STATE_CHANGE = "ECS Task State Change"


class EventBridgeEnvelope(msgspec.Struct, kw_only=True):
    """The members of an EventBridge event that say where it comes from."""

    detail_type: str = msgspec.field(name="detail-type")
    source: str = ""


class EventBridgeFormat(JsonFormat[EventBridgeEnvelope]):
    """EventBridge events: all ignored, with the reason why."""

    document = EventBridgeEnvelope

    def apply(self, doc: EventBridgeEnvelope, index: int, into: DecodeResult) -> None:
        if doc.source != "aws.ecs":
            into.ignored.append(reasons.EVENTBRIDGE_NOT_ECS)
        elif doc.detail_type == _TASK_STATE_CHANGE:
            into.ignored.append(reasons.ECS_EVENTBRIDGE_TASK)
        else:
            into.ignored.append(reasons.ECS_EVENTBRIDGE_OTHER)
