"""MQTT topic <-> NATS subject mapping, against nats-server's own cases (server/mqtt_test.go,
TestMQTTTopicAndSubjectConversion and TestMQTTFilterConversion), plus a round-trip property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.nats_subjects import (
    SubjectError,
    filter_to_subjects,
    stream_subjects,
    subject_to_topic,
    topic_to_subject,
)

# (MQTT topic, NATS subject), every success case of nats-server's TestMQTTTopicAndSubjectConversion.
TOPIC_CASES = [
    ("/", "/./"),
    ("//", "/././"),
    ("///", "/./././"),
    ("////", "/././././"),
    ("foo", "foo"),
    ("/foo", "/.foo"),
    ("//foo", "/./.foo"),
    ("///foo", "/././.foo"),
    ("///foo/", "/././.foo./"),
    ("///foo//", "/././.foo././"),
    ("///foo///", "/././.foo./././"),
    ("//.foo.//", "/././/foo//././"),
    ("foo/bar", "foo.bar"),
    ("/foo/bar", "/.foo.bar"),
    ("/foo/bar/", "/.foo.bar./"),
    ("foo/bar/baz", "foo.bar.baz"),
    ("/foo/bar/baz", "/.foo.bar.baz"),
    ("/foo/bar/baz/", "/.foo.bar.baz./"),
    ("bar/", "bar./"),
    ("bar//", "bar././"),
    ("bar///", "bar./././"),
    ("foo//bar", "foo./.bar"),
    ("foo///bar", "foo././.bar"),
    ("foo////bar", "foo./././.bar"),
    (".", "//"),
    ("..", "////"),
    ("...", "//////"),
    ("./", "//./"),
    (".//.", "//././/"),
    ("././.", "//.//.//"),
    ("././/.", "//.//././/"),
    (".foo", "//foo"),
    ("foo.", "foo//"),
    (".foo.", "//foo//"),
    ("foo../bar/", "foo////.bar./"),
    ("foo../bar/.", "foo////.bar.//"),
    ("/foo/", "/.foo./"),
    ("./foo/.", "//.foo.//"),
    ("foo.bar/baz", "foo//bar.baz"),
]

# (MQTT filter, NATS subject), every case of nats-server's TestMQTTFilterConversion.
FILTER_CASES = [
    ("+", "*"),
    ("/+", "/.*"),
    ("+/", "*./"),
    ("/+/", "/.*./"),
    ("foo/+", "foo.*"),
    ("foo/+/", "foo.*./"),
    ("foo/+/bar", "foo.*.bar"),
    ("foo/+/+", "foo.*.*"),
    ("foo/+/+/", "foo.*.*./"),
    ("foo/+/+/bar", "foo.*.*.bar"),
    ("foo//+", "foo./.*"),
    ("foo//+/", "foo./.*./"),
    ("foo//+//", "foo./.*././"),
    ("foo//+//bar", "foo./.*./.bar"),
    ("foo///+///bar", "foo././.*././.bar"),
    ("foo.bar///+///baz", "foo//bar././.*././.baz"),
    ("#", ">"),
    ("/#", "/.>"),
    ("/foo/#", "/.foo.>"),
    ("foo/#", "foo.>"),
    ("foo//#", "foo./.>"),
    ("foo///#", "foo././.>"),
    ("foo/bar/#", "foo.bar.>"),
    ("foo/bar.baz/#", "foo.bar//baz.>"),
]


@pytest.mark.parametrize(("topic", "subject"), TOPIC_CASES)
def test_topic_to_subject_and_back_as_nats_server(topic: str, subject: str) -> None:
    assert topic_to_subject(topic) == subject
    assert subject_to_topic(subject) == topic


@pytest.mark.parametrize(("topic_filter", "subject"), FILTER_CASES)
def test_filter_to_subject_as_nats_server(topic_filter: str, subject: str) -> None:
    assert filter_to_subjects(topic_filter)[0] == subject


@pytest.mark.parametrize(("topic", "message"), [
    ("foo/+", "wildcards not allowed"),
    ("foo/#", "wildcards not allowed"),
    ("foo bar", "whitespace"),
    ("foo\tbar", "whitespace"),
    ("foo\x7fbar", "whitespace"),
    ("", "empty topic"),
])
def test_names_nats_server_refuses_are_refused(topic: str, message: str) -> None:
    with pytest.raises(SubjectError, match=message):
        topic_to_subject(topic)


@pytest.mark.parametrize("topic", ["a/*", "*", ">/b", "a/>/b", "site/*/x"])
def test_levels_that_would_be_nats_wildcards_are_refused(topic: str) -> None:
    with pytest.raises(SubjectError, match="NATS wildcard"):
        topic_to_subject(topic)
    with pytest.raises(SubjectError, match="NATS wildcard"):
        filter_to_subjects(topic)


def test_a_star_inside_a_level_is_a_plain_character() -> None:
    assert topic_to_subject("a*b/c>") == "a*b.c>"


def test_hash_filter_also_matches_its_parent_as_mqtt_requires() -> None:
    # [MQTT-4.7.1-2]: "sport/#" matches "sport" too; a NATS ">" needs at least one token, so two subjects.
    assert filter_to_subjects("foo/#") == ("foo.>", "foo")
    assert filter_to_subjects("foo//#") == ("foo./.>", "foo./")
    assert filter_to_subjects("#") == (">",)
    assert filter_to_subjects("foo/+") == ("foo.*",)


def test_remote_prefix_becomes_the_first_tokens() -> None:
    assert topic_to_subject("sensors/t", "site1/") == "site1.sensors.t"
    assert filter_to_subjects("cmd/#", "site1/") == ("site1.cmd.>", "site1.cmd")
    assert subject_to_topic("site1.cmd.light", "site1/") == "cmd/light"
    assert subject_to_topic("site2.cmd.light", "site1/") is None
    assert stream_subjects("site1/") == ("site1.>",)
    assert stream_subjects("") == (">",)
    with pytest.raises(SubjectError, match="must end with"):
        stream_subjects("site1")


def test_stray_slashes_in_a_nats_subject_are_dropped_as_nats_server_does() -> None:
    assert subject_to_topic("a/b.c") == "ab/c"


_topic_chars = st.sampled_from("ab/.-_$é*>+#")


@given(st.text(_topic_chars, min_size=1, max_size=40))
def test_every_topic_nats_accepts_round_trips(topic: str) -> None:
    try:
        subject = topic_to_subject(topic)
    except SubjectError:
        levels = topic.split("/")
        assert "+" in topic or "#" in topic or "*" in levels or ">" in levels
        return
    assert " " not in subject
    assert subject_to_topic(subject) == topic
    # Every token of the subject is non-empty, so NATS takes it as a subject.
    assert all(token for token in subject.split("."))


@given(st.text(_topic_chars, min_size=1, max_size=40), st.sampled_from(["", "site1/", "a.b/c/"]))
def test_prefix_round_trips(topic: str, prefix: str) -> None:
    try:
        subject = topic_to_subject(topic, prefix)
    except SubjectError:
        return
    assert subject_to_topic(subject, prefix) == topic


def test_long_topics_do_not_recurse() -> None:
    topic = "/".join(["x"] * 50_000)
    assert subject_to_topic(topic_to_subject(topic)) == topic
