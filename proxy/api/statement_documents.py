"""Statement PDFs as the API serves them: rendered a few at a time, and once while unchanged.

Rendering costs about half a millisecond of CPU per session on the statement, in a worker
thread that holds the interpreter's lock: a customer with tens of thousands of sessions takes
seconds, so a partner asking for one large statement again and again, or for many at once,
could keep the API's CPU busy for everyone. Each process therefore renders at most `RENDERS`
PDFs at once (further requests wait their turn, cancellably), and keeps the PDFs it rendered,
least recently used dropped first, up to `KEEP_BYTES`. A PDF's bytes depend only on what it
is rendered from (`render_pdf` is deterministic: dated by its payout run), so one is kept by
its partner, its statement id and a SHA-256 of everything it is rendered from (the statement,
the branding, the language, the date, serialised whole): any change, a customer's new name or
new branding, renders it anew, and one partner's document is never another's.

A request cancelled while its PDF renders lets the rendering finish (the thread cannot be
stopped) and drops it.
"""

from __future__ import annotations

import hashlib
import pickle
from collections import OrderedDict
from datetime import datetime
from functools import partial

import trio

from proxy.ere.core.statement_pdf import render_pdf
from proxy.ere.jobs.payout_statements import CustomerStatement

__all__ = ["KEEP_BYTES", "RENDERS", "StatementPdfs"]

RENDERS = 2
KEEP_BYTES = 64 << 20


def _digest(made: CustomerStatement, dated: datetime) -> str:
    inputs = (made.statement, made.branding, made.language, dated.isoformat())
    return hashlib.sha256(pickle.dumps(inputs, protocol=5)).hexdigest()


class StatementPdfs:
    """One process's statement PDFs (see the module docstring)."""

    def __init__(self, *, renders: int = RENDERS, keep_bytes: int = KEEP_BYTES) -> None:
        self._renders = trio.CapacityLimiter(renders)
        self._keep_bytes = keep_bytes
        self._kept: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._size = 0

    async def pdf(self, made: CustomerStatement, dated: datetime) -> bytes:
        """The statement `made` as a PDF dated `dated`."""
        key = (made.partner_id, made.statement.statement_id, _digest(made, dated))
        async with self._renders:
            kept = self._kept.get(key)  # looked up in turn: a request queued behind its twin
            if kept is not None:  # gets what the twin rendered
                self._kept.move_to_end(key)
                return kept
            render = partial(
                render_pdf, made.statement, made.branding, dated=dated, language=made.language
            )
            pdf = await trio.to_thread.run_sync(render)
        self._keep(key, pdf)
        return pdf

    def _keep(self, key: tuple[str, str, str], pdf: bytes) -> None:
        if len(pdf) > self._keep_bytes:
            return
        if key in self._kept:
            self._size -= len(self._kept.pop(key))
        self._kept[key] = pdf
        self._size += len(pdf)
        while self._size > self._keep_bytes:
            _, dropped = self._kept.popitem(last=False)
            self._size -= len(dropped)
