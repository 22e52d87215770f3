"""JSON log lines carry the given fields and never a secret."""

from __future__ import annotations

import json
import logging

from proxy.runtime.logs import JsonFormatter


def test_log_record_becomes_one_json_object_without_secrets():
    record = logging.makeLogRecord(
        {
            "name": "proxy.server",
            "levelname": "INFO",
            "msg": "link up",
            "identity": "CP-1",
            "authorization": "Basic c2VjcmV0",
            "password": "pw",
        }
    )
    entry = json.loads(JsonFormatter(worker=3).format(record))
    assert entry["msg"] == "link up" and entry["identity"] == "CP-1" and entry["worker"] == 3
    assert entry["level"] == "info" and entry["logger"] == "proxy.server"
    assert "authorization" not in entry and "password" not in entry
