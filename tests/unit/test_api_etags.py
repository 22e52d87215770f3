"""Entity tags and preconditions, sans-IO: the tag is a function of the answer, `If-None-Match`
compares weakly, `If-Match` strongly, and malformed headers match nothing."""

from __future__ import annotations

import pytest

from proxy.api.etags import entity_tag, matches_any, none_match, require_match
from proxy.api.problems import Problem

BODY = {"id": "cus_1", "name": "Jan", "mandates": [{"year": 2026}]}
TAG = entity_tag(BODY)


def test_the_tag_is_strong_and_follows_the_answer_not_its_key_order():
    assert TAG.startswith('"') and TAG.endswith('"') and not TAG.startswith("W/")
    assert entity_tag(dict(reversed(BODY.items()))) == TAG
    assert entity_tag(BODY | {"name": "Jan "}) != TAG
    assert entity_tag(BODY | {"mandates": []}) != TAG


@pytest.mark.parametrize(
    ("header", "weak", "strong"),
    [
        (TAG, True, True),
        (f"W/{TAG}", True, False),
        ("*", True, True),
        (f' "a" ,{TAG}', True, True),
        ('"a", "b"', False, False),
        (TAG.strip('"'), False, False),
        ("", False, False),
        ("\x00" + TAG[:-1], False, False),
        ('"' + "x" * 10_000, False, False),
    ],
)
def test_list_headers_match_by_the_comparison_asked_for(header, weak, strong):
    assert matches_any(header, TAG, weak=True) is weak
    assert matches_any(header, TAG, weak=False) is strong


def test_if_none_match_and_if_match():
    assert none_match(f"W/{TAG}", TAG) and not none_match(None, TAG)
    require_match(TAG, TAG)
    with pytest.raises(Problem) as missing:
        require_match(None, TAG)
    assert missing.value.status == 428
    for stale in (f"W/{TAG}", '"other"', "garbage"):
        with pytest.raises(Problem) as failed:
            require_match(stale, TAG)
        assert failed.value.status == 412
