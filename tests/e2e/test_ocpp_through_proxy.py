"""A real charger and a real CSMS (mobilityhouse `ocpp` over `websockets`) talk through the proxy.

Each test runs one charging session end to end and then checks the proxy's core promise: every
message, and every frame byte after the opening handshakes, arrives at the other end exactly as
sent, in both directions, with the same subprotocol on both legs. The peers run on asyncio, so the
tests are plain functions around `asyncio.run`.
"""

from __future__ import annotations

import asyncio
from types import ModuleType

import pytest
from ocpp.charge_point import ChargePoint
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as result21
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from testkit.ocpp_peers import (
    TIMEOUT,
    Charger16,
    Charger21,
    Charger201,
    CsmsServer,
    assert_transparent,
    open_charger,
    timestamp,
)
from testkit.proxy_process import ProxyProcess


def test_ocpp16_charging_session_passes_byte_identical(proxy: ProxyProcess) -> None:
    asyncio.run(_ocpp16_session(proxy))


async def _ocpp16_session(proxy: ProxyProcess) -> None:
    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port) as server:
            async with open_charger(proxy.url("CP-16"), ["ocpp1.6"], Charger16, "CP-16") as charger:
                csms = await server.next_peer()
                cp = charger.cp
                got = [
                    await cp.call(
                        call16.BootNotification(
                            charge_point_model="E2E-16", charge_point_vendor="ERE"
                        )
                    ),
                    await cp.call(call16.Heartbeat()),
                    await cp.call(call16.Authorize(id_tag="RFID-0001")),
                    await cp.call(
                        call16.StatusNotification(
                            connector_id=1, error_code="NoError", status="Preparing"
                        )
                    ),
                ]
                start = await cp.call(
                    call16.StartTransaction(
                        connector_id=1, id_tag="RFID-0001", meter_start=1000, timestamp=timestamp()
                    )
                )
                got.append(start)
                transaction_id = start.transaction_id
                for energy in (1250, 1500, 1750):
                    sample = {
                        "value": str(energy),
                        "measurand": "Energy.Active.Import.Register",
                        "unit": "Wh",
                    }
                    meter_value = [{"timestamp": timestamp(), "sampled_value": [sample]}]
                    got.append(
                        await cp.call(
                            call16.MeterValues(
                                connector_id=1,
                                meter_value=meter_value,
                                transaction_id=transaction_id,
                            )
                        )
                    )
                # A message far larger than one read of the proxy, with non-ASCII text in it.
                blob = "Zählerstand ⚡ 😀 " * 12_000
                got.append(
                    await cp.call(
                        call16.DataTransfer(vendor_id="ERE", message_id="blob", data=blob)
                    )
                )
                got.append(
                    await cp.call(
                        call16.StopTransaction(
                            meter_stop=2000, timestamp=timestamp(), transaction_id=transaction_id
                        )
                    )
                )

                # CALLs initiated by the CSMS; the Heartbeat crosses the ChangeConfiguration.
                sent_back = [
                    await csms.cp.call(
                        call16.RemoteStartTransaction(id_tag="RFID-0002", connector_id=1)
                    ),
                ]
                heartbeat, change = await asyncio.gather(
                    cp.call(call16.Heartbeat()),
                    csms.cp.call(call16.ChangeConfiguration(key="HeartbeatInterval", value="120")),
                )
                got.append(heartbeat)
                sent_back += [change, await csms.cp.call(call16.Reset(type="Soft"))]

                await charger.ws.close()
                charger_closed = await charger.closed
                csms_closed = await csms.closed

    # The charger got exactly what the CSMS produced, and vice versa.
    assert got == csms.cp.answers
    assert sent_back == charger.cp.answers
    assert transaction_id == csms.cp.transaction_id
    assert isinstance(start, result16.StartTransaction)
    assert csms.cp.metered_transactions == [transaction_id] * 3
    assert csms.cp.stopped_transactions == [transaction_id]
    assert charger.cp.configuration == {"HeartbeatInterval": "120"}
    assert [type(r) for r in sent_back] == [
        result16.RemoteStartTransaction,
        result16.ChangeConfiguration,
        result16.Reset,
    ]

    assert charger.ws.subprotocol == "ocpp1.6"
    assert csms.ws.request is not None and csms.ws.request.path == "/ocpp/CP-16"
    # The charger offered compression; the proxy never negotiates it, so frames pass as they are.
    assert charger.ws.request is not None
    assert "permessage-deflate" in charger.ws.request.headers["Sec-WebSocket-Extensions"]
    assert "Sec-WebSocket-Extensions" not in csms.ws.request.headers
    assert_transparent(charger, csms)
    # The charger sent 11 CALLs and 3 CALLRESULTs, and received as many.
    assert len(charger.log.sent) == len(charger.log.received) == 14
    assert got[8].data == str(len(blob))
    assert charger_closed.rcvd is not None and charger_closed.rcvd.code == 1000
    assert csms_closed.rcvd is not None and csms_closed.rcvd.code == 1000


# The 2.x versions run the same session: what differs is the version's message classes, the
# charger class, and the offer (each version's charger also offers the older ones, and the proxy
# must pass the whole offer on for the CSMS to choose).
VERSIONS_2 = [
    pytest.param(
        "ocpp2.0.1", call201, result201, Charger201, ["ocpp2.0.1", "ocpp1.6"], id="ocpp201"
    ),
    pytest.param(
        "ocpp2.1", call21, result21, Charger21, ["ocpp2.1", "ocpp2.0.1", "ocpp1.6"], id="ocpp21"
    ),
]


@pytest.mark.parametrize(("version", "call", "result", "charger_class", "offer"), VERSIONS_2)
def test_ocpp2_charging_session_passes_byte_identical(
    proxy: ProxyProcess,
    version: str,
    call: ModuleType,
    result: ModuleType,
    charger_class: type[ChargePoint],
    offer: list[str],
) -> None:
    asyncio.run(_ocpp2_session(proxy, version, call, result, charger_class, offer))


async def _ocpp2_session(
    proxy: ProxyProcess,
    version: str,
    call: ModuleType,
    result: ModuleType,
    charger_class: type[ChargePoint],
    offer: list[str],
) -> None:
    """One 2.x session: boot, authorize, a metered transaction, then CALLs from the CSMS."""
    identity = f"CP-{version}"
    transaction_id = f"tx-{version}-0001"
    id_token = {"id_token": "RFID-0201", "type": "ISO14443"}
    transaction = {"transaction_id": transaction_id}
    evse = {"id": 1, "connector_id": 1}
    heartbeat_interval = {
        "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "HeartbeatInterval"},
    }

    def meter(wh: int) -> list[dict[str, object]]:
        return [
            {
                "timestamp": timestamp(),
                "sampled_value": [{"value": wh, "measurand": "Energy.Active.Import.Register"}],
            }
        ]

    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port) as server:
            async with open_charger(proxy.url(identity), offer, charger_class, identity) as charger:
                csms = await server.next_peer()
                cp = charger.cp
                got = [
                    await cp.call(
                        call.BootNotification(
                            charging_station={"model": "E2E-2", "vendor_name": "ERE"},
                            reason="PowerUp",
                        )
                    ),
                    await cp.call(call.Heartbeat()),
                    await cp.call(call.Authorize(id_token=id_token)),
                    await cp.call(
                        call.StatusNotification(
                            timestamp=timestamp(),
                            connector_status="Occupied",
                            evse_id=1,
                            connector_id=1,
                        )
                    ),
                    await cp.call(
                        call.TransactionEvent(
                            event_type="Started",
                            timestamp=timestamp(),
                            trigger_reason="Authorized",
                            seq_no=0,
                            transaction_info=transaction,
                            id_token=id_token,
                            evse=evse,
                            meter_value=meter(0),
                        )
                    ),
                ]
                for seq_no in (1, 2, 3):
                    got.append(
                        await cp.call(
                            call.TransactionEvent(
                                event_type="Updated",
                                timestamp=timestamp(),
                                trigger_reason="MeterValuePeriodic",
                                seq_no=seq_no,
                                transaction_info=transaction,
                                meter_value=meter(seq_no * 500),
                            )
                        )
                    )
                got.append(
                    await cp.call(
                        call.TransactionEvent(
                            event_type="Ended",
                            timestamp=timestamp(),
                            trigger_reason="StopAuthorized",
                            seq_no=4,
                            transaction_info={**transaction, "stopped_reason": "Local"},
                            meter_value=meter(2000),
                        )
                    )
                )

                sent_back = [
                    await csms.cp.call(
                        call.RequestStartTransaction(
                            id_token=id_token, remote_start_id=7001, evse_id=1
                        )
                    ),
                    await csms.cp.call(
                        call.SetVariables(
                            set_variable_data=[{"attribute_value": "120", **heartbeat_interval}]
                        )
                    ),
                    await csms.cp.call(call.GetVariables(get_variable_data=[heartbeat_interval])),
                    await csms.cp.call(call.Reset(type="Immediate")),
                ]

                await charger.ws.close()
                charger_closed = await charger.closed
                csms_closed = await csms.closed

    assert got == csms.cp.answers
    assert sent_back == charger.cp.answers
    assert csms.cp.transaction_events == [
        ("Started", 0, transaction_id),
        ("Updated", 1, transaction_id),
        ("Updated", 2, transaction_id),
        ("Updated", 3, transaction_id),
        ("Ended", 4, transaction_id),
    ]
    assert got[-1].total_cost == csms.cp.answers[-1].total_cost == 1.4
    assert charger.cp.variables == {("OCPPCommCtrlr", "HeartbeatInterval"): "120"}
    assert sent_back[2].get_variable_result[0]["attribute_value"] == "120"
    assert [type(r) for r in sent_back] == [
        result.RequestStartTransaction,
        result.SetVariables,
        result.GetVariables,
        result.Reset,
    ]

    assert charger.ws.subprotocol == version
    assert csms.ws.request is not None and csms.ws.request.path == f"/ocpp/{identity}"
    assert csms.ws.request.headers["Sec-WebSocket-Protocol"] == ", ".join(offer)
    assert_transparent(charger, csms)
    assert charger_closed.rcvd is not None and charger_closed.rcvd.code == 1000
    assert csms_closed.rcvd is not None and csms_closed.rcvd.code == 1000
