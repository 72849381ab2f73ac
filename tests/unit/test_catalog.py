import pytest

from herald.schemas.catalog import (
    CHANNELS,
    RETRY_TIERS,
    consumer_group,
    dead_letter_topic,
    delivery_topics,
    notification_topic,
    qualified,
    retry_topic,
    topic_catalog,
)
from herald.schemas.codec import SCHEMA_FILES


def test_names_come_from_functions():
    assert notification_topic("email") == "notifications.email"
    assert dead_letter_topic("notifications.email") == "notifications.email.dlq"
    assert qualified("registrations.events", "") == "registrations.events"
    assert qualified("registrations.events", "t1") == "t1.registrations.events"
    assert consumer_group("deliver", "notifications.email", "t1") == "t1.herald.deliver.notifications.email"
    assert retry_topic("notifications.email", 2) == "notifications.email.retry.2"
    assert delivery_topics("whatsapp") == ("notifications.whatsapp", "notifications.whatsapp.retry.1",
                                           "notifications.whatsapp.retry.2", "notifications.whatsapp.retry.3")


def test_a_tier_beyond_the_catalog_is_rejected():
    with pytest.raises(ValueError, match="retry tier 4 does not exist"):
        retry_topic("notifications.email", RETRY_TIERS + 1)


def test_unknown_channel_is_rejected():
    with pytest.raises(ValueError, match="unknown channel 'sms'"):
        notification_topic("sms")


def test_catalog_covers_every_stage_topic_once():
    names = [spec.name for spec in topic_catalog()]
    assert len(names) == len(set(names))
    for channel in CHANNELS:
        assert notification_topic(channel) in names
        assert dead_letter_topic(notification_topic(channel)) in names
        assert set(delivery_topics(channel)) <= set(names)
    assert {"registrations.events", "notifications.status"} <= set(names)


def test_status_topic_is_compacted_and_values_name_real_schemas():
    specs = {spec.name: spec for spec in topic_catalog()}
    assert specs["notifications.status"].config() == {"cleanup.policy": "compact", "retention.ms": "-1"}
    for spec in specs.values():
        assert spec.value_schema in SCHEMA_FILES or spec.value_schema.startswith("any")


def test_namespace_prefixes_every_topic():
    assert all(spec.name.startswith("ns.") for spec in topic_catalog("ns"))
