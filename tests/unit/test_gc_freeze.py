"""The proxy worker freezes what survives the young collections, so full passes skip long-lived links."""

from __future__ import annotations

import gc
import weakref

import trio

from proxy.runtime.role import freeze_long_lived


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


async def test_survivors_are_frozen_and_young_cyclic_garbage_is_collected_first(autojump_clock):
    try:
        garbage = Node()
        gone = weakref.ref(garbage)
        del garbage
        kept = Node()
        frozen_before = gc.get_freeze_count()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(freeze_long_lived, 60.0)
            await trio.sleep(61)
            nursery.cancel_scope.cancel()
        assert gone() is None  # collected, not frozen
        assert gc.get_freeze_count() > frozen_before
        # `kept` survived and is frozen: the collector's passes no longer see it.
        assert gc.is_tracked(kept) and not any(obj is kept for obj in gc.get_objects())
    finally:
        gc.unfreeze()
