import uuid

import pytest

from herald.schemas.ids import _NOTIFICATION_NAMESPACE, derived_event_id, notification_id, uuid5_text


@pytest.mark.parametrize("name", ["", "REG-1|e_ticket|email", "derived|ü-名|x", "x" * 1000])
def test_the_fast_uuid5_is_the_standard_one(name):
    assert uuid5_text(name) == str(uuid.uuid5(_NOTIFICATION_NAMESPACE, name))


def test_ids_keep_their_published_values():
    # Providers dedupe on these: a change would send every notification again after an upgrade.
    assert notification_id("REG-7", "e_ticket", "email") == "e1574f4a-ccae-5c50-86e8-6c131606b66a"
    assert derived_event_id("e1", "k") == str(uuid.uuid5(_NOTIFICATION_NAMESPACE, "derived|e1|k"))
