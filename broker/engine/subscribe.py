"""SUBSCRIBE and UNSUBSCRIBE: a client's filters mapped into the broker's namespace, judged by the hooks.

A filter is granted whole, in part (an allowed ACL filter overlaps it: each message is then checked at
delivery, see broker/hooks.py), or refused: v5 0x87 Not authorized, 3.1.1 0x80 Failure [MQTT-3.9.3-1]; one
over the topic limits (`broker/limits.py`) is refused as an invalid filter is (v5 0x8F, 3.1.1 0x80).
Retained messages follow a new subscription, filtered the same way.
"""

from __future__ import annotations

from broker.codec import ProtocolVersion, ReasonCode, Suback, Subscribe, Unsuback, Unsubscribe
from broker.codec.topics import parse_shared, validate_topic_filter
from broker.core import Broker
from broker.errors import ProtocolError
from broker.hooks import ClientInfo, Grant
from broker.limits import check_topic
from broker.session import Message, Session, SubscriptionRecord

__all__ = ["internal_filter", "subscribe", "unsubscribe"]

_V5 = ProtocolVersion.MQTT_5
_SUBSCRIBE_REFUSED_V3 = 0x80

# Retained messages to send once the SUBACK is out, per granted subscription.
Retained = list[tuple[SubscriptionRecord, list[Message]]]


def subscribe(broker: Broker, session: Session, client: ClientInfo, version: int,
              packet: Subscribe, bridge: bool = False) -> tuple[Suback, Retained]:
    """Add the granted subscriptions; return the SUBACK and the retained messages that follow it.

    `bridge`: the client connected with the bridge bit (3.1.1 level 0x84, Mosquitto's `try_private`; not in
    the spec [MQTT-3.1.2-2], see docs/architecture.md). As Mosquitto does, its subscriptions get No Local
    (its own messages are not sent back to it [MQTT-3.8.3-3]) and Retain As Published (a retained message
    stays retained on the other side [MQTT-3.3.1-12]), the options 3.1.1 cannot express."""
    v5 = version == _V5
    hooks = broker.hooks
    sub_ids = packet.properties.subscription_identifiers
    sub_id = sub_ids[0] if sub_ids else None
    codes: list[int] = []
    retained: Retained = []
    for sub in packet.subscriptions:
        topic_filter = sub.topic_filter
        try:
            validate_topic_filter(topic_filter)
        except ProtocolError:
            codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else _SUBSCRIBE_REFUSED_V3)
            continue
        if sub.no_local and topic_filter.startswith("$share/"):
            raise ProtocolError("No Local on a shared subscription [MQTT-3.8.3-4]")
        if check_topic(parse_shared(topic_filter)[1], broker.settings, broker.stats, "subscribe"):
            # Deeper or longer than the limits (broker/limits.py): refused like an invalid filter.
            codes.append(ReasonCode.TOPIC_FILTER_INVALID if v5 else _SUBSCRIBE_REFUSED_V3)
            continue
        internal = internal_filter(client, topic_filter)
        grant = hooks.authorize_subscribe(client, topic_filter) if internal is not None else Grant.NONE
        if internal is None or not grant:
            codes.append(ReasonCode.NOT_AUTHORIZED if v5 else _SUBSCRIBE_REFUSED_V3)
            continue
        group, plain, full = internal
        if broker.subscription_limit(session, full) is not None:
            # Over the client's or the tenant's subscription limit (broker/tenants.py); O(1).
            codes.append(ReasonCode.QUOTA_EXCEEDED if v5 else _SUBSCRIBE_REFUSED_V3)
            continue
        no_local, as_published = (True, True) if bridge and group is None else (sub.no_local, sub.retain_as_published)
        record = SubscriptionRecord(full, sub.qos, no_local, as_published, sub.retain_handling, sub_id,
                                    grant is Grant.PARTIAL)
        outcome = broker.subscribe(session, record)
        codes.append(sub.qos)  # Granted QoS: every QoS is supported [MQTT-3.9.3-1].
        # Retained messages: not for shared subscriptions; retain handling 0 always, 1 only for a new
        # subscription, 2 never [MQTT-3.3.1-9][MQTT-3.3.1-10][MQTT-3.3.1-11].
        if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and not outcome.existed)):
            messages = list(broker.retained_for(plain))
            if record.partial:  # only what the reader's ACL lets it read
                messages = [m for m in messages if hooks.authorize_read(client, client.own_topic(m.topic))]
            retained.append((record, messages))
    return Suback(packet.packet_id, tuple(codes)), retained  # [MQTT-3.8.4-1]


def send_retained(broker: Broker, session: Session, retained: Retained) -> None:
    for record, messages in retained:
        record_ids = (record.subscription_id,) if record.subscription_id is not None else ()
        for message in messages:
            qos = message.qos if message.qos < record.qos else record.qos
            # Sent because of a new subscription: the RETAIN flag is 1 [MQTT-3.3.1-8].
            broker.deliver(session, message, qos, True, record_ids)


def unsubscribe(broker: Broker, session: Session, client: ClientInfo, version: int,
                packet: Unsubscribe) -> Unsuback:
    codes = []
    for topic_filter in packet.topic_filters:
        internal = internal_filter(client, topic_filter)
        removed = internal is not None and broker.unsubscribe(session, internal[2])  # [MQTT-3.10.4-1]
        codes.append(ReasonCode.SUCCESS if removed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
    return Unsuback(packet.packet_id, tuple(codes) if version == _V5 else ())  # [MQTT-3.10.4-4]


def internal_filter(client: ClientInfo, topic_filter: str) -> tuple[str | None, str, str] | None:
    """Map a client's filter into the broker's namespace: (share group, plain internal filter, full
    internal filter); None when a tenant client names a `$` filter it may not read."""
    group, plain = parse_shared(topic_filter)
    mount = client.mount
    if plain.startswith("$"):
        # `$` filters name the broker's own topics; tenants' namespaces also start with `$`, so only
        # `$SYS` is ever reachable, and from inside a tenant only by admins.
        if not plain.startswith("$SYS") or (mount and not client.is_admin):
            return None
    elif mount:
        plain = mount + plain
    full = plain if group is None else f"$share/{group}/{plain}"
    return group, plain, full

