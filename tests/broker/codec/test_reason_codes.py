from __future__ import annotations

import pytest

from broker.codec import ConnackReturnCode, PacketType, ProtocolVersion, ReasonCode, v3_connack_code


def test_aliases_share_values() -> None:
    assert ReasonCode.SUCCESS == ReasonCode.NORMAL_DISCONNECTION == ReasonCode.GRANTED_QOS_0 == 0
    assert ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED == 0xA2
    assert len({code.value for code in ReasonCode}) == 43
    assert PacketType.AUTH == 15 and ProtocolVersion.MQTT_3_1 == 3


@pytest.mark.parametrize(
    "reason,expected",
    [
        (0x00, ConnackReturnCode.ACCEPTED),
        (0x84, ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION),
        (0x85, ConnackReturnCode.IDENTIFIER_REJECTED),
        (0x88, ConnackReturnCode.SERVER_UNAVAILABLE),
        (0x89, ConnackReturnCode.SERVER_UNAVAILABLE),
        (0x8B, ConnackReturnCode.SERVER_UNAVAILABLE),
        (0x86, ConnackReturnCode.BAD_USERNAME_OR_PASSWORD),
        (0x87, ConnackReturnCode.NOT_AUTHORIZED),
        (0x8A, ConnackReturnCode.NOT_AUTHORIZED),
        (0x8C, ConnackReturnCode.NOT_AUTHORIZED),
        (0x80, ConnackReturnCode.NOT_AUTHORIZED),
        (0x97, ConnackReturnCode.SERVER_UNAVAILABLE),  # a limit: try later (the tenant connection limit)
    ],
)
def test_v3_connack_code(reason: int, expected: int) -> None:
    assert v3_connack_code(reason) == expected
