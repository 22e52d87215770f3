"""What the project accepts as an e-mail address: a plain `local@domain.tld`.

A dot-atom local part (no quoting, no comments), a domain of at least two DNS labels whose last
is not all digits, within the lengths of RFC 5321: nothing a header could be injected through,
no address a mail server would read differently. Pure.
"""

from __future__ import annotations

import re

__all__ = ["is_plain_address"]

_LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def is_plain_address(text: str) -> bool:
    local, at, domain = text.rpartition("@")
    labels = domain.split(".")
    return bool(
        at
        and len(text) <= 254
        and len(local) <= 64
        and _LOCAL_PART.fullmatch(local)
        and len(labels) >= 2
        and all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )
