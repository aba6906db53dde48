"""TopicTemplate: fixed topics, topics built from events, and the events that cannot make a topic."""

from __future__ import annotations

import pytest

from bspump.mqtt.topic_template import TopicTemplate


def test_fixed_topic() -> None:
    template = TopicTemplate("plant/line-1/out")
    assert template.fixed == "plant/line-1/out" and template.render(b"anything") == "plant/line-1/out"


def test_fields_are_filled_from_the_event() -> None:
    template = TopicTemplate("devices/{device_id}/telemetry/{kind}")
    assert template.fields == ("device_id", "kind")
    assert template.render({"device_id": 42, "kind": "temp"}) == "devices/42/telemetry/temp"
    assert TopicTemplate("a/{{literal}}/{x}").render({"x": "y"}) == "a/{literal}/y"


@pytest.mark.parametrize(("event", "error", "words"), [
    ({"kind": "t"}, KeyError, "no field 'device_id'"),
    ({"device_id": "+", "kind": "t"}, ValueError, "wildcard"),
    ({"device_id": "a#", "kind": "t"}, ValueError, "wildcard"),
    ("not a mapping", TypeError, "needs an event with fields"),
])
def test_events_that_make_no_topic(event: object, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        TopicTemplate("devices/{device_id}/telemetry/{kind}").render(event)


@pytest.mark.parametrize(("template", "words"), [
    ("", "empty"), ("a/+/b", "wildcards"), ("a/#", "wildcards"), ("a/{}", "empty placeholder"),
    ("a/{x:>3}", "format specs"), ("a/{x", "not a valid template"),
])
def test_invalid_templates(template: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        TopicTemplate(template)
