"""Exit codes of the operator's record commands, one mapping for all of them.

`exit_code(action, stderr)` runs a command's action: 0 when it is done; 2 for bad input, an
unknown or duplicate record, or a constraint the database enforced (its message made
readable); 1 when the database could not be reached or failed otherwise. Each failure is one
line on `stderr`, prefixed `ere-proxy: `.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TextIO

from proxy.ere.admin.records import REFUSED_BY_DATABASE, violation_message
from proxy.ere.admin.validation import AdminInputError, one_line
from proxy.store.db import DATABASE_ERRORS

__all__ = ["EXIT_INPUT", "EXIT_OK", "EXIT_STORE", "exit_code"]

EXIT_OK, EXIT_STORE, EXIT_INPUT = 0, 1, 2


async def exit_code(action: Awaitable[None], stderr: TextIO) -> int:
    """Run `action` and map what it raises to an exit code (see the module docstring)."""
    try:
        await action
    except AdminInputError as error:
        return _fail(str(error), EXIT_INPUT, stderr)
    except REFUSED_BY_DATABASE as error:
        return _fail(violation_message(error), EXIT_INPUT, stderr)
    except DATABASE_ERRORS as error:  # includes StoreError (e.g. the database is unreachable)
        message = f"database error: {type(error).__name__}: {one_line(str(error))}"
        return _fail(message, EXIT_STORE, stderr)
    return EXIT_OK


def _fail(message: str, code: int, stderr: TextIO) -> int:
    print(f"ere-proxy: {one_line(message)}", file=stderr)
    return code
