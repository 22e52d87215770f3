"""Waiting, bounded, for what another task, thread or process brings about.

`wait_until` blocks (a test or scenario outside Trio); `until` polls a blocking check in a thread
so the Trio loop keeps serving meanwhile; `eventually` polls state inside this process on the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio


def wait_until(check: Callable[[], object], what: str, limit: float, every: float = 0.1) -> float:
    """Poll `check()` until it holds; the seconds it took (TimeoutError after `limit`)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise TimeoutError(f"{what}: not within {limit:g} s")
        time.sleep(every)
    return time.monotonic() - started


async def until(check: Callable[[], object], what: str, limit: float, every: float = 0.5) -> float:
    """`wait_until` from Trio: `check()` (it may block) runs in a thread; the seconds it took."""
    started = time.monotonic()
    while not await trio.to_thread.run_sync(check):
        if time.monotonic() - started > limit:
            raise TimeoutError(f"{what}: not within {limit:g} s")
        await trio.sleep(every)
    return time.monotonic() - started


async def eventually(condition: Callable[[], Any], limit: float = 10.0) -> None:
    """Poll `condition()` (sync, or returning an awaitable) on the loop until it is true."""
    with trio.fail_after(limit):
        while True:
            value = condition()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await trio.sleep(0.01)
