"""Request signatures: what is accepted, and each rejection with its code."""

import pytest

from herald.producers.signing import SignatureRejected, sign, verify

BODY = b'{"type": "registration.created"}'
NOW = 1_800_000_000


def check(secrets=("s3cret",), body=BODY, timestamp=str(NOW), signature=None, now=NOW):
    signature = signature if signature is not None else sign("s3cret", BODY, NOW).signature
    verify(secrets, body, timestamp, signature, now=now, tolerance_s=300)


def test_a_body_signed_now_with_a_known_secret_is_accepted():
    check()
    check(secrets=("new-secret", "s3cret"))  # during a rotation both are accepted
    check(now=NOW + 299)


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"timestamp": ""}, "missing_timestamp"),
    ({"signature": ""}, "missing_signature"),
    ({"timestamp": "yesterday"}, "bad_timestamp"),
    ({"now": NOW + 301}, "stale_timestamp"),
    ({"now": NOW - 301}, "stale_timestamp"),
    ({"body": BODY + b" "}, "bad_signature"),
    ({"secrets": ("other",)}, "bad_signature"),
    ({"signature": "sha256=" + "0" * 64}, "bad_signature"),
])
def test_each_rejection_names_its_reason(kwargs, code):
    with pytest.raises(SignatureRejected) as rejected:
        check(**kwargs)
    assert rejected.value.code == code


def test_a_replayed_request_outside_the_window_says_how_old_it_is():
    with pytest.raises(SignatureRejected, match="is 900 s old; the tolerance is 300 s"):
        check(now=NOW + 900)


def test_the_signature_covers_the_timestamp():
    moved = sign("s3cret", BODY, NOW + 1).signature
    with pytest.raises(SignatureRejected, match="does not match"):
        check(signature=moved)
