"""A 2.x station rides out its back-office's outage through the proxy process's outbox.

The station and the back-office are mobilityhouse `ocpp` peers of the same version. The
back-office goes away in the middle of a transaction: the proxy answers the station's CALLs
itself, and the station's library must accept those answers (it checks every answer against its
version's schema, so an answer 2.1 does not allow fails the CALL). When the back-office is back,
it receives what the station sent meanwhile, in order, each payload byte for byte as sent.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ocpp.charge_point import ChargePoint
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from testkit.ocpp_peers import (
    TIMEOUT,
    Charger21,
    Charger201,
    CsmsServer,
    Peer,
    open_charger,
    timestamp,
)
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, ProxyProcess, metric, running_proxy
from testkit.waiting import wait_until

# Capture and the outbox on (both keep their data in the embedded PostgreSQL), quick redials.
OUTBOX_CONFIG = CONFIG.replace(
    "[capture]\nenabled = false\n", "[capture]\nenabled = true\n"
).replace(
    "[outbox]\nenabled = false\n", "[outbox]\nenabled = true\nredial_min = 0.2\nredial_max = 0.5\n"
)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-outage-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def offline_calls(call: ModuleType, transaction: dict[str, str]) -> list[Any]:
    """What a station sends while its back-office is away: status, an update, the end."""
    meter = [{"timestamp": timestamp(), "sampled_value": [{"value": 1500.0}]}]
    return [
        call.StatusNotification(
            timestamp=timestamp(), connector_status="Occupied", evse_id=1, connector_id=1
        ),
        call.TransactionEvent(
            event_type="Updated",
            timestamp=timestamp(),
            trigger_reason="MeterValuePeriodic",
            seq_no=1,
            transaction_info=transaction,
            meter_value=meter,
        ),
        call.TransactionEvent(
            event_type="Ended",
            timestamp=timestamp(),
            trigger_reason="StopAuthorized",
            seq_no=2,
            transaction_info={**transaction, "stopped_reason": "Local"},
            meter_value=meter,
        ),
    ]


def settlement() -> Any:
    """A NotifySettlement (new in OCPP 2.1): a payment terminal settled the session."""
    return call21.NotifySettlement(
        psp_ref="PSP-0001", status="Settled", settlement_amount=4.2, settlement_time=timestamp()
    )


# Per version: the station class, its CALL and CALLRESULT classes, and what it sends offline
# besides `offline_calls` (2.1 added notifications that the outbox must answer and queue too).
VERSIONS = [
    pytest.param("ocpp2.0.1", Charger201, call201, result201, [], id="ocpp201"),
    pytest.param("ocpp2.1", Charger21, call21, result21, [settlement], id="ocpp21"),
]


def calls_in(texts: list[str]) -> list[tuple[str, str]]:
    """The CALLs among OCPP-J `texts`, as (action, payload text exactly as it travelled)."""
    calls = []
    for text in texts:
        frame = json.loads(text)
        if frame[0] == 2:  # [2,"id","Action",{...}]: the payload is what follows the action
            calls.append((frame[2], text.split(f'"{frame[2]}",', 1)[1][:-1]))
    return calls


async def ride_out_an_outage(
    proxy: ProxyProcess,
    version: str,
    charger_class: type[ChargePoint],
    call: ModuleType,
    extra: list[Any],
) -> tuple[list[Any], list[tuple[str, str]], Peer, Peer]:
    """Start a transaction online, go on through an outage, and reconnect the back-office.

    Returns the answers the station got offline, the CALLs it sent offline (as the back-office
    should receive them), and the back-office before and after the outage.
    """
    identity = f"CP-OUT-{version}"
    transaction = {"transaction_id": f"tx-out-{version}"}
    async with asyncio.timeout(TIMEOUT):
        async with (
            CsmsServer(proxy.upstream_port) as server,
            open_charger(proxy.url(identity), [version], charger_class, identity) as charger,
        ):
            cp = charger.cp
            before = await server.next_peer()
            await cp.call(
                call.BootNotification(
                    charging_station={"model": "E2E-2", "vendor_name": "ERE"}, reason="PowerUp"
                )
            )
            await cp.call(
                call.TransactionEvent(
                    event_type="Started",
                    timestamp=timestamp(),
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info=transaction,
                )
            )
            await server.stop()
            # The back-office went away (1001): the proxy keeps the station and serves it.
            await asyncio.to_thread(
                wait_until,
                lambda: metric(proxy, "ere_proxy_links_offline") == 1,
                "the link offline",
                TIMEOUT,
            )
            online = len(charger.log.sent)
            answers = [
                await cp.call(payload)
                for payload in [*offline_calls(call, transaction), *(make() for make in extra)]
            ]
            queued = calls_in(charger.log.sent[online:])
            async with CsmsServer(proxy.upstream_port) as back:
                after = await back.next_peer()
                # The proxy has its upstream once the link is no longer offline (the back-office
                # accepting the connection comes before that: a station leaving in between
                # leaves its outbox for its next connection).
                await asyncio.to_thread(
                    wait_until,
                    lambda: metric(proxy, "ere_proxy_links_offline") == 0,
                    "the link online",
                    TIMEOUT,
                )
                # The station leaves; the proxy sends the rest of its outbox first, then closes.
                await charger.ws.close()
                await after.closed
    return answers, queued, before, after


@pytest.mark.usefixtures("each_engine")  # the engine hands the link to the outbox's relay
@pytest.mark.parametrize(("version", "charger_class", "call", "result", "extra"), VERSIONS)
def test_a_station_rides_out_an_outage_and_the_back_office_gets_everything_once(
    tmp_path: Path,
    data_dir: Path,
    version: str,
    charger_class: type[ChargePoint],
    call: ModuleType,
    result: ModuleType,
    extra: list[Any],
) -> None:
    config = OUTBOX_CONFIG + f'\n[database]\ndata_dir = "{data_dir}"\n'
    with running_proxy(tmp_path, config) as proxy:
        answers, queued, before, after = asyncio.run(
            ride_out_an_outage(proxy, version, charger_class, call, extra)
        )
    # The station sent its CALLs offline and got the proxy's answers, which its library accepted
    # (it raises for an answer its version's schema refuses) as its version's CALLRESULTs.
    assert [action for action, _ in queued] == [
        "StatusNotification",
        "TransactionEvent",
        "TransactionEvent",
        *(["NotifySettlement"] if extra else []),
    ]
    assert [type(a) for a in answers] == [getattr(result, action) for action, _ in queued]
    assert answers[1:3] == [result.TransactionEvent(), result.TransactionEvent()]
    # The back-office got the online part live and the offline part replayed, once and in order.
    assert [action for action, _ in calls_in(before.log.received)] == [
        "BootNotification",
        "TransactionEvent",
    ]
    assert calls_in(after.log.received) == queued
    assert [e[:2] for e in after.cp.transaction_events] == [("Updated", 1), ("Ended", 2)]
    if version == "ocpp2.1":
        assert after.cp.settlements == ["PSP-0001"]
