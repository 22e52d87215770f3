"""OCPI's transport pieces without I/O: credentials tokens and the Authorization header, the
response format, the registration's objects, pagination and a live session's PATCH."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from proxy.api.ocpi import tokens
from proxy.api.ocpi.credentials import Identity, parse_credentials, parse_details, pick_version
from proxy.api.ocpi.envelope import OcpiError, Status, envelope, timestamp
from proxy.api.ocpi.live_sessions import apply_patch, parse_session
from proxy.api.ocpi.pages import MAX_LIMIT, Page, page_headers, parse_page
from testkit.ocpi_samples import credentials, spec_session_finished, spec_session_started

IDENTITY = Identity("https://api.example.nl", "OTHER", "NL", "ERE", "ERE proxy")


def test_tokens_are_random_printable_and_kept_as_their_digest():
    made = {tokens.new_token() for _ in range(100)}
    assert len(made) == 100 and all(tokens.valid_token(t) and len(t) == 43 for t in made)
    token = made.pop()
    assert tokens.digest(token) == tokens.digest(token) != tokens.digest(token + "x")
    assert len(tokens.digest(token)) == 64


def test_the_authorization_header_is_read_both_ways():
    token = "ebf3b399-779f-4497-9b9d-ac6ad3cc44d2"
    header = tokens.authorization(token)
    assert header == "Token " + base64.b64encode(token.encode()).decode()
    assert tokens.presented(header)[0] == token  # 2.2.1: base64 of the token
    assert token in tokens.presented(f"Token {token}")  # 2.1.1 and 2.2 habit: the token itself
    assert tokens.presented(f"token   {header[6:]}  ")[0] == token
    for refused in (None, "", "Token", "Token ", "Bearer abc", "Basic dXNlcjpwYXNz", "Token a b",
                    "Token " + "x" * 300, "Token \x00"):  # fmt: skip
        assert tokens.presented(refused) == [], refused


def test_a_token_with_whitespace_or_over_64_characters_is_no_token():
    assert not tokens.valid_token("a b") and not tokens.valid_token("x" * 65)
    assert not tokens.valid_token("") and not tokens.valid_token("é")
    assert tokens.valid_token("!" + "~" * 63)


def test_the_response_format():
    now = datetime(2015, 6, 30, 21, 59, 59, 123456, tzinfo=UTC)
    assert timestamp(now) == "2015-06-30T21:59:59Z"
    assert envelope(Status.INVALID_PARAMETERS, now, message="Missing required field: type") == {
        "status_code": 2001,
        "status_message": "Missing required field: type",
        "timestamp": "2015-06-30T21:59:59Z",
    }
    assert envelope(Status.SUCCESS, now, data=[]) == {
        "data": [],
        "status_code": 1000,
        "timestamp": "2015-06-30T21:59:59Z",
    }


def test_the_spec_credentials_examples_read():
    minimal = credentials(
        "ebf3b399-779f-4497-9b9d-ac6ad3cc44d2", "https://example.com/ocpi/versions"
    )
    parsed = parse_credentials(json.dumps(minimal).encode())
    assert parsed.url == "https://example.com/ocpi/versions"
    assert parsed.stored_roles() == [
        {"role": "CPO", "country_code": "BE", "party_id": "BEC", "name": "Example CPO BE/BEC"}
    ]
    three = credentials(
        "9e80aca8-28be-11e9-b210-d663bd873d93",
        "https://ocpi.example.com/versions",
        ("CPO", "NL", "EXO"),
        ("CPO", "NL", "PFC"),
        ("CPO", "nl", "cgp"),
    )
    three["roles"][0]["business_details"]["logo"] = {"url": "https://example.com/img/logo.jpg"}
    roles = parse_credentials(json.dumps(three).encode()).stored_roles()
    assert [(r["country_code"], r["party_id"]) for r in roles][-1] == ("NL", "CGP")


@pytest.mark.parametrize(
    "change",
    [
        {"token": "has space"},
        {"token": "x" * 65},
        {"token": ""},
        {"url": ""},
        {"roles": []},
        {"roles": [{"role": "CPO", "party_id": "EXA", "country_code": "NL"}]},
        {
            "roles": [
                {
                    "role": "KING",
                    "party_id": "EXA",
                    "country_code": "NL",
                    "business_details": {"name": "x"},
                }
            ]
        },
        {
            "roles": [
                {
                    "role": "CPO",
                    "party_id": "EX",
                    "country_code": "NL",
                    "business_details": {"name": "x"},
                }
            ]
        },
    ],
)
def test_malformed_credentials_are_refused(change):
    offered = credentials("token", "https://example.com/ocpi/versions") | change
    with pytest.raises(OcpiError) as caught:
        parse_credentials(json.dumps(offered).encode())
    assert caught.value.status == Status.INVALID_PARAMETERS


def test_a_role_may_not_repeat():
    twice = credentials(
        "t", "https://x.example/versions", ("CPO", "NL", "EXA"), ("CPO", "nl", "exa")
    )
    with pytest.raises(OcpiError, match="repeat"):
        parse_credentials(json.dumps(twice).encode())


def test_our_versions_details_and_credentials():
    assert IDENTITY.versions() == [{"version": "2.2.1", "url": "https://api.example.nl/ocpi/2.2.1"}]
    details = IDENTITY.details()
    assert {(e["identifier"], e["role"], e["url"]) for e in details["endpoints"]} == {
        ("credentials", "SENDER", "https://api.example.nl/ocpi/2.2.1/credentials"),
        ("cdrs", "RECEIVER", "https://api.example.nl/ocpi/2.2.1/cdrs"),
        ("sessions", "RECEIVER", "https://api.example.nl/ocpi/2.2.1/sessions"),
    }
    ours = IDENTITY.credentials("token-c")
    assert ours["roles"] == [
        {
            "role": "OTHER",
            "business_details": {"name": "ERE proxy"},
            "party_id": "ERE",
            "country_code": "NL",
        }
    ]


def _answer(data: object, status: int = 1000) -> bytes:
    return json.dumps(
        {"data": data, "status_code": status, "timestamp": "2019-01-01T00:00:00Z"}
    ).encode()


def test_the_platforms_versions_are_read_for_2_2_1():
    versions = [
        {"version": "2.1.1", "url": "https://www.server.com/ocpi/2.1.1"},
        {"version": "2.2.1", "url": "https://www.server.com/ocpi/2.2.1"},
    ]
    assert pick_version(_answer(versions)) == "https://www.server.com/ocpi/2.2.1"
    with pytest.raises(OcpiError) as caught:
        pick_version(_answer(versions[:1]))
    assert caught.value.status == Status.UNSUPPORTED_VERSION
    for broken in (b"<html>", _answer(versions, 2000), _answer({"version": "2.2.1"}), b"[]"):
        with pytest.raises(OcpiError) as caught:
            pick_version(broken)
        assert caught.value.status == Status.CLIENT_API_UNUSABLE


def test_the_platforms_details_are_read():
    details = {
        "version": "2.2.1",
        "endpoints": [
            {
                "identifier": "credentials",
                "role": "SENDER",
                "url": "https://example.com/ocpi/2.2/credentials",
            },
            {
                "identifier": "locations",
                "role": "SENDER",
                "url": "https://example.com/ocpi/cpo/2.2/locations",
            },
        ],
    }
    assert [e["identifier"] for e in parse_details(_answer(details))] == [
        "credentials",
        "locations",
    ]
    with pytest.raises(OcpiError) as caught:
        parse_details(_answer(details | {"version": "2.2"}))
    assert caught.value.status == Status.UNSUPPORTED_VERSION


def test_pages_are_asked_for_and_linked():
    page = parse_page({"offset": "150", "limit": "50"})
    assert page == Page(150, 50, None, None)
    url = "https://www.server.com/ocpi/2.2.1/cdrs"
    assert page_headers(page, 1000, url) == {
        "X-Total-Count": "1000",
        "X-Limit": str(MAX_LIMIT),
        "Link": f'<{url}?offset=200&limit=50>; rel="next"',
    }
    assert "Link" not in page_headers(page, 200, url)
    dated = parse_page({"date_from": "2016-01-01T00:00:00Z", "date_to": "2016-12-31T23:59:59"})
    assert dated.limit == MAX_LIMIT and dated.date_to == datetime(
        2016, 12, 31, 23, 59, 59, tzinfo=UTC
    )
    link = page_headers(dated, 1000, url)["Link"]
    assert "date_from=2016-01-01T00%3A00%3A00Z" in link and "offset=100" in link
    assert parse_page({"limit": "2000"}).limit == MAX_LIMIT


@pytest.mark.parametrize(
    "query", [{"offset": "-1"}, {"limit": "ten"}, {"limit": "9" * 20}, {"date_from": "today"}]
)
def test_bad_page_parameters_are_refused(query):
    with pytest.raises(OcpiError) as caught:
        parse_page(query)
    assert caught.value.status == Status.INVALID_PARAMETERS


def test_a_session_is_put_and_patched_as_the_spec_says():
    started = spec_session_started()
    kept = parse_session(json.dumps(started).encode(), "nl", "stk", "101")
    assert kept.session.status == "PENDING"
    add_period = {
        "kwh": 15.00,
        "charging_periods": [
            {
                "start_date_time": "2019-06-23T08:16:02Z",
                "dimensions": [{"type": "ENERGY", "volume": 2200}],
            }
        ],
        "total_cost": {"excl_vat": 0.80, "incl_vat": 0.88},
        "last_updated": "2019-06-23T08:16:02Z",
    }
    patched = apply_patch(kept.text, json.dumps(add_period).encode(), "NL", "STK", "101")
    again = apply_patch(patched.text, json.dumps(add_period).encode(), "NL", "STK", "101")
    assert len(again.session.charging_periods or ()) == 2
    cost = {
        "total_cost": {"excl_vat": 0.60, "incl_vat": 0.66},
        "last_updated": "2019-06-23T08:11:00Z",
    }
    costed = apply_patch(again.text, json.dumps(cost).encode(), "NL", "STK", "101")
    assert json.loads(costed.text)["total_cost"] == cost["total_cost"]
    assert len(costed.session.charging_periods or ()) == 2  # no periods in the PATCH: kept
    assert costed.last_updated == datetime(2019, 6, 23, 8, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    "patch",
    [
        {"kwh": 1},  # no last_updated
        {"id": "102", "last_updated": "2019-06-23T08:16:02Z"},
        {"status": "DONE", "last_updated": "2019-06-23T08:16:02Z"},
        {"charging_periods": "many", "last_updated": "2019-06-23T08:16:02Z"},
        {"kwh": -1, "last_updated": "2019-06-23T08:16:02Z"},
    ],
)
def test_a_patch_that_breaks_the_session_is_refused(patch):
    kept = parse_session(json.dumps(spec_session_finished()).encode(), "BE", "BEC", "101")
    with pytest.raises(OcpiError) as caught:
        apply_patch(kept.text, json.dumps(patch).encode(), "BE", "BEC", "101")
    assert caught.value.status == Status.INVALID_PARAMETERS


def test_a_put_must_name_its_url():
    with pytest.raises(OcpiError, match="URL"):
        parse_session(json.dumps(spec_session_finished()).encode(), "BE", "BEC", "102")
