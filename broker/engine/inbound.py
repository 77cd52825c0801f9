"""The spec's rules around a client's PUBLISH, as pure functions: what is refused before admission, and
which acknowledgement answers a QoS 1/2 PUBLISH after it.

The engine (`broker/engine/connection.py`) runs the one PUBLISH path: `check_publish`, then
`Admission.admit` (broker/engine/admission.py), then the route, then `publish_ack`. Nothing here touches
a session, a hook or a socket: the checks raise `ProtocolError` with the reason code to close with, and the
acknowledgement is bytes.
"""

from __future__ import annotations

from broker.codec import Puback, Publish, Pubrec, ReasonCode, encode
from broker.errors import ProtocolError
from broker.settings import BrokerSettings

__all__ = ["check_publish", "publish_ack"]


def check_publish(packet: Publish, settings: BrokerSettings, awaiting_release: int) -> None:
    """Refuse what no admission could let through: a new QoS 2 PUBLISH over the receive maximum
    (`awaiting_release`: the client's QoS 2 messages whose PUBREL has not come), RETAIN when retain is not
    available. (A subscription identifier or a bad topic alias is refused earlier, as the engine reads the
    properties.)"""
    if packet.qos == 2 and awaiting_release >= settings.receive_maximum:
        raise ProtocolError("receive maximum exceeded [MQTT-3.3.4-9]", ReasonCode.RECEIVE_MAXIMUM_EXCEEDED)
    if packet.retain and not settings.retain_available:
        raise ProtocolError("retain is not available [MQTT-3.3.1-?]", ReasonCode.RETAIN_NOT_SUPPORTED)


def publish_ack(qos: int, packet_id: int, refused: int, version: int) -> tuple[bytes, int]:
    """The PUBACK (QoS 1) or PUBREC (QoS 2) answering a PUBLISH, and its reason code; `refused` is the
    admission's reason code, 0 when the message was routed."""
    reason = refused
    if refused and version != 5:
        if refused != ReasonCode.NOT_AUTHORIZED:
            # Refused by a hook (the quota): 3.1.1 cannot hear a reason, so the connection is closed rather
            # than acknowledged [MQTT-3.3.5-2].
            raise ProtocolError("publish refused (quota exceeded) [MQTT-3.3.5-2]", refused)
        reason = 0  # 3.1.1 cannot hear "not authorized": a positive acknowledgement [MQTT-3.3.5-2].
    if qos == 1:
        # PUBACK with reason 0 and no properties has the same 4 bytes in every version [MQTT-3.4.2-1].
        return (encode(Puback(packet_id, reason), version) if reason else b"\x40\x02" + packet_id.to_bytes(2, "big"),
                reason)
    return encode(Pubrec(packet_id, reason), version), reason
