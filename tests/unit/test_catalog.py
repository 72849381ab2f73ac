import json

import pytest

from herald.schemas.catalog import (
    RETRY_TIERS,
    channel_of_topic,
    consumer_group,
    dead_letter_topic,
    dead_letter_topics,
    delivery_topics,
    event_topics,
    notification_topic,
    orphaned_channel_topics,
    qualified,
    retry_topic,
    topic_catalog,
)
from herald.schemas.codec import SCHEMA_FILES
from tests.catalogs import example, written_catalog


def test_names_come_from_functions():
    assert notification_topic("email") == "notifications.email"
    assert dead_letter_topic("notifications.email") == "notifications.email.dlq"
    assert qualified("tasks.events", "") == "tasks.events"
    assert qualified("tasks.events", "t1") == "t1.tasks.events"
    assert consumer_group("deliver", "notifications.email", "t1") == "t1.herald.deliver.notifications.email"
    assert retry_topic("notifications.email", 2) == "notifications.email.retry.2"
    assert delivery_topics("sms") == ("notifications.sms", "notifications.sms.retry.1",
                                      "notifications.sms.retry.2", "notifications.sms.retry.3")


def test_a_channels_topics_name_their_channel_and_herald_s_own_do_not():
    assert [channel_of_topic(t) for t in ("notifications.sms", "notifications.sms.retry.2",
                                          "notifications.sms.dlq")] == ["sms", "sms", "sms"]
    assert [channel_of_topic(t) for t in ("notifications.status", "notifications.missing",
                                          "notifications.status.stats", "tasks.events")] == [None] * 4


def test_a_tier_beyond_the_catalog_is_rejected():
    with pytest.raises(ValueError, match="retry tier 4 does not exist"):
        retry_topic("notifications.email", RETRY_TIERS + 1)


@pytest.mark.parametrize("name", ["registrations", "tasks"])
def test_the_topics_follow_from_the_catalog_each_once(name):
    catalog = example(name)
    names = [spec.name for spec in topic_catalog(catalog)]
    assert len(names) == len(set(names))
    for channel in catalog.channels:
        assert set(delivery_topics(channel)) <= set(names)
        assert dead_letter_topic(notification_topic(channel)) in names
    for topic in event_topics(catalog):
        assert {topic, dead_letter_topic(topic)} <= set(names)
    assert "notifications.status" in names
    assert set(dead_letter_topics(catalog)) == {n for n in names if n.endswith(".dlq")}


def test_a_channel_or_event_kind_added_to_the_catalog_gets_its_topics(tmp_path):
    def add(document):
        document["events"]["ticket"] = {**document["events"]["registration"], "topic": None,
                                        "types": ["ticket.created"], "type_field": None}
        document["events"]["ticket"]["schema"] = str(tmp_path / "ticket.avsc")
        document["events"]["ticket"].pop("earlier_schemas")
        document["channels"]["sms"] = {**document["channels"]["whatsapp"], "partitions": 3}
    schema = example().event_schemas["registration"] | {"name": "TicketEvent"}
    (tmp_path / "ticket.avsc").write_text(json.dumps(schema))
    _path, catalog = written_catalog(tmp_path, add)
    specs = {spec.name: spec for spec in topic_catalog(catalog)}
    assert {"ticket.events", "ticket.events.dlq", "notifications.sms.retry.3"} <= set(specs)
    assert specs["notifications.sms"].partitions == 3


def test_status_topic_is_compacted_and_values_name_real_schemas(catalog):
    specs = {spec.name: spec for spec in topic_catalog(catalog)}
    # every outcome kept uncompacted as long as the requests: the notification history is rebuilt from both
    assert specs["notifications.status"].config() == {"cleanup.policy": "compact", "retention.ms": "-1",
                                                      "min.compaction.lag.ms": str(7 * 24 * 3600 * 1000)}
    assert specs["notifications.email"].retention_ms == 7 * 24 * 3600 * 1000
    for spec in specs.values():
        known = (*SCHEMA_FILES, "herald.RegistrationEvent")
        assert spec.value_schema in known or spec.value_schema.startswith("any")


def test_namespace_prefixes_every_topic(catalog):
    assert all(spec.name.startswith("ns.") for spec in topic_catalog(catalog, "ns"))


def test_the_topics_a_renamed_channel_leaves_behind_are_found_in_its_namespace_only(catalog):
    existing = {"t1.notifications.email", "t1.notifications.sms", "t1.notifications.sms.retry.2",
                "t1.notifications.sms.dlq", "t1.notifications.status", "t2.notifications.fax",
                "notifications.pager", "t1.registrations.events"}
    assert orphaned_channel_topics(existing, catalog, "t1") == {
        "sms": ("t1.notifications.sms", "t1.notifications.sms.dlq", "t1.notifications.sms.retry.2")}
    assert orphaned_channel_topics(existing, catalog) == {"pager": ("notifications.pager",)}
