"""Which forwarding engine the proxy under test uses (`[proxy] engine`), so one suite runs on both.

`ENGINE_VARIABLE` names the engine for proxies the test kit configures (in process and as
processes); the `each_engine` fixtures set it per test or per module.
"""

from __future__ import annotations

import os

ENGINES = ("native", "python")
ENGINE_VARIABLE = "ERE_PROXY_TEST_ENGINE"


def engine_under_test() -> str:
    """The engine of proxies configured now (the product's default, "native", unless set)."""
    return os.environ.get(ENGINE_VARIABLE, "native")


def with_engine(config: str) -> str:
    """A proxy configuration text with `[proxy] engine` set to the engine under test."""
    return config.replace("[proxy]\n", f'[proxy]\nengine = "{engine_under_test()}"\n', 1)
