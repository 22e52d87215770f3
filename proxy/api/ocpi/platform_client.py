"""The registration's calls to the platform: its versions, then its 2.2.1 version details.

The credentials module's POST and PUT must fetch the platform's endpoints for the version with
its token B before answering (credentials.asciidoc). The versions URL comes from the platform,
so it is called as webhooks are (`proxy.api.webhook_urls`): https on a public address (`[api.ocpi]
allow_private` lets private addresses and http through, for development and tests), the name
resolved once and every address checked, the request sent to a checked address with the URL's
`Host` (and its name for TLS), no redirects followed, no environment proxies, at most
`MAX_ANSWER` bytes read, `TIMEOUT` seconds per call.

Errors: `OcpiError` status 3001 (the platform's API cannot be used: refused, unreachable, slow,
not OCPI) or 3002 (no 2.2.1), as the spec's registration wants them answered.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import httpx
import trio

from proxy.api.ocpi import tokens
from proxy.api.ocpi.credentials import parse_details, pick_version
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.webhook_urls import RefusedUrl, Unresolved, check_url, resolve

__all__ = ["MAX_ANSWER", "TIMEOUT", "PlatformEndpoints", "fetch_endpoints"]

MAX_ANSWER = 256 * 1024
TIMEOUT = 10.0
_ADDRESSES_TRIED = 3
USER_AGENT = "ere-proxy-ocpi/2.2.1"


@dataclass(frozen=True)
class PlatformEndpoints:
    """The platform's 2.2.1 version details URL and its endpoints."""

    version_url: str
    endpoints: list[dict[str, str | None]]


def _unusable(message: str) -> OcpiError:
    return OcpiError(Status.CLIENT_API_UNUSABLE, message)


async def _get(client: httpx.AsyncClient, url: str, token_b: str, allow_private: bool) -> bytes:
    try:
        parsed = check_url(url, allow_private=allow_private)
        with trio.fail_after(TIMEOUT):
            addresses = await resolve(parsed, allow_private=allow_private)
    except RefusedUrl as refused:
        raise _unusable(f"{url[:255]}: refused ({refused})") from None
    except (Unresolved, trio.TooSlowError):
        raise _unusable(f"{url[:255]}: the host does not resolve") from None
    headers = {
        "host": parsed.netloc.decode("ascii"),
        "authorization": tokens.authorization(token_b),
        "x-request-id": str(uuid.uuid4()),
        "x-correlation-id": str(uuid.uuid4()),
        "accept": "application/json",
        "accept-encoding": "identity",
    }
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    failure = "no address to connect to"
    for address in addresses[:_ADDRESSES_TRIED]:
        request = client.build_request(
            "GET", parsed.copy_with(host=address), headers=headers, extensions=extensions
        )
        try:
            with trio.fail_after(TIMEOUT):
                response = await client.send(request, stream=True)
                try:
                    body = await _read_capped(response)
                finally:
                    await response.aclose()
        except httpx.ConnectError:
            failure = "cannot connect"
            continue
        except (httpx.HTTPError, trio.TooSlowError, OSError) as error:
            raise _unusable(f"{url[:255]}: {type(error).__name__}") from None
        if response.status_code != 200:
            raise _unusable(f"{url[:255]}: HTTP {response.status_code}")
        return body
    raise _unusable(f"{url[:255]}: {failure}")


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > MAX_ANSWER:
            raise _unusable(f"an answer of the platform is larger than {MAX_ANSWER} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_endpoints(
    versions_url: str, token_b: str, *, allow_private: bool
) -> PlatformEndpoints:
    """The platform's 2.2.1 endpoints, found from its versions URL with its token B."""
    async with httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(TIMEOUT),
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"user-agent": USER_AGENT},
    ) as client:
        version_url = pick_version(await _get(client, versions_url, token_b, allow_private))
        endpoints = parse_details(await _get(client, version_url, token_b, allow_private))
    return PlatformEndpoints(version_url, endpoints)
