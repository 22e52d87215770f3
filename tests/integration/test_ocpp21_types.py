"""OCPP 2.1's message types 5 (CALLRESULTERROR) and 6 (SEND) pass as they are, counted by type,
on both engines; neither is taken for a CALL waiting for an answer."""

from __future__ import annotations

import json

import trio

from testkit.in_process_proxy import metric
from testkit.raw_charger import frame

SEND = b'[6,"s1","NotifyPeriodicEventStream",{"id":1,"pending":0,"basetime":"2026-12-07T00:00:00Z","data":[{"t":0,"v":"230.1"}]}]'
RESULT_ERROR = b'[5,"r1","FormatViolation","the answer did not parse",{}]'


async def test_send_and_callresulterror_pass_unchanged_and_are_counted(proxy, upstream, raw):
    charger = await raw()
    head = await charger.upgrade("CP-21", protocols="ocpp2.1")
    assert head.startswith(b"HTTP/1.1 101")
    await charger.send(frame(1, SEND) + frame(1, RESULT_ERROR))
    await upstream.wait_until(
        lambda: any(p.path == "/ocpp/CP-21" and len(p.received) >= 2 for p in upstream.peers)
    )
    peer = next(p for p in upstream.peers if p.path == "/ocpp/CP-21")
    assert peer.received == [SEND.decode(), RESULT_ERROR.decode()]
    with trio.fail_after(10):
        while (
            metric(proxy, "ere_proxy_frames_total", direction="charger_to_upstream", type="send")
            < 1
        ):
            await trio.sleep(0.05)
    assert (
        metric(
            proxy, "ere_proxy_frames_total", direction="charger_to_upstream", type="callresulterror"
        )
        == 1
    )
    # Nothing was taken for a CALL: the upstream has no answer to give, the charger none to await.
    assert (
        metric(
            proxy,
            "ere_proxy_calls_total",
            direction="charger_to_upstream",
            action="NotifyPeriodicEventStream",
        )
        == 0
    )
    # The link still forwards CALLs and their answers.
    await charger.send(frame(1, json.dumps([2, "h1", "Heartbeat", {}]).encode()))
    with trio.fail_after(10):
        while b'"h1"' not in charger.buffer:
            charger.buffer += await charger.stream.receive_some(65536)
