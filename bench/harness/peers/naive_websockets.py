"""A naive OCPP proxy on the `websockets` package (asyncio), the baseline of an asyncio developer.

For every charger connection, connect to the upstream with the same path, offering the
subprotocol the charger got (the charger's first offer), then relay whole messages both ways
(`async for message in src: await dst.send(message)`) until either side closes. Library defaults
otherwise (keepalive pings every 20 s); compression is off on both sides, as a transparent proxy
cannot compress.

    python -m bench.harness.peers.naive_websockets --port 9003 --upstream ws://127.0.0.1:9001 [--max-seconds 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

OCPP_SUBPROTOCOLS = [Subprotocol(p) for p in ("ocpp1.6", "ocpp2.0", "ocpp2.0.1", "ocpp2.1")]


def first_offered(
    connection: ServerConnection, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Take the charger's first offer (the upstream decides whether it accepts it)."""
    return offered[0] if offered else None


async def relay(src, dst) -> None:
    """Copy messages from `src` to `dst` until `src` closes."""
    with contextlib.suppress(ConnectionClosed):
        async for message in src:
            await dst.send(message)


def make_handler(upstream: str):
    """A connection handler that proxies `<path>` to `<upstream><path>`."""

    async def handler(down: ServerConnection) -> None:
        assert down.request is not None  # set once the handshake is done
        offer = [down.subprotocol] if down.subprotocol else None
        try:
            async with connect(
                upstream + down.request.path, subprotocols=offer, compression=None
            ) as up:
                pumps = [asyncio.create_task(relay(down, up)), asyncio.create_task(relay(up, down))]
                _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        except (TimeoutError, OSError, InvalidHandshake):
            await down.close(1011, "upstream unavailable")

    return handler


async def run(host: str, port: int, upstream: str, max_seconds: float) -> None:
    async with serve(
        make_handler(upstream),
        host,
        port,
        subprotocols=OCPP_SUBPROTOCOLS,
        select_subprotocol=first_offered,
        compression=None,
    ) as server:
        if max_seconds:
            await asyncio.sleep(max_seconds)
        else:
            await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.harness.peers.naive_websockets", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="ws://host:port; the charger's path is appended"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=0, help="stop after this long (0: never)"
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.host, args.port, args.upstream.rstrip("/"), args.max_seconds))


if __name__ == "__main__":
    main()
