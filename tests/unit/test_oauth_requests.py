"""Reading OAuth2 client-credentials token requests (`proxy.api.oauth_requests`), without I/O."""

from __future__ import annotations

import base64
from urllib.parse import quote_plus, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.api.keys import SCOPES, new_key, parse_key
from proxy.api.oauth_requests import (
    MAX_BODY_BYTES,
    OAuthError,
    narrow_scopes,
    read_token_request,
)

FORM = "application/x-www-form-urlencoded"
KEY = new_key()
KEY_ID, SECRET = KEY.key_id, KEY.key.split("_", 2)[2]


def basic(user: str, password: str) -> str:
    pair = f"{quote_plus(user)}:{quote_plus(password)}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def error_of(content_type, authorization, body) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        read_token_request(content_type, authorization, body)
    return caught.value


def test_basic_and_form_credentials_name_the_key():
    body = b"grant_type=client_credentials&scope=customers%3Aread+sessions:read"
    by_basic = read_token_request(f"{FORM}; charset=UTF-8", basic(KEY_ID, SECRET), body)
    assert (by_basic.key_id, by_basic.secret) == (KEY_ID, SECRET)
    assert by_basic.scopes == ("customers:read", "sessions:read")
    assert SECRET not in repr(by_basic)
    form = urlencode(
        {"grant_type": "client_credentials", "client_id": KEY_ID, "client_secret": SECRET}
    )
    by_form = read_token_request(FORM.upper(), "Bearer something-else", form.encode())
    assert (by_form.key_id, by_form.secret, by_form.scopes) == (KEY_ID, SECRET, None)


@pytest.mark.parametrize(
    ("content_type", "authorization", "body", "error", "status"),
    [
        ("application/json", None, b"{}", "invalid_request", 400),
        (None, None, b"grant_type=client_credentials", "invalid_request", 400),
        (FORM, None, b"scope=x", "invalid_request", 400),
        (FORM, None, b"grant_type=authorization_code", "unsupported_grant_type", 400),
        (FORM, None, b"grant_type=client_credentials", "invalid_client", 401),
        (FORM, "Basic %%%", b"grant_type=client_credentials", "invalid_client", 401),
        (FORM, None, b"grant_type=client_credentials&grant_type=x", "invalid_request", 400),
        (FORM, None, b"grant_type=client_credentials&a", "invalid_request", 400),
        (FORM, None, "grant_type=clïent".encode(), "invalid_request", 400),
        (FORM, None, b"x=" + b"1" * MAX_BODY_BYTES, "invalid_request", 400),
    ],
)
def test_malformed_requests_get_their_rfc_6749_error(
    content_type, authorization, body, error, status
):
    caught = error_of(content_type, authorization, body)
    assert (caught.error, caught.status) == (error, status)
    assert caught.body() == {"error": error, "error_description": caught.description}


def test_a_failed_client_names_the_key_only_in_a_key_ids_form():
    grant = b"grant_type=client_credentials"
    named = error_of(FORM, basic(KEY_ID, "not-the-secret"), grant)
    assert (named.error, named.key_id) == ("invalid_client", KEY_ID)
    for client_id in ("x", "A" * 12, KEY_ID + "0", "é" * 12):
        caught = error_of(FORM, basic(client_id, SECRET), grant)
        assert (caught.error, caught.key_id) == ("invalid_client", None), client_id


def test_scopes_narrow_never_widen():
    held = ("customers:read", "sessions:read")
    assert narrow_scopes(None, held) == ("customers:read", "sessions:read")
    assert narrow_scopes(("sessions:read",), held) == ("sessions:read",)
    with pytest.raises(OAuthError) as caught:
        narrow_scopes(("customers:write",), held)
    assert caught.value.error == "invalid_scope"
    for scope in ("", "everything", "customers:read  sessions:read"):
        body = f"grant_type=client_credentials&scope={quote_plus(scope)}".encode()
        assert error_of(FORM, basic(KEY_ID, SECRET), body).error == "invalid_scope"


@given(body=st.binary(max_size=600), authorization=st.none() | st.text(max_size=80))
def test_any_bytes_are_a_request_or_an_oauth_error(body, authorization):
    try:
        wanted = read_token_request(FORM, authorization, body)
    except OAuthError as error:
        assert error.status in (400, 401)
    else:
        assert parse_key(f"ere_{wanted.key_id}_{wanted.secret}") is not None
        assert wanted.scopes is None or set(wanted.scopes) <= set(SCOPES)
