"""A naive OCPP proxy on trio-websocket, the baseline a Trio developer would write first.

For every charger connection (`serve_websocket`), open a second WebSocket to the upstream with
the same path and subprotocol offer (`open_websocket_url`), accept the charger with the upstream's
choice, then relay whole messages both ways (`get_message`/`send_message`) in two tasks until
either side closes. Every frame is parsed, unmasked, re-framed and re-masked by wsproto.

    python -m bench.harness.peers.naive_trio_ws --port 9002 --upstream ws://127.0.0.1:9001 [--max-seconds 600]
"""

from __future__ import annotations

import argparse

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)


async def relay(src: WebSocketConnection, dst: WebSocketConnection, done: trio.CancelScope) -> None:
    """Copy messages from `src` to `dst`; when either side closes, stop the pair."""
    try:
        while True:
            await dst.send_message(await src.get_message())
    except ConnectionClosed:
        pass
    finally:
        done.cancel()


def make_handler(upstream: str):
    """A connection handler that proxies `<path>` to `<upstream><path>`."""

    async def handler(request: WebSocketRequest) -> None:
        accepted = False
        try:
            async with open_websocket_url(
                upstream + request.path, subprotocols=request.proposed_subprotocols
            ) as up:
                down = await request.accept(subprotocol=up.subprotocol)
                accepted = True
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(relay, down, up, nursery.cancel_scope)
                    nursery.start_soon(relay, up, down, nursery.cancel_scope)
        except (OSError, HandshakeError):
            if not accepted:
                await request.reject(502)

    return handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.harness.peers.naive_trio_ws", description=__doc__.split("\n")[0]
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

    async def run() -> None:
        with trio.move_on_after(args.max_seconds or float("inf")):
            await serve_websocket(
                make_handler(args.upstream.rstrip("/")), args.host, args.port, None
            )

    trio.run(run)


if __name__ == "__main__":
    main()
