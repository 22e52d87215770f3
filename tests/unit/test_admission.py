"""Admission under attack without sockets: failure budgets, the hashing queue, verifiers, back-off."""

from __future__ import annotations

import os
import threading

import pytest
import trio
import trio.testing

from proxy.forward.backoff import DialPacer, RedialBackoff
from proxy.routing.auth import (
    CredentialVerifier,
    RecentSuccesses,
    TokenBuckets,
    basic_header,
    hash_generated_password,
    hash_password,
    verify_password,
)
from proxy.routing.password_gate import (
    AddressLines,
    Check,
    HashingQueue,
    HashingThreads,
    PasswordGate,
    QueueFull,
    Verdict,
)
from proxy.routing.registry.records import generate_password
from proxy.runtime.logs import LogBudget

HASH = hash_password("right")


# -- token buckets, recent successes, log budget ------------------------------------------------


def test_a_bucket_refuses_after_its_capacity_of_failures_and_refills_at_its_rate():
    buckets = TokenBuckets(capacity=3, refill_per_second=0.5)
    for _ in range(3):
        assert buckets.allows("a", 0.0)
        buckets.take("a", 0.0)
    assert not buckets.allows("a", 0.0) and buckets.retry_after("a", 0.0) == pytest.approx(2.0)
    assert buckets.allows("b", 0.0)  # other keys are not touched
    assert not buckets.allows("a", 1.9) and buckets.allows("a", 2.0)
    assert buckets.allows("a", 1000.0) and buckets.retry_after("a", 1000.0) == 0.0


def test_buckets_forget_the_least_recently_failed_key_beyond_their_bound():
    buckets = TokenBuckets(capacity=1, refill_per_second=0.001, max_keys=2)
    for key in ("a", "b", "c"):
        buckets.take(key, 0.0)
    assert len(buckets) == 2
    assert buckets.allows("a", 0.0)  # forgotten: it starts full again
    assert not buckets.allows("b", 0.0) and not buckets.allows("c", 0.0)


def test_recent_successes_expire_and_stay_bounded():
    recent = RecentSuccesses(window=10.0, max_entries=2)
    recent.add("a", 0.0)
    assert recent("a", 10.0) and not recent("a", 10.1) and not recent("b", 0.0)
    recent.add("b", 1.0)
    recent.add("c", 1.0)
    assert not recent("a", 1.0) and recent("b", 1.0) and recent("c", 1.0)


def test_a_log_budget_allows_its_burst_then_its_rate_and_counts_what_it_left_out():
    budget = LogBudget(per_second=2.0, burst=3.0)
    assert [budget.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.suppressed() == 2 and budget.suppressed() == 0
    assert budget.allow(0.5) and not budget.allow(0.5)  # one token refilled in half a second


# -- the hashing queue ---------------------------------------------------------------------------


async def test_the_hashing_queue_serves_the_priority_lane_first_and_refuses_beyond_its_bound():
    queue = HashingQueue(threads=1, max_waiting=2)
    await queue.acquire(priority=False)  # the one slot is taken
    order: list[str] = []

    async def wait(name: str, priority: bool) -> None:
        await queue.acquire(priority)
        order.append(name)

    async with trio.open_nursery() as nursery:
        for name, priority in (("n1", False), ("n2", False), ("p1", True)):
            nursery.start_soon(wait, name, priority)
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(QueueFull):
            await queue.acquire(priority=False)
        assert queue.waiting == 3
        for _ in range(3):
            queue.release()
            await trio.testing.wait_all_tasks_blocked()
    assert order == ["p1", "n1", "n2"]
    queue.release()
    await queue.acquire(priority=False)  # the slot is free again: no waiting


async def test_a_waiter_cancelled_after_it_was_handed_the_slot_passes_it_on():
    queue = HashingQueue(threads=1, max_waiting=5)
    await queue.acquire(priority=False)
    got: list[str] = []

    async def wait(name: str, scope: trio.CancelScope) -> None:
        with scope:
            await queue.acquire(priority=False)
            got.append(name)

    first, second = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "first", first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait, "second", second)
        await trio.testing.wait_all_tasks_blocked()
        first.cancel()  # "first" is cancelled but has not run yet...
        queue.release()  # ...when the slot is handed to it: it passes the slot on to "second"
    assert got == ["second"]


async def test_a_waiter_cancelled_while_queued_leaves_the_queue():
    queue = HashingQueue(threads=1, max_waiting=1)
    await queue.acquire(priority=False)
    with trio.move_on_after(1):
        await queue.acquire(priority=False)
    assert queue.waiting == 0
    queue.release()
    await queue.acquire(priority=False)


# -- the password gate ---------------------------------------------------------------------------


async def test_wrong_passwords_spend_the_address_budget_then_are_refused_without_hashing():
    gate = PasswordGate(
        address_failures=TokenBuckets(2, 0.01), identity_failures=TokenBuckets(100, 1)
    )
    checks = [await gate.check(f"CP-{i}", "guess", HASH, "10.0.0.9") for i in range(4)]
    assert [(c.verdict, c.hashed) for c in checks] == [
        (Verdict.WRONG, True),
        (Verdict.WRONG, True),
        (Verdict.RATE_LIMITED, False),
        (Verdict.RATE_LIMITED, False),
    ]
    assert checks[2].retry_after > 0
    assert (
        await gate.check("CP-0", "right", HASH, "10.0.0.10")
    ).verdict is Verdict.ADMITTED  # another address


async def test_an_identity_under_attack_is_limited_but_not_from_where_it_proved_its_password():
    gate = PasswordGate(
        address_failures=TokenBuckets(100, 1), identity_failures=TokenBuckets(2, 0.01)
    )
    assert (await gate.check("CP-1", "right", HASH, "10.0.0.1")).verdict is Verdict.ADMITTED
    for address in ("10.0.0.7", "10.0.0.8"):
        assert (await gate.check("CP-1", "guess", HASH, address)).verdict is Verdict.WRONG
    assert (await gate.check("CP-1", "guess", HASH, "10.0.0.9")).verdict is Verdict.RATE_LIMITED
    known = await gate.check(
        "CP-1", "right", HASH, "10.0.0.1"
    )  # from the cache of recent successes
    assert (known.verdict, known.hashed) == (Verdict.ADMITTED, False)
    gate.cache = type(gate.cache)()  # the cache forgot it: hashed again, from its usual address
    again = await gate.check("CP-1", "right", HASH, "10.0.0.1")
    assert (again.verdict, again.hashed) == (Verdict.ADMITTED, True)
    gate.cache = type(gate.cache)()
    assert (
        await gate.check("CP-1", "right", HASH, "10.0.0.2")
    ).verdict is Verdict.RATE_LIMITED  # elsewhere


async def test_concurrent_guesses_from_one_address_are_hashed_no_more_than_its_budget_allows():
    gate = PasswordGate(
        per_address=2,
        address_failures=TokenBuckets(3, 0.001),
        identity_failures=TokenBuckets(100, 1),
    )
    verdicts: list[Check] = []

    async def guess(index: int) -> None:
        verdicts.append(await gate.check(f"CP-{index}", "guess", HASH, "10.0.0.66"))

    async with trio.open_nursery() as nursery:
        for index in range(12):
            nursery.start_soon(guess, index)
    hashed = [c for c in verdicts if c.hashed]
    assert (
        len(verdicts) == 12 and 3 <= len(hashed) <= 3 + 1
    )  # the budget, and one in flight beyond it
    assert {c.verdict for c in verdicts if not c.hashed} == {Verdict.RATE_LIMITED}
    assert len(gate.lines) == 0  # nothing kept once the address is quiet


async def test_an_address_line_lets_a_few_through_and_refuses_beyond_its_bound():
    lines = AddressLines(per_address=1, max_waiting=1)
    await lines.acquire("a")
    await lines.acquire("b")  # another address: its own line
    order: list[str] = []

    async def wait(name: str) -> None:
        await lines.acquire("a")
        order.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait, "second")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(QueueFull):
            await lines.acquire("a")
        lines.release("a")
    assert order == ["second"]
    lines.release("a")
    lines.release("b")
    assert len(lines) == 0


async def test_hashes_run_in_threads_of_lower_priority_than_forwarding():
    threads = HashingThreads(count=1, niceness=7)
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert (
        await threads.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        == own + 7
    )
    with pytest.raises(ZeroDivisionError):  # an exception comes back to the caller
        await threads.run(lambda: 1 / 0)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the event loop's thread is untouched


async def test_a_full_hashing_queue_refuses_at_once_and_a_recent_success_goes_ahead():
    gate = PasswordGate(threads=1, max_waiting=1)
    gate.recent.add("CP-known", trio.current_time())
    await gate.queue.acquire(priority=False)  # a hash under way
    results: dict[str, Verdict] = {}

    async def attempt(identity: str, password: str) -> None:
        results[identity] = (await gate.check(identity, password, HASH, "10.0.0.1")).verdict

    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt, "CP-queued", "guess")
        await trio.testing.wait_all_tasks_blocked()
        busy = await gate.check("CP-late", "guess", HASH, "10.0.0.2")
        assert busy.verdict is Verdict.BUSY and busy.retry_after >= 1
        nursery.start_soon(attempt, "CP-known", "right")  # rotated its cache entry out, say
        await trio.testing.wait_all_tasks_blocked()
        gate.queue.release()
    assert results == {"CP-queued": Verdict.WRONG, "CP-known": Verdict.ADMITTED}


# -- generated passwords: a fast hash, checked at once --------------------------------------------


def test_a_generated_password_hash_matches_only_its_password():
    password = generate_password()
    encoded = hash_generated_password(password)
    assert encoded.startswith("sha256$") and password not in encoded
    assert verify_password(password, encoded)
    assert hash_generated_password(password) != encoded  # salted
    assert not verify_password(password[:-1], encoded)
    assert not verify_password(password, encoded.replace("sha256$", "sha256$$"))
    assert not verify_password(password, encoded[:-8])  # a digest cut short
    assert not verify_password(password, "sha256$!!$??")
    for hostile in ("", "\x00", password + "\x00", "é" * 16_000, password * 500):
        assert not verify_password(hostile, encoded)
    with pytest.raises(ValueError):
        hash_generated_password("short-and-chosen")


async def test_a_generated_password_gets_in_at_once_whatever_the_flood_and_budgets(autojump_clock):
    password = generate_password()
    encoded = hash_generated_password(password)
    gate = PasswordGate(
        threads=1,
        max_waiting=1,
        address_failures=TokenBuckets(1, 0.001),
        identity_failures=TokenBuckets(1, 0.001),
    )
    await gate.queue.acquire(priority=False)  # the hashing thread is taken by the flood, for good
    with trio.fail_after(60):  # a check that waited for it would never end
        wrong = [await gate.check("CP-1", "guess", encoded, "10.0.0.9") for _ in range(3)]
        admitted = await gate.check("CP-1", password, encoded, "10.0.0.9")
    assert [(c.verdict, c.hashed) for c in wrong] == [
        (Verdict.WRONG, False),
        (Verdict.RATE_LIMITED, False),
        (Verdict.RATE_LIMITED, False),
    ]
    # Both the identity's and the address's budgets are spent: the right password still got in.
    assert (admitted.verdict, admitted.hashed) == (Verdict.ADMITTED, False)
    assert gate.recent("CP-1", trio.current_time())


# -- credential verifiers --------------------------------------------------------------------------


def test_a_verifier_matches_only_the_header_and_identity_it_was_made_for():
    verifier = CredentialVerifier({"k1": b"1" * 32})
    header = basic_header("CP-1", "pw")
    stored = verifier.digest("CP-1", header)
    assert stored[1] == "k1" and header not in stored[0]
    assert verifier.matches("CP-1", header, stored) and verifier.current("CP-1", header, stored)
    for identity, other in (
        ("CP-1", basic_header("CP-1", "pW")),
        ("CP-2", header),
        ("CP-1", None),
        ("CP-1", b""),
    ):
        assert not verifier.matches(identity, other, stored)
    assert not verifier.matches("CP-1", header, None)
    assert not CredentialVerifier({"k1": b"2" * 32}).matches("CP-1", header, stored)  # another key


def test_a_rotated_key_still_verifies_old_digests_but_makes_new_ones():
    old = CredentialVerifier({"k1": b"1" * 32})
    rotated = CredentialVerifier({"k2": b"2" * 32, "k1": b"1" * 32})
    header = basic_header("CP-1", "pw")
    stored = old.digest("CP-1", header)
    assert rotated.matches("CP-1", header, stored)
    assert not rotated.current("CP-1", header, stored)  # to be stored again under the new key
    assert rotated.digest("CP-1", header)[1] == "k2"


# -- redial pacing -------------------------------------------------------------------------------


def test_back_off_grows_after_every_loss_and_resets_only_after_a_stable_connection(monkeypatch):
    monkeypatch.setattr("random.uniform", lambda low, high: 1.0)
    backoff = RedialBackoff(minimum=1.0, maximum=8.0)
    waits = []
    now = 0.0
    for _ in range(5):  # accepted and dropped at once, again and again
        backoff.connection_lost(now, connected_for=0.0)
        waits.append(backoff.next_dial_at - now)
        now = backoff.next_dial_at
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    backoff.dial_failed(now)
    assert backoff.next_dial_at - now == 8.0
    backoff.connection_lost(100.0, connected_for=8.0)  # stayed up long enough: start again
    assert backoff.next_dial_at == 101.0


def test_dials_to_one_host_are_paced_after_a_burst():
    pacer = DialPacer(rate=2.0, burst=3.0)
    assert [pacer.reserve("a", 0.0) for _ in range(6)] == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]
    assert pacer.reserve("b", 0.0) == 0.0  # another host
    assert pacer.reserve("a", 100.0) == 0.0  # long after: a full burst again


async def test_a_hash_whose_caller_has_gone_is_never_computed():
    threads = HashingThreads(count=1, niceness=0)
    release = threading.Event()
    waiting = trio.CancelScope()
    settled = trio.Event()

    async def gone_caller() -> None:
        with waiting:
            await threads.run(lambda: 1)
        settled.set()  # only once its call was skipped

    async with trio.open_nursery() as nursery:
        nursery.start_soon(threads.run, release.wait)  # the one thread is busy
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(gone_caller)
        await trio.testing.wait_all_tasks_blocked()
        waiting.cancel()  # gone (a handshake timeout, say) before a thread took its call
        await trio.testing.wait_all_tasks_blocked()
        assert not settled.is_set()  # it waits for its call to be settled
        release.set()
    assert settled.is_set() and waiting.cancelled_caught and threads.computed == 1
