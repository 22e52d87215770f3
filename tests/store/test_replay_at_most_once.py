"""A replayed OCPP 1.6 StartTransaction reaches the back-office at most once, whatever stops the
proxy between sending it and storing the answer (the back-office cannot tell two copies apart).

Real sockets, a real PostgreSQL, an in-process proxy stopped and started again on the same
database, a back-office that takes the StartTransaction and never answers it.
"""

from __future__ import annotations

import argparse
import io

import pytest

from proxy.cli.outbox import outbox_command
from proxy.outbox.policy import IN_DOUBT, WAITS_FOR_START
from proxy.runtime.config import Config
from testkit.outbox_proxy import START, call, connect, running_proxy
from testkit.upstream import Csms
from testkit.waiting import eventually

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")


async def test_a_start_whose_answer_was_never_stored_is_parked_in_doubt_with_its_transaction_never_resent(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    proxy = running_proxy(settings, csms, tmp_path, unknown_id_tag="Accepted")
    async with proxy as (port, _server, db):
        async with connect(port, "CP-1") as ws:  # offline: a whole session goes into the outbox
            provisional = (await call(ws, "s", "StartTransaction", START))[2]["transactionId"]
            meter = {
                "connectorId": 1,
                "transactionId": provisional,
                "meterValue": [
                    {"timestamp": "2026-11-21T10:30:00Z", "sampledValue": [{"value": "1500"}]}
                ],
            }
            await call(ws, "m", "MeterValues", meter)
            stop = {
                "transactionId": provisional,
                "meterStop": 2000,
                "timestamp": "2026-11-21T11:00:00Z",
            }
            await call(ws, "e", "StopTransaction", stop)
            await call(
                ws,
                "h",
                "StatusNotification",
                {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
            )
            csms.unanswered.add("StartTransaction")  # it arrives; the answer never comes back
            await csms.start(nursery)
            await csms.wait_until(lambda: [c[1] for c in csms.calls] == ["StartTransaction"])
            await eventually(
                lambda: db.fetchval("SELECT sent_at IS NOT NULL FROM outbox_entries WHERE seq = 1")
            )
        # The proxy stops here, its start unanswered (a crash would leave the same).
    csms.unanswered.clear()
    async with running_proxy(settings, csms, tmp_path) as (port, _server, db):
        async with connect(port, "CP-1") as ws:
            await eventually(
                lambda: db.fetchval(
                    "SELECT count(*) = 0 FROM outbox_entries WHERE dead_reason IS NULL"
                )
            )
            await csms.wait_until(
                lambda: [c[1] for c in csms.calls] == ["StartTransaction", "StatusNotification"]
            )
        parked = {
            r["action"]: r["dead_reason"]
            for r in await db.fetch("SELECT action, dead_reason FROM outbox_entries")
        }
        assert parked == {
            "StartTransaction": IN_DOUBT,
            "MeterValues": WAITS_FOR_START,
            "StopTransaction": WAITS_FOR_START,
        }
        # The operator checked the back-office (it has no such transaction) and sends it again,
        # with its transaction's later messages.
        out = io.StringIO()
        requeue = argparse.Namespace(action="requeue", identity="CP-1", seq=1)
        assert await outbox_command(Config(database=settings), requeue, stdout=out) == 0
        assert out.getvalue().strip() == "requeued CP-1 #1, #2, #3"
        async with connect(port, "CP-1") as ws:
            await csms.wait_until(
                lambda: (
                    [c[1] for c in csms.calls]
                    == [
                        "StartTransaction",
                        "StatusNotification",
                        "StartTransaction",
                        "MeterValues",
                        "StopTransaction",
                    ]
                )
            )
        real = csms.calls[2]  # the second copy, now answered: the later messages carry its real id
        assert csms.calls[3][2]["transactionId"] == csms.calls[4][2]["transactionId"] == 7001
        assert real[2] == START
