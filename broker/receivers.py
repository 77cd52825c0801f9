"""What the router hands deliveries to: a small `typing.Protocol`, so that routing imports no connection.

An MQTT connection (`broker/engine/connection.py`), a control-plane watcher (`BrokerService.watch`) and,
later, a bridge link are all receivers: the broker keeps them by session key (`Broker.connections`) and
calls only what is below. Anything with these attributes and methods can receive messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from broker.codec import Will
    from broker.hooks import ClientInfo
    from broker.session import Message

__all__ = ["DeliveryReceiver", "PlainForm"]

# The form of a QoS 0 PUBLISH's bytes: (protocol version, tenant mount, retain flag). Two receivers with the
# same form take the same bytes (see `Broker.publish_plain`).
PlainForm = tuple[int, str, bool]


class DeliveryReceiver(Protocol):
    # Who it is, as the auth hook described it; None for receivers that are no MQTT client (watchers):
    # kicks, client listings and ACL checks pass those by.
    client: ClientInfo | None
    # Its write buffer is full: QoS 0 to it is dropped and counted, QoS 1/2 waits in its session's queue.
    congested: bool
    # How many QoS 1/2 deliveries may be unacknowledged at once [MQTT-3.3.4-7].
    inflight_limit: int
    # QoS 1/2 sends held until their packet identifier is on disk (strict durability); later ones wait.
    held_sends: int
    # The form in which it takes a plain QoS 0 PUBLISH as another client sent it; None: never.
    plain_form: PlainForm | None

    def send_message(
        self, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...], packet_id: int | None,
        dup: bool = False,
    ) -> bool:
        """Send one PUBLISH; False when it is larger than the receiver's maximum packet size and was
        discarded [MQTT-3.1.2-25]."""
        ...

    def send_plain(self, data: bytes) -> bool:
        """Send the bytes of a plain QoS 0 PUBLISH already in this receiver's `plain_form`."""
        ...

    def taken_over(self) -> Will | None:
        """Another connection took its session [MQTT-3.1.4-3]: close, and hand back the will."""
        ...

    def close_for_admin(self) -> None:
        """Closed by an administrator (kick, revoked credentials); no will is published."""
        ...
