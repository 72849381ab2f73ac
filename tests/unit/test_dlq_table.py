"""`herald dlq list` at 80 columns: topics, error classes and messages stay whole (they wrap),
nothing is cut to "notific…", and markup-looking text is shown as it is."""

from rich.console import Console

from herald.ops.cli_dlq import dead_letter_table

NID = "6f1c2a7e-9b1d-5c3e-8f00-1234567890ab"
ROWS = [
    {"id": 1712, "last_failed_at": "2026-11-23T10:11:12.345+00:00",
     "original_topic": "notifications.whatsapp.retry.3", "key": NID, "error_class": "ProviderRejected",
     "attempts": 3, "replay_count": 0, "state": "open",
     "error_message": "HTTP 400: the recipient +62••••••7890 is not registered on WhatsApp"},
    {"id": 9, "last_failed_at": "2026-11-23T10:12:00.000+00:00", "original_topic": "registrations.events",
     "key": "REG-[00042]", "error_class": "UndecodableRecord", "attempts": 0, "replay_count": 2,
     "state": "open", "error_message": "magic byte is 3, expected 0 [bold]"},
]


def rendered(rows) -> str:
    console = Console(width=80, record=True, color_system=None)
    console.print(dead_letter_table(rows, "dead letters"))
    return console.export_text()


def test_at_80_columns_every_row_is_whole_and_readable():
    text = rendered(ROWS)
    assert max(len(line) for line in text.splitlines()) <= 80
    words = " ".join(text.split())
    for expected in ("whatsapp.retry.3", "registrations.events", "ProviderRejected after 3 tries",
                     "UndecodableRecord, replayed 2x", "REG-[00042]", "expected 0 [bold]", "11-23 10:11"):
        assert expected in words, expected
    assert "not registered on WhatsApp" in words, "the message wraps, it is not cut"
    assert "6f1c2a7e…" in words and NID not in words, "a UUID key by its first 8 characters"
    assert "notific…" not in words and "Provide…" not in words


def test_states_show_only_when_the_list_mixes_them():
    assert "[open]" not in rendered(ROWS)
    assert "[replayed]" in rendered([ROWS[0], {**ROWS[1], "state": "replayed"}])
