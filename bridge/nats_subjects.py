"""MQTT topic names and filters <-> NATS subjects, exactly as nats-server's own MQTT support maps them.

Why the same mapping: a NATS JetStream cluster is the cloud tier of a fleet of Roost gateways, and the
cluster's own MQTT listener (or any NATS client) must see the names Roost forwards under the names an MQTT
client of nats-server would have used. nats-server (`server/mqtt.go`, `mqttToNATSSubjectConversion`,
`natsSubjectToMQTTTopic`; docs.nats.io, MQTT, "Topics and subjects") converts character by character:

    MQTT                        NATS
    '/' between two levels      '.'                 foo/bar    -> foo.bar
    '/' at the start            '/.'                /foo       -> /.foo
    '/' at the end              './'                foo/       -> foo./
    '/' before another '/'      './'                foo//bar   -> foo./.bar
    '/' after an empty level    '/.'                //foo      -> /./.foo
    '.'                         '//'                foo.bar    -> foo//bar
    '+' (filters only)          '*'                 foo/+      -> foo.*
    '#' (filters only)          '>'                 foo/#      -> foo.>
    whitespace, DEL             refused             (a NATS subject cannot hold them)

and back (`subject_to_topic`): '/.' -> '/', '//' -> '.', '.' -> '/', and any other '/' is dropped,
as nats-server does. A MQTT `#` also matches its parent level [MQTT-4.7.1-2] (`foo/#` matches `foo`) and a
NATS `>` does not, so a filter ending in `/#` becomes two subjects (`foo.>` and `foo`), the two subscriptions
nats-server makes for it.

Two refusals of our own, beyond nats-server's: a topic level that is exactly `*` or `>` would become a
NATS wildcard token (a publish to it is refused by NATS, a filter would silently widen), so it is refused
with a clear error; and an empty topic is refused [MQTT-4.7.3-1].

`remote_prefix` is put in front of the MQTT topic before conversion (`site1/` + `sensors/t` ->
`site1.sensors.t`), so an MQTT client of nats-server sees the topic `site1/sensors/t`.

Every function is a loop over characters: no recursion, cost linear in the topic's length.
"""

from __future__ import annotations

from bridge.errors import BridgeError

__all__ = [
    "SubjectError",
    "filter_to_subjects",
    "stream_subjects",
    "subject_to_topic",
    "topic_to_subject",
]

_REFUSED = frozenset(" \t\n\r\f\x7f")


class SubjectError(BridgeError):
    """A topic or filter that has no NATS subject (whitespace, a `*`/`>` level, a wildcard in a name)."""


def _convert(topic: str, wildcards: bool) -> str:
    if not topic:
        raise SubjectError("an empty topic has no NATS subject [MQTT-4.7.3-1]")
    out: list[str] = []
    last = len(topic) - 1
    ends_with_dot = False  # whether what was written so far ends with a NATS token separator
    for i, char in enumerate(topic):
        if char == "/":
            if i == 0 or ends_with_dot:
                out.append("/.")  # an empty level before this separator
                ends_with_dot = True
            elif i == last or topic[i + 1] == "/":
                out.append("./")  # an empty level after it
                ends_with_dot = False
            else:
                out.append(".")
                ends_with_dot = True
            continue
        ends_with_dot = False
        if char == ".":
            out.append("//")
        elif char in _REFUSED:
            raise SubjectError(f"{topic!r}: whitespace and DEL have no NATS subject (nats-server refuses them)")
        elif char == "+" or char == "#":
            if not wildcards:
                raise SubjectError(f"{topic!r}: wildcards not allowed in a topic name [MQTT-3.3.2-2]")
            out.append("*" if char == "+" else ">")
        else:
            out.append(char)
    if ends_with_dot:
        out.append("/")  # the topic ends with an empty level
    subject = "".join(out)
    _refuse_nats_wildcard_levels(topic, wildcards)
    return subject


def _refuse_nats_wildcard_levels(topic: str, wildcards: bool) -> None:
    """A level that is exactly `*` or `>` becomes a NATS wildcard token: refuse it rather than widen a
    filter or publish to a subject NATS refuses. (`a*b` is fine: only a whole token is a wildcard.)"""
    start = 0
    length = len(topic)
    while start <= length:
        end = topic.find("/", start)
        if end < 0:
            end = length
        if end - start == 1 and topic[start] in "*>":
            raise SubjectError(
                f"{topic!r}: the level {topic[start]!r} would be a NATS wildcard"
                + (" (use + or # in a filter)" if wildcards else "")
            )
        start = end + 1


def topic_to_subject(topic: str, prefix: str = "") -> str:
    """The NATS subject of an MQTT topic name (`prefix` is an MQTT topic prefix such as `site1/`)."""
    return _convert(prefix + topic, wildcards=False)


def filter_to_subjects(topic_filter: str, prefix: str = "") -> tuple[str, ...]:
    """The NATS subjects that together match what an MQTT topic filter matches: one, or two for a filter
    ending in `/#` (its parent level too [MQTT-4.7.1-2], as nats-server subscribes to both)."""
    full = prefix + topic_filter
    subject = _convert(full, wildcards=True)
    if full.endswith("/#") and len(full) > 2:
        parent = _convert(full[:-2], wildcards=True)
        return (subject, parent)
    return (subject,)


def stream_subjects(prefix: str) -> tuple[str, ...]:
    """What a stream holding everything under `prefix` subscribes to: `site1/` -> (`site1.>`,);
    no prefix -> (`>`,). A NATS subject filter matches whole tokens only, so the prefix must end with `/`
    (the bridge's configuration checks that)."""
    if not prefix:
        return (">",)
    if not prefix.endswith("/"):
        raise SubjectError(f"remote_prefix {prefix!r} must end with '/' to be the first tokens of a subject")
    # Every forwarded topic has at least one character after the prefix, so `prefix.>` covers them all.
    return filter_to_subjects(prefix + "#")[:1]


def subject_to_topic(subject: str, prefix: str = "") -> str | None:
    """The MQTT topic of a NATS subject (nats-server's `natsSubjectToMQTTTopic`), with `prefix` taken
    off; None when the topic does not start with it (not ours to bring down)."""
    out: list[str] = []
    i = 0
    last = len(subject) - 1
    while i <= last:
        char = subject[i]
        if char == "/":
            if i < last and subject[i + 1] == ".":
                out.append("/")
                i += 1
            elif i < last and subject[i + 1] == "/":
                out.append(".")
                i += 1
            # any other '/' is dropped, as nats-server does
        elif char == ".":
            out.append("/")
        else:
            out.append(char)
        i += 1
    topic = "".join(out)
    if prefix:
        if not topic.startswith(prefix) or len(topic) == len(prefix):
            return None
        topic = topic[len(prefix):]
    return topic or None
