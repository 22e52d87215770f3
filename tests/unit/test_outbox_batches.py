"""Claims and lookups answered in batches: one statement for many chargers, in request order."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from proxy.outbox.store import StoreUnavailable, _Batches


async def test_waiting_requests_share_a_batch_and_a_second_request_of_a_charger_waits_for_the_next():
    batches: list[list[str]] = []
    release = trio.Event()

    async def run_batch(identities: list[str]) -> dict[str, int]:
        batches.append(identities)
        await release.wait()
        return {identity: len(batches) for identity in identities}

    answers: dict[tuple[str, int], int] = {}
    lookups = _Batches(run_batch, deadline=30.0)

    async def get(identity: str, n: int) -> None:
        answers[identity, n] = await lookups.get(identity)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookups.run)
        nursery.start_soon(get, "A", 1)
        await trio.testing.wait_all_tasks_blocked()  # batch 1: A alone, held open
        for identity, n in (("B", 1), ("A", 2), ("C", 1), ("B", 2)):
            nursery.start_soon(get, identity, n)
            await trio.testing.wait_all_tasks_blocked()
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    assert batches == [["A"], ["A", "B", "C"], ["B"]]
    assert answers == {("A", 1): 1, ("A", 2): 2, ("B", 1): 2, ("C", 1): 2, ("B", 2): 3}


async def test_a_failed_batch_fails_each_of_its_requests_and_the_next_batch_runs():
    calls = 0

    async def run_batch(identities: list[str]) -> dict[str, bool]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("connection lost")
        return dict.fromkeys(identities, True)

    lookups = _Batches(run_batch, deadline=30.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lookups.run)
        with pytest.raises(StoreUnavailable, match="connection lost") as failed:
            await lookups.get("A")
        assert isinstance(failed.value.__cause__, OSError)
        assert await lookups.get("A") is True
        nursery.cancel_scope.cancel()
