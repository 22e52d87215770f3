"""Close codes pass end to end: the CSMS's own code reaches the charger, and a stopping proxy says 1001."""

from __future__ import annotations

import asyncio
import signal

from ocpp.v16 import call as call16

from testkit.ocpp_peers import (
    TIMEOUT,
    Charger16,
    CsmsServer,
    Peer,
    assert_transparent,
    open_charger,
)
from testkit.proxy_process import ProxyProcess


async def _csms_after_boot(server: CsmsServer, charger: Peer) -> Peer:
    """The CSMS end of `charger`'s link, after one BootNotification went through."""
    csms = await server.next_peer()
    boot = await charger.cp.call(
        call16.BootNotification(charge_point_model="E2E-16", charge_point_vendor="ERE")
    )
    assert [boot] == csms.cp.answers
    return csms


def test_csms_close_code_and_reason_reach_the_charger(proxy: ProxyProcess) -> None:
    asyncio.run(_csms_closes(proxy))


async def _csms_closes(proxy: ProxyProcess) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port) as server:
            async with open_charger(
                proxy.url("CP-CLOSE"), ["ocpp1.6"], Charger16, "CP-CLOSE"
            ) as charger:
                csms = await _csms_after_boot(server, charger)
                await csms.ws.close(4000, "bye")
                charger_closed = await charger.closed
                await csms.closed

    assert charger_closed.rcvd is not None
    assert (charger_closed.rcvd.code, charger_closed.rcvd.reason) == (4000, "bye")
    assert (charger.ws.close_code, charger.ws.close_reason) == (4000, "bye")
    # The charger echoed the code, and the echo came back through the proxy too.
    assert (csms.ws.close_code, csms.ws.close_reason) == (4000, "bye")
    assert_transparent(charger, csms)


def test_sigterm_closes_both_legs_with_1001(own_proxy: ProxyProcess) -> None:
    asyncio.run(_proxy_stops(own_proxy))


async def _proxy_stops(proxy: ProxyProcess) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port) as server:
            async with open_charger(
                proxy.url("CP-TERM"), ["ocpp1.6"], Charger16, "CP-TERM"
            ) as charger:
                csms = await _csms_after_boot(server, charger)
                proxy.process.send_signal(signal.SIGTERM)
                charger_closed = await charger.closed
                csms_closed = await csms.closed
        exit_status = await asyncio.to_thread(proxy.process.wait, TIMEOUT)

    assert charger_closed.rcvd is not None and charger_closed.rcvd.code == 1001
    assert csms_closed.rcvd is not None and csms_closed.rcvd.code == 1001
    # Everything before the proxy's own close frames went through unchanged.
    assert charger.log.sent == csms.log.received
    assert csms.log.sent == charger.log.received
    assert exit_status == 0
