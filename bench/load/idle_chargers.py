"""Idle chargers for `bench idle-memory`: N connections that boot once, then only stay open.

`python -m bench.load.idle_chargers PORT N [PREFIX]` connects N chargers to ws://127.0.0.1:PORT/ocpp/,
each sends one BootNotification and reads its answer, prints "connected N" once all have, and
holds the connections until it is killed. A refused or failed charger ends it with an error.
"""

from __future__ import annotations

import json
import sys

import trio

from testkit.raw_charger import RawCharger, frame

BOOT = json.dumps(
    [2, "boot", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
).encode()


async def _charger(port: int, identity: str, limit: trio.CapacityLimiter, done: list[str]) -> None:
    async with limit:  # connecting, not holding
        charger = await RawCharger.connect(port)
        status = (await charger.upgrade(identity)).split(b"\r\n", 1)[0]
        if b" 101 " not in status:
            raise RuntimeError(f"{identity} refused: {status!r}")
        await charger.send(frame(1, BOOT))
        await charger.stream.receive_some(4096)
    done.append(identity)
    await trio.sleep_forever()


async def main(port: int, chargers: int, prefix: str) -> None:
    done: list[str] = []
    limit = trio.CapacityLimiter(64)
    async with trio.open_nursery() as nursery:
        for i in range(chargers):
            nursery.start_soon(_charger, port, f"{prefix}{i:05d}", limit, done)
        while len(done) < chargers:
            await trio.sleep(0.2)
        print(f"connected {chargers}", flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "IDLE")
